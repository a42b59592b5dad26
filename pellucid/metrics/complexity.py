"""Complexity metrics: how concentrated is a heatmap? They read the heatmap alone (no model, no
ground truth): ``metric(inputs, heatmaps)`` with heatmaps ``(N, H, W)`` (``(N, C, H, W)`` is
summed over channels) or ``(N, F)``; every pixel or feature is one element of ``a = |h|``. A
map that is zero everywhere scores NaN (left out of ``mean``).
"""
from __future__ import annotations

import numpy as np
from scipy.stats import entropy

from .._validation import check_non_negative
from .base import Metric, MetricResult


class _ComplexityMetric(Metric):
    """Scores ``|h|`` flattened per sample; subclasses implement ``_scores(a) -> (N,)``."""

    def _evaluate(self, x, h, targets, masks):
        a = h.reshape(len(h), -1).double().abs().numpy()
        scores = np.where(a.sum(1) > 0, self._scores(a), np.nan)
        return MetricResult(self.name, scores, higher_is_better=self.higher_is_better)

    def _scores(self, a: np.ndarray) -> np.ndarray:
        raise NotImplementedError


class Sparseness(_ComplexityMetric):
    """Sparseness (Chalasani et al., 2020, "Concise Explanations of Neural Networks using
    Adversarial Training"): the Gini index of ``a = |h|`` sorted increasingly over its ``n``
    elements::

        G(a) = sum_{i=1..n} (2 i - n - 1) a_(i) / (n sum_i a_i)

    0 for a constant map, ``1 - 1/n`` (its maximum) for a map with one non-zero element.
    Higher is better (sparser)."""

    name = "sparseness"
    higher_is_better = True

    def _scores(self, a):
        n = a.shape[1]
        weights = 2 * np.arange(1, n + 1) - n - 1
        total = a.sum(1)
        return (np.sort(a, axis=1) * weights).sum(1) / (n * np.where(total > 0, total, 1))


class Complexity(_ComplexityMetric):
    """Complexity (Bhatt, Weller & Moura, 2020, "Evaluating and Aggregating Feature-based Model
    Explanations"): the Shannon entropy (natural log) of the fractional contributions
    ``p_i = |h_i| / sum_j |h_j|``, ``-sum_i p_i ln p_i`` (``scipy.stats.entropy``): 0 for a
    one-element map, ``ln n`` for a constant one. Lower is better (simpler)."""

    name = "complexity"
    higher_is_better = False

    def _scores(self, a):
        safe = np.where(a.sum(1, keepdims=True) > 0, a, 1.0)  # zero maps: NaN set by the base
        return entropy(safe, axis=1)


class EffectiveComplexity(_ComplexityMetric):
    """Effective complexity (Nguyen & Martinez, 2020, "On quantitative aspects of model
    interpretability"): the number of elements whose attribution exceeds a threshold,
    ``#{i : |h_i| / max_j |h_j| > threshold}``. The threshold is relative to the map's maximum
    (the paper's is absolute), so that methods whose maps have different units compare.
    Lower is better.

    Parameters:
        threshold: in [0, 1); default 0.05 (5 % of the largest attribution).
    """

    name = "effective_complexity"
    higher_is_better = False

    def __init__(self, *, threshold: float = 0.05):
        threshold = check_non_negative("threshold", threshold)
        if threshold >= 1:
            raise ValueError(f"threshold must be in [0, 1) (relative to the map's maximum), "
                             f"got {threshold!r}")
        self.threshold = threshold

    def _scores(self, a):
        peak = a.max(1, keepdims=True)
        return (a > self.threshold * peak).sum(1).astype(np.float64)

