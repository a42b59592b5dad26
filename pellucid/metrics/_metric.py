"""Base classes of the metrics: hyperparameters and validation in one place.

A metric is built like an explainer (keyword-only hyperparameters stored under their own
names, validated in ``__init__``, shown by ``repr``, no work in ``__init__``) and called on
heatmaps that any method produced::

    result = Deletion(model, batch_size=64)(inputs, heatmaps, targets)

:class:`ModelMetric` validates ``inputs`` (``(N, C, H, W)`` or ``(N, F)``), ``heatmaps``
(``(N, H, W)``, or ``(N, C, H, W)`` summed over channels, or ``(N, F)``) and ``targets``
(``None`` = the class the model predicts on the original inputs, an int, or N ints) before any
expensive work, then hands tensors to ``_evaluate``.
"""
from __future__ import annotations

from typing import Any, Iterator, Sequence

import numpy as np
import torch

from .._validation import (check_heatmaps, check_input_matches_module, check_inputs,
                           check_positive_int, check_seed)
from ..explain.base import Explainer
from ..models import as_model, preserved_running_stats
from .base import MetricResult


class Metric:
    """Hyperparameter habits shared with :class:`~pellucid.explain.base.Explainer`
    (``get_params`` and ``repr`` list the keyword-only arguments of ``__init__``)."""

    name = "metric"
    higher_is_better = True

    _param_names = Explainer.__dict__["_param_names"]
    get_params = Explainer.get_params
    __repr__ = Explainer.__repr__


class ModelMetric(Metric):
    """A metric that runs the model on perturbed inputs.

    Parameters common to these metrics:
        model: a ``torch.nn.Module`` (logits), a scikit-learn estimator or a numpy callable.
        batch_size: most inputs in one forward pass; bounds memory.
        device: where the model runs; ``None`` = the model's own device.
        progress: show a tqdm bar when the work takes more than one batch.
    """

    probabilities = False  # whether the metric scores softmax probabilities

    def __init__(self, model: Any, *, batch_size: int = 64, device: Any = None,
                 progress: bool = True):
        self.model = model
        self.batch_size = check_positive_int("batch_size", batch_size)
        self.device = device
        self.progress = bool(progress)
        self._model = as_model(model, device=device)

    resolve_targets = Explainer.resolve_targets

    def __call__(self, inputs: Any, heatmaps: Any, targets: Any = None) -> MetricResult:
        """Score ``heatmaps`` of ``inputs`` for ``targets``; see the module docstring."""
        x = check_inputs(inputs)
        if self._model.module is not None:
            check_input_matches_module(x, self._model.module)
        self._check_inputs(x)
        h = check_heatmaps(heatmaps, x)
        with preserved_running_stats(self._model.module):
            # one sample tells the number of outputs: checked before targets=None predicts all
            if self.probabilities and self._model.predict(x[:1]).shape[1] == 1:
                raise ValueError(f"{type(self).__name__} scores softmax probabilities, but the "
                                 "model has a single output (a regression or one binary "
                                 "score?), whose softmax is always 1; pass probabilities=False "
                                 "to use the raw output")
            t = self.resolve_targets(x, targets)
            return self._evaluate(x, h, t)

    evaluate = __call__

    def _check_inputs(self, x: torch.Tensor) -> None:
        """Metric-specific input checks (e.g. images only); the default accepts both kinds."""

    def _evaluate(self, x: torch.Tensor, heatmaps: torch.Tensor, targets: torch.Tensor
                  ) -> MetricResult:
        raise NotImplementedError


class SeededMetric(ModelMetric):
    """A model metric that draws random numbers: ``seed`` (same seed, same result)."""

    def __init__(self, model: Any, *, seed: int | None = 0, **common: Any):
        super().__init__(model, **common)
        self.seed = check_seed(seed)

    _generator = Explainer._generator


def descending_ranks(heatmaps: torch.Tensor) -> torch.Tensor:
    """``(N, P)`` position of every pixel/feature when sorted by decreasing heatmap value (0 =
    most relevant); ties keep the row-major order."""
    flat = heatmaps.reshape(len(heatmaps), -1)
    order = torch.argsort(flat, dim=1, descending=True, stable=True)
    positions = torch.arange(flat.shape[1]).expand_as(order)
    return torch.empty_like(order).scatter_(1, order, positions)


def runs_by_sample(s: slice, per_sample: int) -> Iterator[tuple[int, slice, slice]]:
    """For a chunk ``s`` of items ordered sample by sample (``per_sample`` items each): every
    sample it touches, the positions of that sample's items in the chunk and their indices
    within the sample. A chunk of ``batch_size`` items touches at most
    ``batch_size / per_sample + 2`` samples."""
    for sample in range(s.start // per_sample, (s.stop - 1) // per_sample + 1):
        first = max(s.start, sample * per_sample)
        last = min(s.stop, (sample + 1) * per_sample)
        yield (sample, slice(first - s.start, last - s.start),
               slice(first - sample * per_sample, last - sample * per_sample))


def target_scores(scores: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """``scores[i, targets[i]]`` for rows of a ``(n, K)`` score matrix."""
    return scores.gather(1, targets.long()[:, None])[:, 0]


def normalized_auc(curves: np.ndarray) -> np.ndarray:
    """Area under each row of ``curves`` by the trapezoid rule over equally spaced points,
    divided by the x-range (RISE's ``auc``: ``(sum - first/2 - last/2) / (S - 1)``)."""
    curves = np.asarray(curves, dtype=np.float64)
    return trapezoid_auc(curves, np.arange(curves.shape[-1]))


def check_fractions(name: str, fractions: Sequence[float]) -> tuple[float, ...]:
    """Increasing fractions in [0, 1), e.g. (0.1, ..., 0.9)."""
    values = tuple(float(p) for p in np.atleast_1d(np.asarray(fractions, dtype=float)))
    if not values or any(not 0 <= p < 1 for p in values) or any(
            b <= a for a, b in zip(values, values[1:])):
        raise ValueError(f"{name} must be increasing fractions in [0, 1), e.g. "
                         f"(0.1, 0.2, ..., 0.9); got {fractions!r}")
    return values


def trapezoid_auc(curves: np.ndarray, fractions: np.ndarray) -> np.ndarray:
    """Trapezoid area under each row over ``fractions``, divided by their range (one point: the
    value itself)."""
    if len(fractions) == 1:
        return curves[..., 0].astype(np.float64)
    widths = np.diff(np.asarray(fractions, dtype=np.float64))
    area = ((curves[..., 1:] + curves[..., :-1]) / 2 * widths).sum(-1)
    return area / (fractions[-1] - fractions[0])


def pearson_rows(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Pearson correlation of each row of ``a`` with the same row of ``b`` (float64); NaN where
    a row is constant (the correlation is undefined there)."""
    a = a.double() - a.double().mean(-1, keepdim=True)
    b = b.double() - b.double().mean(-1, keepdim=True)
    denominator = (a.square().sum(-1) * b.square().sum(-1)).sqrt()
    out = (a * b).sum(-1) / denominator
    return torch.where(denominator > 0, out, torch.full_like(out, float("nan")))
