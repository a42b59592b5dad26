"""What the feature-group methods share: the ``feature_mask`` and ``baseline`` hyperparameters,
the per-input design of coalitions, one stream of batched passes over all of them, and the
result of ``explain_groups`` (per-group values and each method's diagnostics)."""
from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import Any

import torch

from ..._baselines import check_baseline, make_baseline
from ..._layer_masking import check_layer_masking
from ..._scorer import Scorer
from ...features import as_labels, check_feature_mask, resolve_feature_mask
from ..base import Explainer
from .coalitions import score_coalitions


@dataclass(frozen=True)
class GroupExplanation:
    """What ``explain_groups`` returns (``T`` targets; without ``(N, T)`` targets the ``T``
    dimension is absent, as for ``explain``).

    Attributes:
        heatmaps: what ``explain`` returns: each group's value on each of its pixels / columns,
            ``(N, [T,] H, W)`` or ``(N, [T,] F)``.
        values: the value of each group, ``(N, [T,] M)``, ``M`` the most groups of any input
            (NaN past an input's own number of groups).
        feature_mask: the groups used, ``(N, H, W)`` / ``(N, F)``, labels ``0 .. M_i - 1``.
        prediction: ``f(x)``, ``(N, [T])``, where the method evaluates it (None for Lime).
        base_value: ``f(baseline)``, ``(N, [T])`` (KernelShap, ShapleyValueSampling).
        standard_error: the sampling standard error of each value, ``(N, [T,] M)``
            (ShapleyValueSampling).
        r2: the surrogate's weighted R^2 on its own samples, ``(N, [T])`` (Lime).
    """

    heatmaps: torch.Tensor
    values: torch.Tensor
    feature_mask: torch.Tensor
    prediction: torch.Tensor | None = None
    base_value: torch.Tensor | None = None
    standard_error: torch.Tensor | None = None
    r2: torch.Tensor | None = None

    def _first_target(self) -> "GroupExplanation":
        return replace(self, **{f.name: getattr(self, f.name)[:, 0] for f in fields(self)
                                if f.name != "feature_mask" and getattr(self, f.name) is not None})


class GroupExplainer(Explainer):
    """Base of the methods that switch groups of features (``feature_mask``) on and off.

    A subclass draws the coalitions of one input (``_design``) and turns their scores into group
    values (``_solve``); the base evaluates all coalitions of all inputs in one stream of
    batched passes (:func:`~pellucid.explain.groups.coalitions.score_coalitions`), every target
    from the same passes.

    Args:
        feature_mask: the groups (:mod:`pellucid.features`): an integer mask ``(H, W)`` /
            ``(N, H, W)`` for images (a group covers every channel of its pixels), ``(F,)`` /
            ``(N, F)`` for tabular data, labels need not be contiguous; or a callable
            ``f(inputs) -> mask`` such as ``functools.partial(features.slic, n_segments=50)``;
            ``None`` (default): an 8 x 8 :func:`~pellucid.features.grid` for images, one group
            per column for tabular data.
        baseline: what a removed group becomes: a number, a tensor broadcastable to the inputs,
            ``"mean"`` or ``"blur"`` (:mod:`pellucid._baselines`).
        probabilities: explain the softmax of the model's outputs instead of its raw outputs
            (the default, as Occlusion: logits for a Module, ``predict_proba`` for scikit-learn).
        masking: ``"fill"`` (removed groups become the baseline) or ``"layer"`` (layer
            masking, Balasubramanian & Feizi 2023: removed groups are masked at every layer
            of a CNN, the model never sees a fill; :mod:`pellucid._layer_masking`; images and
            torch Modules only; ``baseline`` is then unused).
    """

    multi_target = True

    def __init__(self, model: Any, *, feature_mask: Any = None, baseline: Any = 0.0,
                 probabilities: bool = False, masking: str = "fill", **common: Any):
        super().__init__(model, **common)
        check_layer_masking(masking, self._model)
        self.masking = masking
        if not (feature_mask is None or callable(feature_mask)):
            as_labels(feature_mask)  # its shape is checked against the inputs of each call
        self.feature_mask = feature_mask
        self.baseline = check_baseline(baseline)
        self.probabilities = bool(probabilities)

    def _check_inputs(self, x: torch.Tensor) -> None:
        check_layer_masking(self.masking, self._model, x)
        self._reference(x)
        if not (self.feature_mask is None or callable(self.feature_mask)):
            check_feature_mask(self.feature_mask, x)  # a callable's mask is checked once made

    def _reference(self, x: torch.Tensor) -> torch.Tensor:
        """What removed groups become in the inputs: the baseline, or 0 under layer masking
        (masked at every layer, their value is never read)."""
        return make_baseline(0.0 if self.masking == "layer" else self.baseline, x)

    def _score_coalitions(self, scorer: Any, x: torch.Tensor, reference: torch.Tensor,
                          masks: torch.Tensor, coalitions: list[torch.Tensor], **options: Any
                          ) -> list[torch.Tensor]:
        """:func:`~pellucid.explain.groups.coalitions.score_coalitions` with this explainer's
        masking and batch size (``reference``: :meth:`_reference`)."""
        return score_coalitions(scorer, x, reference, masks, coalitions,
                                batch_size=self.batch_size, layer_masking=self.masking == "layer",
                                **options)

    def explain_groups(self, inputs: Any, targets: Any = None, *, forward_kwargs: Any = None
                       ) -> GroupExplanation:
        """The heatmaps of ``explain`` with the group values and the method's diagnostics
        (:class:`GroupExplanation`), from the same passes."""
        x = self._validate(inputs)
        with self._call(x, targets, forward_kwargs) as scorer:
            result = self._explain_groups(x, scorer)
        return result if scorer.multiple else result._first_target()

    def _explain(self, x: torch.Tensor, scorer: Scorer) -> torch.Tensor:
        return self._explain_groups(x, scorer).heatmaps

    def _explain_groups(self, x: torch.Tensor, scorer: Scorer) -> GroupExplanation:
        masks = resolve_feature_mask(self.feature_mask, x)
        counts = (masks.flatten(1).amax(1) + 1).tolist()
        # one design per number of groups, from a fresh generator: an input's result does not
        # depend on the others of the call (all inputs share the coalitions, as RISE its masks)
        by_count = {m: self._design(m, self._generator()) for m in sorted(set(counts))}
        designs = [by_count[m] for m in counts]
        scores = self._score_coalitions(scorer, x, self._reference(x), masks,
                                        [z for z, _ in designs],
                                        progress=self.progress, desc=type(self).__name__)
        solved = [self._solve(z, info, s.double()) for (z, info), s in zip(designs, scores)]
        values = torch.full((len(x), scorer.nb_targets, max(counts)), float("nan"))
        for i, (value, _) in enumerate(solved):
            values[i, :, :counts[i]] = value.T.float()
        heatmaps = torch.stack([values[i][:, masks[i]] for i in range(len(x))])
        extras = {key: torch.stack([_pad(extra[key], values.shape[2]) for _, extra in solved])
                  for key in solved[0][1]}
        return GroupExplanation(heatmaps, values, masks.clone(), **extras)

    def _design(self, m: int, generator: torch.Generator) -> tuple[torch.Tensor, Any]:
        """The coalitions ``(S, m)`` in ``{0, 1}`` of one input with ``m`` groups, and whatever
        ``_solve`` needs besides their scores."""
        raise NotImplementedError

    def _solve(self, z: torch.Tensor, info: Any, scores: torch.Tensor
               ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Group values ``(m, T)`` from the coalitions' scores ``(S, T)`` (float64), and the
        diagnostics (:class:`GroupExplanation` fields: ``(T,)`` or ``(m, T)``)."""
        raise NotImplementedError


def _pad(extra: torch.Tensor, m: int) -> torch.Tensor:
    """A diagnostic as float32 ``(T,)``, or ``(T, m)`` padded with NaN from ``(m_i, T)``."""
    extra = extra.float()
    if extra.ndim == 1:
        return extra
    padded = torch.full((extra.shape[1], m), float("nan"))
    padded[:, :len(extra)] = extra.T
    return padded
