"""Attention-weighted class-to-patch Grad-CAM of a ViT, in the spirit of DOEI."""
from __future__ import annotations

import torch

from .base import AttentionExplainer, compute_dtype


class AttentionGradCAM(AttentionExplainer):
    """Grad-CAM on the value tokens of the last attention block, weighted by its class-to-patch
    attention. Our formula, in the spirit of DOEI (Zhu et al., 2025, "DOEI: Dual Optimization of
    Embedding Information for Attention-Enhanced Class Activation Maps"), which amplifies the
    tokens the class token attends to and damps the others; DOEI itself is a training-time
    module for segmentation, not an explanation method, so this is not its reproduction.

    With ``V`` the last block's value tokens ``(T, C)`` (heads concatenated, as the output
    projection reads them), ``A_h`` its attention and ``P`` the patch tokens:

    - Grad-CAM channel weights ``w_c = mean_{p in P} dy/dV_pc`` (Selvaraju et al., 2017);
    - Grad-CAM over tokens ``cam_p = ReLU(sum_c w_c V_pc)``;
    - map ``m_p = cam_p * mean_h A_h[0, p]``: weighted by the class token's attention to ``p``.

    One forward pass per batch, one backward pass per target. The attention must be followed by
    its product with the values (``A @ v``, ``F.scaled_dot_product_attention`` or
    ``nn.MultiheadAttention``). Model requirements: :mod:`pellucid.explain.attention.base`.
    """

    def _token_maps(self, layers, scores, nb_targets):
        last = layers[-1]
        if last.values is None:
            raise ValueError("AttentionGradCAM found the last attention but not its product with "
                             "the values (attn @ v); compute it as attn @ v, with "
                             "F.scaled_dot_product_attention or nn.MultiheadAttention")
        prefix = self.nb_prefix_tokens
        attention = last.as_heads(last.weights.detach())
        dtype = compute_dtype(attention)
        to_patches = attention.to(dtype).mean(1)[:, 0, prefix:]           # (B, P)
        values = last.value_tokens(last.values.detach()).to(dtype)        # (B, T, C)
        maps = []
        for (gradients,) in self._gradients(scores, [last.values]):
            weights = last.value_tokens(gradients).to(dtype)[:, prefix:].mean(1)   # (B, C)
            cam = torch.einsum("bpc,bc->bp", values[:, prefix:], weights).clamp_min(0)
            maps.append(cam * to_patches)
        return torch.stack(maps, dim=1)
