"""Ground-truth agreement: how close is a heatmap to the true attribution of a task that ships
one (:func:`pellucid.datasets.load_suppressor`, :func:`~pellucid.datasets.load_additive`:
``true_attributions_*``)?

The truth reaches the metric as every ground truth does, through ``masks=``, with the heatmaps'
shape: ``metric(inputs, heatmaps, masks=true_attributions)``. These metrics read its *values*
(a boolean region mask is the truth 1 inside, 0 outside); the localization metrics read only
its support (non-zero is inside). The benchmark passes a dataset's ``masks_test``, else its
``true_attributions_test``. No model is run.

Top-k metrics (OpenXAI, Agarwal et al., 2022) rank features by ``|h|`` and ``|truth|``
decreasingly, ties in row-major order (the lower index first), and take ``k`` features: an int,
or a fraction in (0, 1) of the features (rounded, at least 1).
"""
from __future__ import annotations

import numbers
from typing import Any

import numpy as np
import torch
from scipy.stats import kendalltau

from .._scoring import descending_ranks, spearman_rows
from .._validation import as_float_tensor, check_choice, check_finite
from .base import Metric, MetricResult


def check_truth(truth: Any, heatmaps: torch.Tensor, who: str) -> torch.Tensor:
    """True attributions (or a region mask) of the heatmaps' shape, finite, as float64."""
    if truth is None:
        raise ValueError(f"{who} needs ground-truth masks (the true attributions): call it with "
                         f"masks=... of the heatmaps' shape {tuple(heatmaps.shape)}")
    if isinstance(truth, (np.ndarray, list, tuple)):
        truth = torch.as_tensor(np.asarray(truth))
    if torch.is_tensor(truth) and truth.dtype == torch.bool:
        truth = truth.float()  # a region mask: the truth 1 inside, 0 outside
    t = as_float_tensor(truth, "masks").cpu().double()
    if t.shape != heatmaps.shape:
        raise ValueError(f"masks must have the heatmaps' shape {tuple(heatmaps.shape)}; "
                         f"got {tuple(t.shape)}")
    check_finite(t, "masks (true attributions)")
    return t


def check_k(k: Any) -> int | float:
    """An int >= 1, or a fraction in (0, 1)."""
    if isinstance(k, numbers.Integral) and not isinstance(k, bool) and k >= 1:
        return int(k)
    if isinstance(k, numbers.Real) and not isinstance(k, bool) and 0 < k < 1:
        return float(k)
    raise ValueError(f"k must be an integer >= 1 (features) or a fraction in (0, 1), got {k!r}")


def top_k_count(k: int | float, size: int) -> int:
    """How many of ``size`` features a checked ``k`` (:func:`check_k`) takes: the int itself,
    or the fraction of ``size`` rounded (at least 1); at most ``size``."""
    return min(size, k if isinstance(k, int) else max(1, round(k * size)))


class GroundTruthMetric(Metric):
    """``metric(inputs, heatmaps, masks=true_attributions) -> MetricResult`` (``targets``
    unused); subclasses implement ``_scores(h, truth) -> (N,)`` on flattened float64 rows."""

    requires = frozenset({"masks"})

    def _check_masks(self, masks: Any, heatmaps: torch.Tensor) -> torch.Tensor:
        return check_truth(masks, heatmaps, type(self).__name__)

    def _evaluate(self, x, h, targets, truth):
        n = len(h)
        scores = self._scores(h.reshape(n, -1).double(), truth.reshape(n, -1))
        return MetricResult(self.name, np.asarray(scores, dtype=np.float64),
                            higher_is_better=self.higher_is_better)

    def _scores(self, h: torch.Tensor, truth: torch.Tensor) -> Any:
        raise NotImplementedError


class RankCorrelation(GroundTruthMetric):
    """Rank correlation between the heatmap and the true attribution, per sample (OpenXAI's
    "rank correlation"): Spearman's rho (average ranks for ties) or Kendall's tau-b
    (``scipy.stats.kendalltau``), of ``|h|`` against ``|truth|`` (``absolute=True``: which
    features matter) or of the signed values. NaN where either is constant. Higher is better.

    Parameters:
        method: ``"spearman"`` (default) or ``"kendall"``.
        absolute: compare magnitudes (default True) or signed values.
    """

    name = "rank_correlation"

    def __init__(self, *, method: str = "spearman", absolute: bool = True):
        self.method = check_choice("method", method, ("spearman", "kendall"))
        self.absolute = bool(absolute)

    def _scores(self, h, truth):
        if self.absolute:
            h, truth = h.abs(), truth.abs()
        if self.method == "spearman":
            return spearman_rows(h, truth).numpy()
        return np.array([kendalltau(a, b).statistic for a, b in zip(h.numpy(), truth.numpy())])


class _TopKAgreement(GroundTruthMetric):
    """Compares the ``k`` top features of the heatmap and of the truth (module docstring);
    subclasses implement ``_hits(h, truth, top_h, top_t) -> (N, k)`` booleans, and the score
    is their mean over the ``k`` positions."""

    def __init__(self, *, k: int | float = 0.25):
        self.k = check_k(k)

    def _scores(self, h, truth):
        top_h, k = self._top(h)
        top_t, _ = self._top(truth)
        return self._hits(h, truth, top_h, top_t).sum(1).double().numpy() / k

    def _top(self, values: torch.Tensor) -> tuple[torch.Tensor, int]:
        """``(N, k)`` indices of the ``k`` largest ``|values|`` of each row, in rank order."""
        k = top_k_count(self.k, values.shape[1])
        ranks = descending_ranks(values.abs())
        return ranks.argsort(1)[:, :k], k

    def _hits(self, h: torch.Tensor, truth: torch.Tensor, top_h: torch.Tensor,
              top_t: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError


class FeatureAgreement(_TopKAgreement):
    """Feature agreement (OpenXAI FA; Krishna et al., 2022, "The Disagreement Problem"): the
    fraction of the ``k`` top features of the heatmap that are among the ``k`` top features of
    the truth, ``|top_k(h) & top_k(truth)| / k``. Higher is better.

    Parameters:
        k: features compared: an int, or a fraction of the features (default 0.25).
    """

    name = "feature_agreement"

    def _hits(self, h, truth, top_h, top_t):
        return (top_h[:, :, None] == top_t[:, None, :]).any(2)  # among the truth's top k


class RankAgreement(_TopKAgreement):
    """Rank agreement (OpenXAI RA; Krishna et al., 2022): the fraction of the ``k`` top ranks
    that hold the same feature in the heatmap and in the truth. Higher is better.

    Parameters:
        k: ranks compared: an int, or a fraction of the features (default 0.25).
    """

    name = "rank_agreement"

    def _hits(self, h, truth, top_h, top_t):
        return top_h == top_t  # the same feature at the same rank


class SignAgreement(FeatureAgreement):
    """Sign agreement (OpenXAI SA; Krishna et al., 2022): the fraction of the ``k`` top features
    of the heatmap that are among the truth's ``k`` top features *and* have the truth's sign
    (``sign(h_i) == sign(truth_i)``). Higher is better.

    Parameters:
        k: features compared: an int, or a fraction of the features (default 0.25).
    """

    name = "sign_agreement"

    def _hits(self, h, truth, top_h, top_t):
        same_sign = h.gather(1, top_h).sign() == truth.gather(1, top_h).sign()
        return super()._hits(h, truth, top_h, top_t) & same_sign


class SuppressorMass(GroundTruthMetric):
    """The suppressor test (Haufe et al., 2014; Wilming, Budding, Müller & Haufe, 2022,
    "Scrutinizing XAI using linear ground-truth data with suppressor variables"): the share
    of the attribution mass put on features with no statistical association with the target,
    ``sum_{i in S} |h_i| / sum_i |h_i|``, an error: lower is better. NaN for a zero map.

    Parameters:
        features: indices of the suppressor features S (e.g. ``[1]`` for ``load_suppressor``'s
            ``x2``); ``None`` (default) = every feature whose true attribution is 0.
    """

    name = "suppressor_mass"
    higher_is_better = False

    def __init__(self, *, features: list[int] | None = None):
        if features is not None:
            features = [int(i) for i in np.atleast_1d(np.asarray(features))]
            if not features or min(features) < 0:
                raise ValueError(f"features must be non-negative feature indices or None, got "
                                 f"{features!r}")
        self.features = features

    def _scores(self, h, truth):
        magnitude = h.abs()
        if self.features is None:
            suppressors = truth == 0
        else:
            if max(self.features) >= h.shape[1]:
                raise ValueError(f"features {self.features} out of range: the heatmaps have "
                                 f"{h.shape[1]} features")
            suppressors = torch.zeros_like(magnitude, dtype=torch.bool)
            suppressors[:, self.features] = True
        total = magnitude.sum(1)
        share = (magnitude * suppressors).sum(1) / total.clamp(min=1e-300)
        return torch.where(total > 0, share, torch.full_like(share, float("nan"))).numpy()
