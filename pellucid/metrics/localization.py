"""Localization metrics: does the heatmap point at the ground-truth region?

They need no model: ``metric(heatmaps, masks)`` with heatmaps ``(N, H, W)`` (``(N, C, H, W)`` is
summed over channels) and boolean ground-truth masks ``(N, H, W)`` (any non-zero value is inside);
RelevanceMass and RelevanceRankAccuracy also take tabular ``(N, F)`` heatmaps with ``(N, F)``
masks of the truly relevant features. A sample with an empty mask scores NaN (left out of
``mean``). Higher is better for all three.
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from .._validation import as_float_tensor, check_finite
from .._scoring import descending_ranks
from .base import Metric, MetricResult


def as_mask(masks: Any) -> torch.Tensor:
    """A boolean tensor of ground-truth masks (bool or numbers; non-zero is inside)."""
    if isinstance(masks, torch.Tensor):
        return masks.detach().cpu() != 0
    if isinstance(masks, (np.ndarray, list, tuple)):
        return torch.as_tensor(np.asarray(masks) != 0)
    raise TypeError(f"masks must be a torch.Tensor or numpy array, got {type(masks).__name__}")


class LocalizationMetric(Metric):
    """``metric(heatmaps, masks) -> MetricResult``; subclasses implement ``_scores``."""

    images_only = False

    def __call__(self, heatmaps: Any, masks: Any) -> MetricResult:
        h = as_float_tensor(heatmaps, "heatmaps").cpu()
        m = as_mask(masks)
        if h.ndim == 4 and m.ndim == 3 and h.shape[:1] + h.shape[2:] == m.shape:
            h = h.sum(1)
        ranks = (3,) if self.images_only else (2, 3)
        if h.ndim not in ranks:
            expected = " or ".join({2: "(N, F)", 3: "(N, H, W)"}[r] for r in ranks)
            raise ValueError(f"{type(self).__name__} needs heatmaps {expected}; got shape "
                             f"{tuple(h.shape)}")
        if h.shape != m.shape:
            raise ValueError(f"masks must have the heatmaps' shape {tuple(h.shape)}; "
                             f"got {tuple(m.shape)}")
        if len(h) == 0:
            raise ValueError("heatmaps hold no sample (N = 0)")
        check_finite(h, "heatmaps")
        flat_h, flat_m = h.reshape(len(h), -1).double(), m.reshape(len(m), -1)
        scores = self._scores(h, m, flat_h, flat_m)
        scores = torch.where(flat_m.any(1), scores, torch.full_like(scores, float("nan")))
        return MetricResult(self.name, scores.numpy(), higher_is_better=True,
                            details=self._details(h))

    evaluate = __call__

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

    With several equal maxima the first in row-major order is the one pointed at.
    """

    name = "pointing_game"
    images_only = True

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
        peak = flat_heatmaps.argmax(1)
        rows = torch.arange(height)[None, :, None] - (peak // width)[:, None, None]
        cols = torch.arange(width)[None, None, :] - (peak % width)[:, None, None]
        near = rows**2 + cols**2 <= tolerance**2
        return (near & masks).flatten(1).any(1).double()

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
