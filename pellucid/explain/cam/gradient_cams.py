"""Gradient CAMs: one backward pass, ``A`` and ``G = dy_c/dA`` of the target layer.

``y_c`` is the model's output for the target (the logit for a classifier). Sums and means run
over the spatial positions ``(i, j)`` of channel ``k``; every map is ReLU-ed, upsampled and
(optionally) normalized by :class:`~pellucid.explain.cam.base.BaseCAM`.
"""
from __future__ import annotations

import torch

from .base import BaseCAM, Batch, safe_divide


class GradCAM(BaseCAM):
    """Grad-CAM (Selvaraju et al., 2017): ``ReLU(sum_k w_k A_k)``, ``w_k = mean_ij G_kij``."""

    def _channel_weights(self, activations, gradients, batch: Batch) -> torch.Tensor:
        return gradients.mean(dim=(2, 3))


class GradCAMPlusPlus(BaseCAM):
    """Grad-CAM++ (Chattopadhyay et al., 2018), closed form for an exponential output
    ``Y = exp(y_c)``: ``alpha_kij = G^2 / (2 G^2 + sum_ab A_kab * G^3)`` (0 where the denominator
    is 0) and ``w_k = sum_ij alpha_kij ReLU(G_kij)``. The common factor ``exp(y_c)`` of
    ``dY/dA`` is left out, as in pytorch-grad-cam (it only scales each map)."""

    def _channel_weights(self, activations, gradients, batch: Batch) -> torch.Tensor:
        g2 = gradients.pow(2)
        activation_sums = activations.sum(dim=(2, 3), keepdim=True)
        alpha = safe_divide(g2, 2 * g2 + activation_sums * g2 * gradients)
        return (alpha * torch.relu(gradients)).sum(dim=(2, 3))


class XGradCAM(BaseCAM):
    """XGrad-CAM (Fu et al., 2020): ``w_k = sum_ij (A_kij / sum_ab A_kab) G_kij`` (0 for a
    channel whose activations sum to 0)."""

    def _channel_weights(self, activations, gradients, batch: Batch) -> torch.Tensor:
        return safe_divide((activations * gradients).sum(dim=(2, 3)),
                            activations.sum(dim=(2, 3)))


class LayerCAM(BaseCAM):
    """LayerCAM (Jiang et al., 2021): ``ReLU(sum_k ReLU(G_k) * A_k)``, element-wise weights."""

    def _layer_map(self, activations, gradients, batch: Batch) -> torch.Tensor:
        return (torch.relu(gradients) * activations).sum(dim=1)


class HiResCAM(BaseCAM):
    """HiResCAM (Draelos & Carin, 2020): ``ReLU(sum_k G_k * A_k)``, element-wise product of
    gradients and activations (Grad-CAM without the spatial averaging of the gradients)."""

    def _layer_map(self, activations, gradients, batch: Batch) -> torch.Tensor:
        return (gradients * activations).sum(dim=1)
