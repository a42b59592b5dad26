"""CF-CAM: Grad-CAM with channels clustered by DBSCAN and cluster gradients smoothed."""
from __future__ import annotations

from typing import Any

import numpy as np
import torch
from scipy.ndimage import gaussian_filter
from scipy.spatial.distance import pdist
from sklearn.cluster import DBSCAN

from ..._validation import check_non_negative
from .base import BaseCAM, Batch


class CFCAM(BaseCAM):
    """CF-CAM (He, Pan & Yao, 2025, "Cluster Filter Class Activation Mapping for Reliable
    Gradient-Based Interpretability"), per input:

    1. hierarchical importance: channels whose activation L2 norm is at least the 75th
       percentile of the norms are kept with their own Grad-CAM weight ``mean_ij G_kij``;
    2. the other channels (flattened activations) are clustered by DBSCAN with
       ``eps`` = the 25th percentile of their pairwise Euclidean distances (at least 1e-5) and
       ``min_samples = max(2, int(0.05 * count))``; noise channels (label -1) are dropped;
    3. in each cluster the mean gradient map is smoothed by a Gaussian filter
       (``scipy.ndimage.gaussian_filter``, ``sigma`` in layer pixels, mode ``"reflect"``) and
       every member gets the weight ``mean_ij`` of the smoothed map;
    4. the weights of the kept channels go through a softmax (dropped channels weigh 0) and the
       map is ``ReLU(sum_k w_k A_k)``.

    The paper's text gives the steps but we could read no formulas beyond its abstract; the
    percentiles, ``min_samples`` rule, cluster-mean gradient and softmax follow the authors'
    reference code (jerryp-hfut/CF-CAM, ``cfcam.py``), whose filter is bilateral: we use the
    Gaussian filter that the paper's second version names. Two consequences worth knowing: the
    weight is the mean of the smoothed map, so the filter changes it only through boundary
    handling (a mean-preserving filter would leave it unchanged); and the softmax makes every
    kept weight positive, so the map is a convex combination of the kept channels.
    """

    def __init__(self, model: Any, *, sigma: float = 1.0, **params: Any):
        super().__init__(model, **params)
        self.sigma = check_non_negative("sigma", sigma)

    def _channel_weights(self, activations, gradients, batch: Batch) -> torch.Tensor:
        weights = [self._sample_weights(a.flatten(1).double().cpu().numpy(),
                                        g.double().cpu().numpy())
                   for a, g in zip(activations, gradients, strict=True)]
        return torch.as_tensor(np.stack(weights), dtype=activations.dtype,
                               device=activations.device)

    def _sample_weights(self, features: np.ndarray, gradients: np.ndarray) -> np.ndarray:
        """Weights ``(C,)`` from activations ``(C, h*w)`` and gradients ``(C, h, w)``."""
        norms = np.linalg.norm(features, axis=1)
        important = norms >= np.percentile(norms, 75)
        raw = np.full(len(features), np.nan)  # NaN: dropped (DBSCAN noise)
        raw[important] = gradients[important].mean(axis=(1, 2))
        rest = np.flatnonzero(~important)
        labels = cluster_channels(features[rest])
        for label in set(labels.tolist()) - {-1}:
            members = rest[labels == label]
            smoothed = gaussian_filter(gradients[members].mean(axis=0), sigma=self.sigma)
            raw[members] = smoothed.mean()
        kept = ~np.isnan(raw)
        weights = np.zeros(len(features))
        exp = np.exp(raw[kept] - raw[kept].max())
        weights[kept] = exp / exp.sum()
        return weights


def cluster_channels(features: np.ndarray) -> np.ndarray:
    """DBSCAN labels of channels ``(n, h*w)`` with CF-CAM's data-driven parameters; fewer than
    two channels are noise (-1)."""
    if len(features) < 2:
        return np.full(len(features), -1)
    eps = max(float(np.percentile(pdist(features), 25)), 1e-5)
    min_samples = max(2, int(0.05 * len(features)))
    return DBSCAN(eps=eps, min_samples=min_samples).fit_predict(features)
