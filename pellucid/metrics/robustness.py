"""Robustness metrics: does the explanation stay put when the input barely moves? They
re-explain perturbed copies of the inputs with the method under test, so they take it:

- an explainer instance (anything with ``explain(inputs, targets, forward_kwargs=...)``, e.g.
  ``Saliency(model)``), used as it is;
- an explainer class, built as ``explainer(model, **explainer_kwargs)`` once per call;
- or a callable ``explainer(model, inputs, targets) -> heatmaps`` (any library's method).

``heatmaps`` passed to the call are the explanations of the unperturbed inputs (by the same
method). Each input gets ``nb_samples`` neighbours ``x + delta``, ``delta`` uniform in the
``L_inf`` ball of radius ``radius`` (captum's ``sensitivity_max`` default perturbation, radius
0.02), drawn from one seed per neighbour; neighbours are explained ``batch_size`` at a time,
each for its input's target (the class the model predicts on the original input when
``targets=None``). Distances between maps are Euclidean (Frobenius) norms.
"""
from __future__ import annotations

from typing import Any, Callable

import torch

from .._batching import iter_slices
from .._scoring import runs_by_sample
from .._validation import check_heatmaps, check_non_negative, check_positive_int
from ..selectors import ClassScore, Selector
from .base import MetricResult, ModelMetric


class RowsOf(Selector):
    """A bound selector read for other rows: row ``j`` of a batch is scored as original input
    ``rows[j]`` (for explaining copies of the inputs with the original targets)."""

    def __init__(self, inner: Selector, rows: torch.Tensor):
        self.inner, self.rows = inner, rows
        self.reads_raw_outputs = inner.reads_raw_outputs

    def tensor(self, outputs):
        return self.inner.tensor(outputs)

    def select(self, tensor, rows):
        return self.inner.select(tensor, self.rows.to(rows.device)[rows])


def targets_of_rows(selector: Selector, rows: torch.Tensor) -> Any:
    """What to pass an explainer for copies of the inputs ``rows``: their class indices for
    class targets (any explainer takes them), else the bound selector read for those rows."""
    if isinstance(selector, ClassScore):
        return selector._bound[rows, 0]
    return RowsOf(selector, rows)


def check_explainer(explainer: Any, explainer_kwargs: dict | None) -> None:
    """An explainer instance, an explainer class or a callable (model, inputs, targets)."""
    is_class = isinstance(explainer, type) and hasattr(explainer, "explain")
    is_instance = not isinstance(explainer, type) and callable(getattr(explainer, "explain",
                                                                        None))
    if not (is_class or is_instance or (callable(explainer) and not isinstance(explainer,
                                                                                type))):
        raise TypeError("explainer must be an explainer instance, an explainer class or a "
                        "callable (model, inputs, targets) -> heatmaps; got "
                        f"{getattr(explainer, '__name__', type(explainer).__name__)}")
    if explainer_kwargs is not None and not is_class:
        raise TypeError("explainer_kwargs go to an explainer class; an instance or a callable "
                        "takes none")


class ReExplainingMetric(ModelMetric):
    """Base of the metrics that explain new inputs with the method under test (see the module
    docstring); ``_explainer(forward_kwargs)`` gives ``explain(batch, rows) -> heatmaps``."""

    requires = frozenset({"model", "explainer"})
    _model_arguments = ("model", "explainer")

    def __init__(self, model: Any, explainer: Any, *, explainer_kwargs: dict | None = None,
                 **common: Any):
        super().__init__(model, **common)
        check_explainer(explainer, explainer_kwargs)
        self.explainer = explainer
        self.explainer_kwargs = explainer_kwargs

    def _explainer(self, scorer: Any) -> Callable[[torch.Tensor, torch.Tensor, Any],
                                                  torch.Tensor]:
        """``explain(batch, rows, targets)``: heatmaps of ``batch`` (copies of inputs ``rows``)
        for ``targets``, checked against the batch."""
        method = self.explainer
        if isinstance(method, type):  # no inner progress bar unless asked for
            method = method(self.model, **{"progress": False, **(self.explainer_kwargs or {})})
        if not hasattr(method, "explain") and scorer.forward_kwargs:
            raise TypeError("forward_kwargs need an explainer instance or class; a callable "
                            "explainer takes (model, inputs, targets) only")

        def explain(batch: torch.Tensor, rows: torch.Tensor, targets: Any) -> torch.Tensor:
            if hasattr(method, "explain"):
                kwargs = {"forward_kwargs": scorer.kwargs_for(rows)} if scorer.forward_kwargs \
                    else {}
                try:
                    heatmaps = method.explain(batch, targets, **kwargs)
                except ValueError as error:
                    # the metric's prelude already ran the model on these inputs: a failure of
                    # the explainer's first pass is the model's own error, raised as it is
                    if isinstance(error.__cause__, RuntimeError):
                        raise error.__cause__ from None
                    raise
            else:
                heatmaps = method(self.model, batch, targets)
            return check_heatmaps(heatmaps, batch)

        return explain


class _NeighbourMetric(ReExplainingMetric):
    """Explains ``nb_samples`` neighbours of each input; subclasses implement
    ``_ratio(map_change, input_change, original_norm) -> (k,)`` per neighbour and reduce them
    with ``_reduce`` (max or mean)."""

    def __init__(self, model: Any, explainer: Any, *, explainer_kwargs: dict | None = None,
                 radius: float = 0.02, nb_samples: int = 10, **common: Any):
        super().__init__(model, explainer, explainer_kwargs=explainer_kwargs, **common)
        self.radius = check_non_negative("radius", radius)
        self.nb_samples = check_positive_int("nb_samples", nb_samples)

    def _score(self, x, heatmaps, scorer):
        n, nb = len(x), self.nb_samples
        seeds = torch.randint(0, 2**62, (n, nb), generator=self._generator())
        explain = self._explainer(scorer)
        flat = heatmaps.reshape(n, -1).double()
        ratios = torch.empty(n, nb, dtype=torch.float64)
        for s in iter_slices(n * nb, self.batch_size):
            rows = torch.arange(s.start, s.stop) // nb
            deltas = torch.stack([2 * torch.rand(x.shape[1:], generator=torch.Generator()
                                                 .manual_seed(int(seed))) - 1
                                  for sample, _, picked in runs_by_sample(s, nb)
                                  for seed in seeds[sample, picked]]) * self.radius
            changed = explain(x[rows] + deltas.to(x.dtype), rows,
                              targets_of_rows(scorer.selector, rows))
            map_change = (changed.reshape(len(rows), -1).double() - flat[rows]).norm(dim=1)
            input_change = deltas.reshape(len(rows), -1).double().norm(dim=1)
            ratio = self._ratio(map_change, input_change, flat[rows].norm(dim=1))
            ratios.view(-1)[s] = ratio
        return MetricResult(self.name, self._reduce(ratios).numpy(), higher_is_better=False,
                            details={"per_neighbour": ratios.numpy()})

    def _ratio(self, map_change, input_change, original_norm):
        raise NotImplementedError

    def _reduce(self, ratios: torch.Tensor) -> torch.Tensor:
        return ratios.max(1).values


class SensitivityMax(_NeighbourMetric):
    """Max-sensitivity (Yeh et al., 2019, "On the (In)fidelity and Sensitivity of
    Explanations"; as captum's ``sensitivity_max``), over the neighbours ``x'`` of the module
    docstring::

        SENS_MAX = max_{x'} ||e(x') - e(x)|| / ||e(x)||

    (``normalize=False``: without the division; a zero ``e(x)`` is not divided, as captum).
    Lower is better.

    Parameters:
        explainer, explainer_kwargs: the method under test (module docstring).
        radius: half-width of the uniform ``L_inf`` perturbation (0.02).
        nb_samples: neighbours per input (10).
        normalize: divide by ``||e(x)||`` (True, captum).

    ``details["per_neighbour"]``: the ``(N, nb_samples)`` values reduced.
    """

    name = "sensitivity_max"
    higher_is_better = False

    def __init__(self, model: Any, explainer: Any, *, explainer_kwargs: dict | None = None,
                 radius: float = 0.02, nb_samples: int = 10, normalize: bool = True,
                 **common: Any):
        super().__init__(model, explainer, explainer_kwargs=explainer_kwargs, radius=radius,
                         nb_samples=nb_samples, **common)
        self.normalize = bool(normalize)

    def _ratio(self, map_change, input_change, original_norm):
        if not self.normalize:
            return map_change
        return map_change / torch.where(original_norm > 0, original_norm,
                                        torch.ones_like(original_norm))


class SensitivityAvg(SensitivityMax):
    """Average sensitivity (Yeh et al., 2019): as :class:`SensitivityMax` with the mean over
    the neighbours instead of the maximum. Lower is better."""

    name = "sensitivity_avg"

    def _reduce(self, ratios):
        return ratios.mean(1)


class LocalLipschitz(_NeighbourMetric):
    """Local Lipschitz estimate (Alvarez-Melis & Jaakkola, 2018, "On the Robustness of
    Interpretability Methods"): over the neighbours ``x'`` of the module docstring,

        L(x) = max_{x'} ||e(x') - e(x)|| / ||x' - x||

    Lower is better (a stabler explanation).

    Parameters:
        explainer, explainer_kwargs: the method under test (module docstring).
        radius: half-width of the uniform ``L_inf`` perturbation (0.02).
        nb_samples: neighbours per input (10).
    """

    name = "local_lipschitz"
    higher_is_better = False

    def _ratio(self, map_change, input_change, original_norm):
        return map_change / input_change.clamp(min=1e-300)
