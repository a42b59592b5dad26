"""IROF, Iterative Removal Of Features (Rieger & Hansen, 2020, "IROF: a low resource evaluation
metric for explanation methods").

Each input is cut into feature groups (superpixels: default SLIC, :func:`pellucid.features.slic`
with ``n_segments=50``; tabular: one feature per group; any ``feature_mask`` of
:mod:`pellucid.features`). The groups are ranked by their *mean* heatmap value, decreasing (ties:
the lower label first), and removed one after the other, all pixels of a group (every channel)
replaced by the ``baseline`` (default ``"mean"``: the image's channel mean; tabular: the batch's
feature mean). With ``s_k`` the target's score (softmax probability by default) after removing
the top ``k`` of the ``M`` groups,

    IROF = 1 - AUC_k( s_k / s_0 ),    k / M in [0, 1] (trapezoid rule, ``M + 1`` points)

the area *over* the normalized curve: higher is better (the score falls fast when the groups
ranked first go). NaN where ``s_0 <= 0``. ``curves`` ``(N, M + 1)`` and ``fractions`` come back
when every input has the same ``M``; ``details["curves"]`` always holds each input's curve.
"""
from __future__ import annotations

import functools
from typing import Any

import numpy as np
import torch

from .._baselines import check_baseline, make_baseline
from .._batching import score_generated
from .._scoring import trapezoid_auc
from ..features import resolve_feature_mask, slic
from .base import MetricResult, ModelMetric

DEFAULT_SEGMENTS = 50


class Irof(ModelMetric):
    """IROF (Rieger & Hansen, 2020); see the module docstring.

    Parameters:
        feature_mask: the groups: ``None`` (SLIC, ``DEFAULT_SEGMENTS`` superpixels per image;
            one group per feature for tabular data), a mask or a callable ``f(inputs) -> mask``
            (:func:`pellucid.features.resolve_feature_mask`).
        baseline: what removed groups become: a number, a tensor, ``"mean"`` (default) or
            ``"blur"``.
        probabilities: softmax probability of the target (True, default, as the paper) or the
            raw output.
    """

    name = "irof"
    higher_is_better = True

    def __init__(self, model: Any, *, feature_mask: Any = None, baseline: Any = "mean",
                 probabilities: bool = True, **common: Any):
        super().__init__(model, **common)
        self.feature_mask = feature_mask
        self.baseline = check_baseline(baseline)
        self.probabilities = bool(probabilities)

    def _score(self, x, heatmaps, scorer):
        mask = self.feature_mask
        if mask is None and x.ndim == 4:
            mask = functools.partial(slic, n_segments=DEFAULT_SEGMENTS)
        groups = resolve_feature_mask(mask, x)  # (N, *space), labels 0 .. M_i - 1
        flat_groups = groups.reshape(len(x), -1)
        counts = flat_groups.max(1).values + 1
        # each pixel's removal step: the position of its group when ranked by mean heatmap
        position = torch.empty_like(flat_groups)
        flat_heat = heatmaps.reshape(len(x), -1).double()
        for i, (labels, m) in enumerate(zip(flat_groups, counts.tolist())):
            means = torch.zeros(m, dtype=torch.float64).index_add_(0, labels, flat_heat[i])
            means /= torch.bincount(labels, minlength=m)
            order = torch.argsort(means, descending=True, stable=True)
            position[i] = torch.empty_like(order).scatter_(0, order, torch.arange(m))[labels]
        position = position.view(groups.shape)
        points = counts + 1
        item_sample = torch.repeat_interleave(torch.arange(len(x)), points)
        item_step = torch.cat([torch.arange(p) for p in points.tolist()])
        substrate = make_baseline(self.baseline, x)
        spatial = (-1, 1, *x.shape[2:]) if x.ndim == 4 else (-1, x.shape[1])

        def make_inputs(s: slice) -> tuple[torch.Tensor, torch.Tensor]:
            samples, steps = item_sample[s], item_step[s]
            removed = position[samples] < steps.view(-1, *[1] * (position.ndim - 1))
            return torch.where(removed.view(spatial), substrate[samples], x[samples]), samples

        scores = score_generated(scorer, int(points.sum()), make_inputs,
                                 batch_size=self.batch_size, progress=self.progress,
                                 desc=self.name)[:, 0].double()
        curves, values = [], np.empty(len(x))
        for i, curve in enumerate(scores.split(points.tolist())):
            first = float(curve[0])
            curve = (curve / first if first > 0 else torch.full_like(curve, np.nan)).numpy()
            curves.append(curve)
            values[i] = 1.0 - trapezoid_auc(curve, np.linspace(0, 1, len(curve)))
        same = bool((counts == counts[0]).all())
        return MetricResult(
            self.name, values, curves=np.stack(curves) if same else None,
            fractions=np.linspace(0, 1, int(points[0])) if same else None,
            higher_is_better=True, details={"curves": curves, "n_groups": counts.numpy()})
