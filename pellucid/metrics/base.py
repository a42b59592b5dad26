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

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from .._validation import (check_heatmaps, check_input_matches_module, check_inputs,
                           check_positive_int, check_seed)
from ..explain.base import Explainer
from ..models import as_model, preserved_running_stats


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
