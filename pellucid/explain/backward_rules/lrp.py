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
    "epsilon": ("epsilon", "epsilon", None),
    "gamma": ("gamma", "gamma", None),
    "zplus": ("zplus", "zplus", None),
    "alpha2_beta1": ("alpha_beta", "alpha_beta", None),
    "epsilon_plus": ("zplus", "epsilon", None),
    "epsilon_gamma": ("gamma", "epsilon", None),
    "epsilon_alpha2_beta1": ("alpha_beta", "epsilon", None),
    "epsilon_plus_flat": ("zplus", "epsilon", "flat"),
    "epsilon_gamma_box": ("gamma", "epsilon", "zbox"),
}
"""composite -> (rule of convolutions, rule of linear layers, rule of the input layers or
``None``: theirs by type), as zennit's presets of the same names."""


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
            epsilon on linear layers), or ``"epsilon_plus_flat"``, ``"epsilon_gamma_box"``
            (zennit's presets: as the two before, with the flat or the z^B rule on the input
            layers, the convolutions/linear layers that take the input itself).
        epsilon: the stabiliser of the epsilon rule (``0``: LRP-0).
        gamma: the weight of the positive part in the gamma rule.
        low, high: the bounds of the inputs for the z^B rule (``"epsilon_gamma_box"`` only, and
            required there): numbers or tensors broadcastable to one input (e.g. per channel
            ``(C, 1, 1)``), ``low <= x <= high``.
        **common: ``batch_size``, ``device``, ``progress``.

    Batch norm after a convolution/linear layer is folded into it. Conservation: ``sum_i R_i =
    f_c(x)`` for LRP-0/z+/flat on bias-free ReLU networks; biases, epsilon, unfolded batch-norm
    shifts and the LN-rule absorb relevance (measured per architecture in
    ``benchmarks/bench_deeplift.py``). Heatmaps: relevance summed over channels.
    """

    channel_reduction = "sum"

    def __init__(self, model: Any, *, composite: str = "epsilon_plus", epsilon: float = 1e-6,
                 gamma: float = 0.25, low: Any = None, high: Any = None, **common: Any):
        super().__init__(model, **common)
        self.composite = check_choice("composite", composite, tuple(COMPOSITES))
        if not (isinstance(epsilon, (int, float)) and epsilon >= 0):
            raise ValueError(f"epsilon must be a number >= 0, got {epsilon!r}")
        if not (isinstance(gamma, (int, float)) and gamma >= 0):
            raise ValueError(f"gamma must be a number >= 0, got {gamma!r}")
        boxed = COMPOSITES[composite][2] == "zbox"
        if boxed and (low is None or high is None):
            raise ValueError(f"composite {composite!r} needs the input bounds low and high "
                             f"(numbers or tensors broadcastable to one input), got low={low!r}, "
                             f"high={high!r}")
        if not boxed and (low is not None or high is not None):
            raise ValueError(f"low and high are the bounds of the z^B rule of "
                             f"'epsilon_gamma_box'; composite {composite!r} takes none")
        self.epsilon, self.gamma, self.low, self.high = epsilon, gamma, low, high

    def _rule(self, name: str | None):
        return {"epsilon": partial(lrp_rules.epsilon, eps=self.epsilon),
                "gamma": partial(lrp_rules.gamma, gamma=self.gamma),
                "zplus": lrp_rules.zplus,
                "alpha_beta": partial(lrp_rules.alpha_beta, alpha=2.0, beta=1.0),
                "flat": lrp_rules.flat, None: None}[name]

    def _bounds(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``low`` and ``high`` as float32 tensors, checked against the inputs."""
        low, high = (torch.as_tensor(bound, dtype=torch.float32) for bound in (self.low,
                                                                                self.high))
        for name, bound in (("low", low), ("high", high)):
            try:
                fits = torch.broadcast_shapes(bound.shape, x.shape[1:]) == x.shape[1:]
            except RuntimeError:
                fits = False
            if not fits:
                raise ValueError(f"{name} must broadcast to one input of shape "
                                 f"{tuple(x.shape[1:])}, got shape {tuple(bound.shape)}")
        x = x.float().cpu()
        if (x < low).any() or (x > high).any():
            raise ValueError(f"the z^B rule needs low <= x <= high; the inputs range over "
                             f"[{x.min().item():.4g}, {x.max().item():.4g}]")
        return low, high

    def _attributions(self, x: torch.Tensor, scorer: Scorer) -> torch.Tensor:
        conv, linear, first = COMPOSITES[self.composite]
        conv, linear = self._rule(conv), self._rule(linear)
        if first == "zbox":
            low, high = self._bounds(x)
            first = partial(lrp_rules.zbox, low=low, high=high)
        else:
            first = self._rule(first)
        relevance = []
        for s in iter_slices(len(x), self.batch_size, self.progress, type(self).__name__):
            rows = torch.arange(s.start, s.stop)
            mode = LRPMode(conv, linear, first)
            with mode:
                grads, _ = score_gradient(lambda carrier: scorer.with_grad(
                    mode.inputs(x[s], carrier), rows)[:, 0], torch.ones_like(x[s]),
                    self._model.device)
            if first is not None and mode.input_layers == 0:
                raise ValueError(f"composite {self.composite!r} applies its input-layer rule to "
                                 "the convolutions/linear layers that take the input itself; "
                                 "this model transforms the input before any of them")
            relevance.append(grads)
        return torch.cat(relevance)
