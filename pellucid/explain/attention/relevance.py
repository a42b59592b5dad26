"""Gradient-weighted attention relevance (Chefer, Gur & Wolf, 2021)."""
from __future__ import annotations

import torch

from .base import AttentionExplainer, compute_dtype


class AttentionRelevance(AttentionExplainer):
    """Relevance propagated through gradient-weighted attention (Chefer, Gur & Wolf, 2021,
    "Generic Attention-model Explainability for Interpreting Bi-Modal and Encoder-Decoder
    Transformers", eqs. 5-6, the gradient-only successor of their "Transformer Interpretability
    Beyond Attention Visualization"):

    ``R = I``; for each block in order, ``Ā = mean_heads ReLU(dy/dA ⊙ A)`` and ``R = R + Ā R``.
    The map is the class-token row over the patches, ``R[0, prefix:]``. ``y`` is the target's
    score (the logit for a classifier): one forward pass per batch, one backward pass per target.
    Model requirements: :mod:`pellucid.explain.attention.base`.
    """

    def _token_maps(self, layers, scores, nb_targets):
        weights = [layer.weights for layer in layers]
        maps = []
        for gradients in self._gradients(scores, weights):
            relevance = None
            for layer, a, g in zip(layers, weights, gradients, strict=True):
                a = layer.as_heads(a.detach())
                dtype = compute_dtype(a)
                mixed = (layer.as_heads(g).to(dtype) * a.to(dtype)).clamp_min(0).mean(1)
                if relevance is None:
                    relevance = torch.eye(mixed.shape[-1]).to(mixed).expand_as(mixed)
                relevance = relevance + mixed @ relevance
            maps.append(relevance[:, 0, self.nb_prefix_tokens:])
        return torch.stack(maps, dim=1)
