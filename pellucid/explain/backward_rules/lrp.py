"""LRP: layer-wise relevance propagation with per-layer-type rules (composites)."""
from __future__ import annotations

from functools import partial
from typing import Any

import torch

from ..._batching import iter_slices, score_gradient
from ..._scorer import Scorer
from ..._validation import check_choice
from ..base import WhiteBoxExplainer
from . import lrp_rules
from .lrp_rules import LRPMode

COMPOSITES = {
    "epsilon": ("epsilon", "epsilon"),
    "gamma": ("gamma", "gamma"),
    "zplus": ("zplus", "zplus"),
    "alpha2_beta1": ("alpha_beta", "alpha_beta"),
    "epsilon_plus": ("zplus", "epsilon"),
    "epsilon_gamma": ("gamma", "epsilon"),
    "epsilon_alpha2_beta1": ("alpha_beta", "epsilon"),
}
"""composite -> (rule of convolutions, rule of linear layers), as zennit's presets (without
their flat/box rule for the first layer)."""


class LRP(WhiteBoxExplainer):
    """Layer-wise relevance propagation (Bach et al., 2015; Montavon et al., 2019): relevance
    ``R = f_c(x)`` at the output redistributed layer by layer; ``R_i = x_i * g_i`` with the
    modified gradient ``g`` of :mod:`~pellucid.explain.backward_rules.lrp_rules` (which lists
    the rules of every operation). No module hook; residual, attention and normalisation blocks
    are handled by the fixed rules listed there.

    Parameters:
        composite: rules per layer type, one of ``COMPOSITES``: ``"epsilon"`` (LRP-epsilon
            everywhere), ``"gamma"``, ``"zplus"``, ``"alpha2_beta1"``, or ``"epsilon_plus"``,
            ``"epsilon_gamma"``, ``"epsilon_alpha2_beta1"`` (that rule on convolutions,
            epsilon on linear layers).
        epsilon: the stabiliser of the epsilon rule (``0``: LRP-0).
        gamma: the weight of the positive part in the gamma rule.
        **common: ``batch_size``, ``device``, ``progress``.

    Conservation: ``sum_i R_i = f_c(x)`` for LRP-0/z+ on bias-free ReLU networks; biases,
    epsilon, batch-norm shifts and the LN-rule absorb relevance (measured per architecture in
    ``tests/test_lrp.py``). Heatmaps: relevance summed over channels.
    """

    channel_reduction = "sum"

    def __init__(self, model: Any, *, composite: str = "epsilon_plus", epsilon: float = 1e-6,
                 gamma: float = 0.25, **common: Any):
        super().__init__(model, **common)
        self.composite = check_choice("composite", composite, tuple(COMPOSITES))
        if not (isinstance(epsilon, (int, float)) and epsilon >= 0):
            raise ValueError(f"epsilon must be a number >= 0, got {epsilon!r}")
        if not (isinstance(gamma, (int, float)) and gamma >= 0):
            raise ValueError(f"gamma must be a number >= 0, got {gamma!r}")
        self.epsilon, self.gamma = epsilon, gamma

    def _rule(self, name: str):
        return {"epsilon": partial(lrp_rules.epsilon, eps=self.epsilon),
                "gamma": partial(lrp_rules.gamma, gamma=self.gamma),
                "zplus": lrp_rules.zplus,
                "alpha_beta": partial(lrp_rules.alpha_beta, alpha=2.0, beta=1.0)}[name]

    def _attributions(self, x: torch.Tensor, scorer: Scorer) -> torch.Tensor:
        conv, linear = (self._rule(name) for name in COMPOSITES[self.composite])
        relevance = []
        for s in iter_slices(len(x), self.batch_size, self.progress, type(self).__name__):
            rows = torch.arange(s.start, s.stop)
            with LRPMode(conv, linear):
                grads, _ = score_gradient(lambda leaf: scorer.with_grad(leaf, rows)[:, 0],
                                          x[s], self._model.device)
            relevance.append(x[s].float().cpu() * grads)
        return torch.cat(relevance)
