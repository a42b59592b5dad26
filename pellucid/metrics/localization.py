"""Localization metrics: does the heatmap point at the ground-truth region?

They need no model: ``metric(inputs, heatmaps, masks=masks)`` with heatmaps ``(N, H, W)``
(``(N, C, H, W)`` is summed over channels) and ground-truth masks of the heatmaps' shape
``(N, H, W)`` (bool or numbers, any non-zero value is inside);
RelevanceMass and RelevanceRankAccuracy also take tabular ``(N, F)`` heatmaps with ``(N, F)``
masks of the truly relevant features (or true attributions: their non-zero support). A sample
with an empty mask scores NaN (left out of ``mean``). Higher is better for all.
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from .._scoring import descending_ranks
from .base import Metric, MetricResult
from .ground_truth import check_k, top_k_count


class LocalizationMetric(Metric):
    """``metric(inputs, heatmaps, masks=masks) -> MetricResult`` against ground-truth masks
    (``targets`` unused); subclasses implement ``_scores``."""

    requires = frozenset({"masks"})

    def _evaluate(self, x, h, targets, m):
        flat_h, flat_m = h.reshape(len(h), -1).double(), m.reshape(len(m), -1)
        scores = self._scores(h, m, flat_h, flat_m)
        scores = torch.where(flat_m.any(1), scores, torch.full_like(scores, float("nan")))
        return MetricResult(self.name, scores.numpy(), higher_is_better=True,
                            details=self._details(h))


    def _scores(self, heatmaps, masks, flat_heatmaps, flat_masks) -> torch.Tensor:
        raise NotImplementedError

    def _details(self, heatmaps: torch.Tensor) -> dict:
        return {}


class PointingGame(LocalizationMetric):
    """Pointing game (Zhang et al., 2018, "Top-down Neural Attention by Excitation Backprop"):
    a hit (1.0) when the heatmap's maximum lies within ``tolerance`` pixels (Euclidean distance)
    of the ground-truth mask, else a miss (0.0); ``mean`` is the accuracy.

    Parameters:
        tolerance: pixels; ``None`` = the paper's 15 px at 224 scaled to the image:
            ``floor(15 * max(H, W) / 224 + 0.5)``.

    Several equal maxima (Occlusion maps are full of them) score the share of them that are
    hits, so the score does not depend on where a tie lies: a unique maximum scores 1 or 0,
    a tied block half inside the mask 0.5, whatever the image's orientation. (The first
    maximum in row-major order scored the corner of the block; Quantus counts a hit if any
    tied pixel hits.)
    """

    name = "pointing_game"
    input_kinds = ("images",)

    def __init__(self, *, tolerance: int | None = None):
        if tolerance is not None and (isinstance(tolerance, bool) or not isinstance(
                tolerance, int) or tolerance < 0):
            raise ValueError(f"tolerance must be an integer >= 0 or None, got {tolerance!r}")
        self.tolerance = tolerance

    def pixels_of_tolerance(self, height: int, width: int) -> int:
        if self.tolerance is not None:
            return self.tolerance
        return math.floor(15 * max(height, width) / 224 + 0.5)

    def _scores(self, heatmaps, masks, flat_heatmaps, flat_masks):
        _, height, width = heatmaps.shape
        tolerance = self.pixels_of_tolerance(height, width)
        peaks = flat_heatmaps == flat_heatmaps.max(1, keepdim=True).values
        # pixels within `tolerance` (Euclidean) of the mask: the mask dilated by a disk
        offsets = torch.arange(-tolerance, tolerance + 1, dtype=torch.float64)
        disk = (offsets[:, None] ** 2 + offsets[None, :] ** 2 <= tolerance**2).double()
        near = F.conv2d(masks[:, None].double(), disk[None, None], padding=tolerance)[:, 0] > 0
        hits = (peaks & near.flatten(1)).sum(1)
        return hits.double() / peaks.sum(1)

    def _details(self, heatmaps):
        return {"tolerance": self.pixels_of_tolerance(*heatmaps.shape[1:])}


class RelevanceMass(LocalizationMetric):
    """Relevance mass accuracy (Arras, Osman, Samek, 2022, "CLEVR-XAI"): the share of the
    positive relevance that falls inside the mask, ``sum_{mask} max(R, 0) / sum max(R, 0)``;
    NaN when a heatmap has no positive value."""

    name = "relevance_mass"

    def _scores(self, heatmaps, masks, flat_heatmaps, flat_masks):
        positive = flat_heatmaps.clamp(min=0)
        total = positive.sum(1)
        inside = (positive * flat_masks).sum(1)
        return torch.where(total > 0, inside / total.clamp(min=1e-300),
                           torch.full_like(total, float("nan")))


class RelevanceRankAccuracy(LocalizationMetric):
    """Relevance rank accuracy (Arras, Osman, Samek, 2022): with K the mask's size, the fraction
    of the K highest-ranked pixels that lie inside the mask (ties keep row-major order)."""

    name = "relevance_rank_accuracy"

    def _scores(self, heatmaps, masks, flat_heatmaps, flat_masks):
        size = flat_masks.sum(1)
        top = descending_ranks(flat_heatmaps) < size[:, None]
        return (top & flat_masks).sum(1).double() / size.clamp(min=1)


class LocalizationAUC(LocalizationMetric):
    """Area under the ROC curve of the heatmap used as a score that separates the mask's pixels
    (positives) from the others (Fawcett, 2006; as Quantus ``AUC``):
    ``sklearn.metrics.roc_auc_score(mask, h)``, the probability that a random pixel inside
    outranks a random pixel outside (ties count one half). 0.5 is chance, 1 a perfect map; NaN
    for an empty or a full mask."""

    name = "localization_auc"

    def _scores(self, heatmaps, masks, flat_heatmaps, flat_masks):
        from sklearn.metrics import roc_auc_score
        scores = [roc_auc_score(m, h) if 0 < m.sum() < len(m) else float("nan")
                  for h, m in zip(flat_heatmaps.numpy(), flat_masks.numpy())]
        return torch.tensor(scores, dtype=torch.float64)


class TopKIntersection(LocalizationMetric):
    """Top-k intersection (Theiner, Müller-Budack & Ewerth, 2022, "Interpretable Semantic
    Photo Geolocation"; as Quantus ``TopKIntersection``): the fraction of the ``k``
    highest-ranked pixels that lie inside the mask (ties keep row-major order).

    Parameters:
        k: pixels (features): an int, or a fraction in (0, 1) of them (default 0.1, rounded,
            at least 1).
    """

    name = "top_k_intersection"

    def __init__(self, *, k: int | float = 0.1):
        self.k = check_k(k)

    def _scores(self, heatmaps, masks, flat_heatmaps, flat_masks):
        k = top_k_count(self.k, flat_heatmaps.shape[1])
        top = descending_ranks(flat_heatmaps) < k
        return (top & flat_masks).sum(1).double() / k


class Focus(LocalizationMetric):
    """Focus (Arias-Duart, Parés, Garcia-Gasulla & Giménez-Ábalos, 2022, "Focus! Rating XAI
    Methods and Finding Biases"): on a mosaic of 2 x 2 images, of which some show the target
    class, the share of the positive relevance that falls in the target's quadrants,
    ``sum_{target quadrants} max(R, 0) / sum max(R, 0)``; NaN when a map has no positive value.
    Higher is better.

    Mosaic convention: quadrants are split at row ``H // 2`` and column ``W // 2``; a quadrant
    belongs to the target when the mask touches it (so the mask may be the quadrants themselves,
    see :func:`quadrant_masks`, or the target object's own region).
    """

    name = "focus"
    input_kinds = ("images",)

    def _scores(self, heatmaps, masks, flat_heatmaps, flat_masks):
        quadrant = quadrant_of_pixels(*heatmaps.shape[1:]).reshape(-1)  # (H * W,)
        touched = torch.stack([(flat_masks & (quadrant == q)).any(1) for q in range(4)], 1)
        inside = touched[:, quadrant]
        positive = flat_heatmaps.clamp(min=0)
        total = positive.sum(1)
        return torch.where(total > 0, (positive * inside).sum(1) / total.clamp(min=1e-300),
                           torch.full_like(total, float("nan")))


def quadrant_of_pixels(height: int, width: int) -> torch.Tensor:
    """``(H, W)`` quadrant of every pixel of a 2 x 2 mosaic (split at row ``H // 2`` and column
    ``W // 2``): 0 top-left, 1 top-right, 2 bottom-left, 3 bottom-right."""
    rows, cols = torch.arange(height) >= height // 2, torch.arange(width) >= width // 2
    return rows[:, None].long() * 2 + cols[None, :].long()


def quadrant_masks(quadrants: Any, height: int, width: int) -> torch.Tensor:
    """``(N, H, W)`` masks of a 2 x 2 mosaic from ``(N, 4)`` booleans (top-left, top-right,
    bottom-left, bottom-right: which quadrants show the target class), for :class:`Focus`."""
    q = torch.as_tensor(np.asarray(quadrants), dtype=torch.bool)
    if q.ndim != 2 or q.shape[1] != 4:
        raise ValueError(f"quadrants must be (N, 4) booleans (top-left, top-right, bottom-left, "
                         f"bottom-right); got shape {tuple(q.shape)}")
    return q[:, quadrant_of_pixels(height, width)]
