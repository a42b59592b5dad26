"""ReLU backward rules of Guided Backprop and Deconvnet, applied by a torch-function mode.

Inside ``with ReLURuleMode(rule):`` every ReLU call (``nn.ReLU``, ``F.relu``, ``torch.relu``,
``x.relu()``, their in-place forms) runs as ``rule.apply(x)``: the forward is ``relu(x)``, the
backward is the rule's. Other operations, other activations included, keep their gradient (the
methods are defined for ReLU networks, as in Captum). An in-place call is executed out of place
and copied back; the rule saves only a mask, so later in-place writes cannot corrupt it.
"""
from __future__ import annotations

import inspect

import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode


class GuidedReLU(torch.autograd.Function):
    """Guided Backprop (Springenberg et al., 2015): ``R_in = 1[x > 0] * max(R_out, 0)``."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x > 0)
        return x.clamp(min=0)

    @staticmethod
    def backward(ctx, grad):
        (positive,) = ctx.saved_tensors
        return grad.clamp(min=0) * positive


class DeconvReLU(torch.autograd.Function):
    """Deconvnet (Zeiler & Fergus, 2014): ``R_in = max(R_out, 0)``, whatever the input's sign."""

    @staticmethod
    def forward(ctx, x):
        return x.clamp(min=0)

    @staticmethod
    def backward(ctx, grad):
        return grad.clamp(min=0)


RELU = {F.relu: None, torch.relu: False, torch.Tensor.relu: False, F.relu_: True,
        torch.relu_: True, torch.Tensor.relu_: True}
"""The ReLU spellings -> whether they work in place (``None``: read the ``inplace`` argument)."""


class ReLURuleMode(TorchFunctionMode):
    """Route every ReLU call of a forward pass to ``rule`` (an autograd function)."""

    def __init__(self, rule: type[torch.autograd.Function]):
        super().__init__()
        self.rule = rule

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func not in RELU:
            return func(*args, **kwargs)
        in_place = RELU[func]
        if in_place is None:
            arguments = inspect.signature(func).bind(*args, **kwargs).arguments
            in_place = bool(arguments.get("inplace", False))
        out = self.rule.apply(args[0])
        return args[0].copy_(out) if in_place else out
