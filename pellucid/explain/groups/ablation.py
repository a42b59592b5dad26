"""Feature ablation over groups (Captum's FeatureAblation with a ``feature_mask``; Zeiler &
Fergus's occlusion with arbitrary regions)."""
from __future__ import annotations

from typing import Any

import torch

from .base import GroupExplainer


class FeatureAblation(GroupExplainer):
    """Feature ablation: the value of group ``g`` is ``f(x) - f(x with g replaced by the
    baseline)``, given to each of its pixels / columns (parameters:
    :class:`~pellucid.explain.groups.base.GroupExplainer`). For an additive model
    ``f(x) = sum_i w_i x_i`` it is ``w_g . (x_g - b_g)`` exactly.

    Cost: ``M + 1`` forward passes per input (``M`` groups), ``batch_size`` at a time, every
    target from the same passes. Deterministic (``seed`` unused).
    """

    def _design(self, m: int, generator: torch.Generator) -> tuple[torch.Tensor, Any]:
        # row 0 keeps every group (the input itself), row 1 + g removes group g
        return torch.cat([torch.ones(1, m, dtype=torch.bool),
                          ~torch.eye(m, dtype=torch.bool)]), None

    def _solve(self, z: torch.Tensor, info: Any, scores: torch.Tensor
               ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        return scores[:1] - scores[1:], {"prediction": scores[0]}
