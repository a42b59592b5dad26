"""The metric contract, and what every metric returns.

Every heatmap metric is called the same way, on heatmaps that any method (or another library)
produced::

    result = metric(inputs, heatmaps, targets=None, *, masks=None)     # -> MetricResult

and declares in ``requires`` what it needs besides inputs and heatmaps: ``"model"`` (given to
``__init__``; the metric runs it on perturbed inputs), ``"explainer"`` (given to ``__init__``;
robustness metrics re-explain perturbed inputs with it) and ``"masks"`` (ground truth given per
call: masks, or true attributions for the agreement metrics). The benchmark reads that
declaration. Inputs are ``(N, C, H, W)`` or ``(N, F)``;
heatmaps ``(N, H, W)`` (or ``(N, C, H, W)``, summed over channels) or ``(N, F)``; ``targets``
as for explainers (:mod:`pellucid.selectors`), one target per input. Everything is checked
before any expensive work.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from .._batching import score_generated
from .._params import Configurable
from .._runner import ModelRunner
from .._scorer import Scorer
from .._validation import check_heatmaps, check_inputs
from ..selectors import as_selector

@dataclass
class MetricResult:
    """Scores of one metric on a batch.

    Attributes:
        name: the metric (e.g. ``"deletion"``).
        scores: ``(N,)`` one number per sample (NaN where a sample has none).
        curves: ``(N, S)`` for curve metrics, else None.
        fractions: ``(S,)`` x-axis of the curves (fraction of pixels/features changed), else None.
        higher_is_better: direction of ``scores`` (False for deletion, for instance).
        details: anything metric-specific (per-fraction accuracies, ...).
    """

    name: str
    scores: np.ndarray
    curves: np.ndarray | None = None
    fractions: np.ndarray | None = None
    higher_is_better: bool = True
    details: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self):
        self.scores = np.asarray(self.scores, dtype=np.float64).reshape(-1)
        if self.curves is not None:
            self.curves = np.asarray(self.curves, dtype=np.float64)
        if self.fractions is not None:
            self.fractions = np.asarray(self.fractions, dtype=np.float64)

    @property
    def mean(self) -> float:
        return float(np.nanmean(self.scores)) if self.scores.size else float("nan")

    @property
    def std(self) -> float:
        return float(np.nanstd(self.scores)) if self.scores.size else float("nan")

    def __repr__(self) -> str:
        return f"MetricResult({self.name}: mean={self.mean:.4f} over {self.scores.size} samples)"


class Metric(Configurable):
    """Base of every heatmap metric (see the module docstring); subclasses implement
    ``_evaluate(x, heatmaps, targets, masks)`` on checked tensors."""

    name = "metric"
    higher_is_better = True
    requires: frozenset[str] = frozenset()

    def __call__(self, inputs: Any, heatmaps: Any, targets: Any = None, *,
                 masks: Any = None) -> MetricResult:
        """Score ``heatmaps`` of ``inputs``; see the module docstring."""
        x = check_inputs(inputs)
        self._check_input_kind(x)
        self._check_inputs(x)
        h = check_heatmaps(heatmaps, x)
        if "masks" in self.requires:
            masks = self._check_masks(masks, h)
        return self._evaluate(x, h, targets, masks)

    evaluate = __call__

    def _check_inputs(self, x: torch.Tensor) -> None:
        """Metric-specific input checks (e.g. images only); the default accepts both kinds."""

    def _check_masks(self, masks: Any, heatmaps: torch.Tensor) -> torch.Tensor:
        """The ground truth of a metric that ``requires`` it: boolean masks by default
        (:func:`check_masks`)."""
        return check_masks(masks, heatmaps, type(self).__name__)

    def _evaluate(self, x: torch.Tensor, heatmaps: torch.Tensor, targets: Any,
                  masks: torch.Tensor | None) -> MetricResult:
        raise NotImplementedError


class ModelMetric(Metric, ModelRunner):
    """A metric that runs the model on perturbed inputs (parameters:
    :class:`~pellucid._runner.ModelRunner`); subclasses implement ``_score(x, heatmaps,
    scorer)`` with the call's :class:`~pellucid._scorer.Scorer` (one target per input).
    ``forward_kwargs`` go to the model's ``forward`` as for explainers."""

    requires = frozenset({"model"})

    def __call__(self, inputs: Any, heatmaps: Any, targets: Any = None, *, masks: Any = None,
                 forward_kwargs: Any = None) -> MetricResult:
        x = self._validate(inputs)
        h = check_heatmaps(heatmaps, x)
        check_single_target(as_selector(targets), type(self).__name__)
        with self._call(x, targets, forward_kwargs) as scorer:
            check_single_target(scorer, type(self).__name__)
            return self._score(x, h, scorer)

    evaluate = __call__

    def _score(self, x: torch.Tensor, heatmaps: torch.Tensor, scorer: Scorer) -> MetricResult:
        raise NotImplementedError

    def _input_scores(self, x: torch.Tensor, scorer: Scorer) -> torch.Tensor:
        """``(N,)`` the target's score on the unperturbed inputs, ``batch_size`` at a time
        (float32, CPU)."""
        return score_generated(scorer, len(x), lambda s: (x[s], torch.arange(s.start, s.stop)),
                               batch_size=self.batch_size)[:, 0]


def check_single_target(selector: Any, who: str) -> None:
    if selector.multiple or selector.nb_targets != 1:
        raise ValueError(f"{who} scores one target per input; got several per input (an (N, T) "
                         "targets array or a selector of T > 1 scores): score them one by one")


def as_mask(masks: Any) -> torch.Tensor:
    """A boolean tensor of ground-truth masks (bool or numbers; non-zero is inside)."""
    if isinstance(masks, torch.Tensor):
        return masks.detach().cpu() != 0
    if isinstance(masks, (np.ndarray, list, tuple)):
        return torch.as_tensor(np.asarray(masks) != 0)
    raise TypeError(f"masks must be a torch.Tensor or numpy array, got {type(masks).__name__}")


def check_masks(masks: Any, heatmaps: torch.Tensor, who: str) -> torch.Tensor:
    """Ground-truth masks of the heatmaps' shape, as booleans (non-zero is inside)."""
    if masks is None:
        raise ValueError(f"{who} needs ground-truth masks: call it with masks=... of the "
                         f"heatmaps' shape {tuple(heatmaps.shape)}")
    m = as_mask(masks)
    if m.shape != heatmaps.shape:
        raise ValueError(f"masks must have the heatmaps' shape {tuple(heatmaps.shape)}; "
                         f"got {tuple(m.shape)}")
    return m
