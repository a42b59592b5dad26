"""Eigen-CAM: the first principal component of the activations, class-agnostic."""
from __future__ import annotations

import torch

from .base import BaseCAM, Batch


class EigenCAM(BaseCAM):
    """Eigen-CAM (Muhammad & Yeasin, 2020): the activations of one input, as ``h*w`` points in
    ``C`` dimensions, centred per channel and projected on their first principal component
    ``v`` (first right-singular vector): ``map_ij = sum_k v_k (A_kij - mean_ab A_kab)``, then
    ReLU. The paper projects on the first right-singular vector of the activation matrix; we
    centre it first, as a principal component is defined and as pytorch-grad-cam's
    ``get_2d_projection`` does.

    The sign of a singular vector is arbitrary; it is fixed so that the map correlates
    positively with the activation sum ``sum_k A_k`` (the map is negated when the covariance
    over positions is negative). Needs no gradient and ignores ``targets``: every class gets the
    same map.
    """

    needs_gradients = False

    def _layer_map(self, activations, gradients, batch: Batch) -> torch.Tensor:
        b, _, h, w = activations.shape
        points = activations.flatten(2).transpose(1, 2).double()  # (B, h*w, C)
        centred = points - points.mean(1, keepdim=True)
        first = torch.linalg.svd(centred, full_matrices=False).Vh[:, 0]  # (B, C)
        projection = torch.einsum("bpc,bc->bp", centred, first)
        total = points.sum(2)
        covariance = (projection * (total - total.mean(1, keepdim=True))).sum(1)
        sign = torch.where(covariance < 0, -1.0, 1.0).to(projection)
        return (projection * sign[:, None]).reshape(b, h, w).to(activations.dtype)
