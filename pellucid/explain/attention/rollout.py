"""Attention rollout (Abnar & Zuidema, 2020, "Quantifying Attention Flow in Transformers")."""
from __future__ import annotations

from typing import Any

import torch

from ..._validation import check_choice
from .base import AttentionExplainer, compute_dtype

FUSIONS = ("mean", "max", "min")


class AttentionRollout(AttentionExplainer):
    """Attention rollout: how much of each patch flows into the class token through the
    attention of every layer, the residual connections counted as an identity.

    Per layer ``l``: ``A_l = fuse_heads(attention_l)`` (``head_fusion``: ``"mean"`` as in the
    paper, ``"max"`` or ``"min"`` as in jacobgil/vit-explain); optionally the lowest
    ``discard_ratio`` of its ``T * T`` entries are set to 0 (the class token's attention to itself
    is kept, as in vit-explain); then ``Â_l = (A_l + I) / 2`` with rows renormalised to sum to 1,
    and ``R = Â_L ... Â_2 Â_1``. The map is the class-token row of ``R`` over the patches,
    ``R[0, prefix:]``. Our rows are normalised by their own sums (vit-explain divides by
    ``a.sum(dim=-1)`` without ``keepdim``, which broadcasts the row sums over columns).

    Class-agnostic: needs no gradient, one forward pass per batch, and every target gets the
    same map. Model requirements: :mod:`pellucid.explain.attention.base`.
    """

    needs_gradients = False

    def __init__(self, model: Any, *, head_fusion: str = "mean", discard_ratio: float = 0.0,
                 **params: Any):
        super().__init__(model, **params)
        self.head_fusion = check_choice("head_fusion", head_fusion, FUSIONS)
        if isinstance(discard_ratio, bool) or not isinstance(discard_ratio, (int, float)) or not (
                0 <= discard_ratio < 1):
            raise ValueError(f"discard_ratio must be a number in [0, 1), got {discard_ratio!r}")
        self.discard_ratio = discard_ratio

    def _token_maps(self, layers, scores, nb_targets):
        rollout = None
        for layer in layers:
            heads = layer.as_heads(layer.weights)
            fused = getattr(heads.to(compute_dtype(heads)), self.head_fusion)(dim=1)
            fused = fused.values if self.head_fusion != "mean" else fused
            mixed = (self._discard(fused) + torch.eye(fused.shape[-1]).to(fused)) / 2
            mixed = mixed / mixed.sum(-1, keepdim=True)
            rollout = mixed if rollout is None else mixed @ rollout
        patches = rollout[:, 0, self.nb_prefix_tokens:]
        return patches[:, None].expand(-1, nb_targets, -1)

    def _discard(self, fused: torch.Tensor) -> torch.Tensor:
        """The lowest ``discard_ratio`` of each sample's entries set to 0, except ``[0, 0]``."""
        flat = fused.flatten(1)
        count = int(flat.shape[1] * self.discard_ratio)
        if count == 0:
            return fused
        lowest = flat.topk(count, dim=1, largest=False).indices
        drop = torch.zeros_like(flat, dtype=torch.bool).scatter_(1, lowest, True)
        drop[:, 0] = False
        return flat.masked_fill(drop, 0).reshape(fused.shape)
