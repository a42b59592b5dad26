"""What every metric returns."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np


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
