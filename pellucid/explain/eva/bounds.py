"""The graph of a bounded forward pass and its CROWN back-substitution.

Every tensor the model computes from the input box is a :class:`Node` with interval bounds
``lower <= value <= upper`` (interval bound propagation, IBP: Gowal et al., 2018) and, for the
operations with a linear form, a ``backward`` rule. CROWN (Zhang et al., 2018) bounds a linear
function ``spec . y`` of a node by substituting the layers backwards: an affine layer
``y = A z + b`` turns ``Lambda . y`` into ``(Lambda A) . z + Lambda . b``; a ReLU is replaced by
its linear relaxation (upper line ``u / (u - l) (z - l)``, lower line ``alpha z`` with
``alpha = 1`` where ``u > -l``, else 0) on each unstable neuron, a max-pool by
``x_j <= y <= max u``; the input node ends the substitution with its box:
``min over [l, u] of Lambda . z = Lambda+ . l + Lambda- . u``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable

import torch

ELEMENT_BUDGET = 1 << 24
"""Most elements of one back-substituted coefficient tensor: the rows of an identity
specification (one per unstable neuron) are substituted in chunks of that size."""


@dataclass(eq=False)
class Node:
    """A tensor of the bounded pass: its bounds ``(n, *shape)``, the nodes it is computed from
    and its CROWN rule ``backward(Lambda) -> ([Lambda of each parent], bias)`` where
    ``Lambda`` is ``(2, S, n, *shape)`` (index 0 substituted for the lower bound, 1 for the
    upper) and the bias ``(2, S, n)``; ``backward=None``: substitution stops here."""

    index: int
    lower: torch.Tensor
    upper: torch.Tensor
    parents: tuple = ()
    backward: Callable | None = field(default=None, repr=False)


def affine_backward(op: Callable[[torch.Tensor], torch.Tensor], in_shape: tuple
                    ) -> Callable:
    """The CROWN rule of an affine ``op``: ``Lambda A`` by one batched vector-Jacobian product
    (autograd of ``op`` at 0, which is exact for an affine map) and the bias ``Lambda . op(0)``."""
    def backward(lam: torch.Tensor):
        with torch.inference_mode(False), torch.enable_grad():
            z = torch.zeros(in_shape, dtype=lam.dtype, device=lam.device, requires_grad=True)
            y = op(z)
            flat = lam.reshape(-1, *y.shape)
            (grad,) = torch.autograd.grad(y, z, flat, is_grads_batched=True)
        bias = (flat * y.detach()).flatten(2).sum(2)
        return [grad.reshape(*lam.shape[:2], *in_shape)], bias.reshape(lam.shape[:3])
    return backward


def sum_backward(signs: tuple[float, ...], shapes: tuple[tuple, ...]) -> Callable:
    """The rule of ``a + sign * b`` (residual additions): ``Lambda`` goes to each operand,
    summed over the dimensions it was broadcast along."""
    def backward(lam: torch.Tensor):
        parts = [unbroadcast(sign * lam, shape) for sign, shape in zip(signs, shapes)]
        return parts, lam.new_zeros(lam.shape[:3])
    return backward


def unbroadcast(lam: torch.Tensor, shape: tuple) -> torch.Tensor:
    """``Lambda (2, S, *out)`` summed down to ``(2, S, *shape)`` (``shape``, with the batch
    dimension, broadcast to ``out``)."""
    extra = lam.ndim - 2 - len(shape)
    lam = lam.sum(dim=tuple(range(2, 2 + extra))) if extra else lam
    dims = tuple(2 + d for d, size in enumerate(shape) if size == 1 and lam.shape[2 + d] != 1)
    return lam.sum(dim=dims, keepdim=True) if dims else lam


def relu_relaxation(lower: torch.Tensor, upper: torch.Tensor):
    """Slopes and intercept of the ReLU's upper line and the slope of its lower line on
    ``[lower, upper]``: exact where the neuron is stable, the CROWN lines where it is not."""
    unstable = (lower < 0) & (upper > 0)
    width = torch.where(unstable, upper - lower, torch.ones_like(upper))
    up_slope = torch.where(unstable, upper / width, (lower >= 0).to(upper.dtype))
    up_intercept = torch.where(unstable, -up_slope * lower, torch.zeros_like(upper))
    low_slope = torch.where(unstable, (upper > -lower).to(upper.dtype), up_slope)
    return up_slope, up_intercept, low_slope


def relu_backward(lower: torch.Tensor, upper: torch.Tensor) -> Callable:
    """The CROWN rule of a ReLU whose input lies in ``[lower, upper]``."""
    up_slope, up_intercept, low_slope = relu_relaxation(lower, upper)

    def backward(lam: torch.Tensor):
        pos, neg = lam.clamp(min=0), lam.clamp(max=0)
        to_lower = pos[0] * low_slope + neg[0] * up_slope  # a lower bound of lam . relu(z)
        to_upper = pos[1] * up_slope + neg[1] * low_slope
        bias = torch.stack([(neg[0] * up_intercept).flatten(2).sum(2),
                            (pos[1] * up_intercept).flatten(2).sum(2)])
        return [torch.stack([to_lower, to_upper])], bias
    return backward


def max_pool_backward(indices: torch.Tensor, upper: torch.Tensor, in_shape: tuple
                      ) -> Callable:
    """The rule of a max-pool: ``y >= x[indices]`` (the input with the largest lower bound in
    each window) and ``y <= upper`` (the largest upper bound, a constant)."""
    n, c = in_shape[:2]
    flat_indices = indices.reshape(n, c, -1)

    def backward(lam: torch.Tensor):
        pos, neg = lam.clamp(min=0), lam.clamp(max=0)
        linear = torch.stack([pos[0], neg[1]]).flatten(4)  # the parts that read y >= x_j
        to_x = linear.new_zeros(*linear.shape[:4], math.prod(in_shape[2:]))
        to_x.scatter_add_(-1, flat_indices.expand_as(linear), linear)
        bias = torch.stack([(neg[0] * upper).flatten(2).sum(2),
                            (pos[1] * upper).flatten(2).sum(2)])
        return [to_x.reshape(*lam.shape[:2], *in_shape)], bias
    return backward


def concretize(lam: torch.Tensor, lower: torch.Tensor, upper: torch.Tensor) -> torch.Tensor:
    """``(2, S, n)``: the least of ``lam[0] . z`` and the most of ``lam[1] . z`` over the box."""
    pos, neg = lam.clamp(min=0), lam.clamp(max=0)
    least = (pos[0] * lower + neg[0] * upper).flatten(2).sum(2)
    most = (pos[1] * upper + neg[1] * lower).flatten(2).sum(2)
    return torch.stack([least, most])


def crown(nodes: list[Node], node: Node, spec: torch.Tensor
          ) -> tuple[torch.Tensor, torch.Tensor]:
    """Lower and upper bounds ``(S, n)`` of ``spec . node`` (``spec``: ``(S, n, *shape)``) by
    back-substitution through ``nodes`` (in the order they were computed)."""
    pending = {node.index: spec.unsqueeze(0).expand(2, *spec.shape)}
    total = spec.new_zeros(2, *spec.shape[:2])
    for current in reversed(nodes[:node.index + 1]):
        lam = pending.pop(current.index, None)
        if lam is None:
            continue
        if current.backward is None:
            total = total + concretize(lam, current.lower, current.upper)
            continue
        parts, bias = current.backward(lam)
        total = total + bias
        for parent, part in zip(current.parents, parts):
            pending[parent.index] = pending[parent.index] + part \
                if parent.index in pending else part
    return total[0], total[1]


def tighten(nodes: list[Node], node: Node) -> None:
    """Replace the IBP bounds of ``node`` by their intersection with CROWN's, for the neurons
    that are unstable (``lower < 0 < upper``) in some row; the identity specification is
    substituted in chunks of at most :data:`ELEMENT_BUDGET` elements."""
    if node.backward is None or all(parent.backward is None for parent in node.parents):
        return  # IBP is already exact for one affine map of a box
    n = node.lower.shape[0]
    unstable = ((node.lower < 0) & (node.upper > 0)).reshape(n, -1).any(0).nonzero()[:, 0]
    if not len(unstable):
        return
    widest = max(current.lower[0].numel() for current in nodes[:node.index + 1])
    chunk = max(1, ELEMENT_BUDGET // (2 * n * widest))
    lower, upper = node.lower.reshape(n, -1).clone(), node.upper.reshape(n, -1).clone()
    width = lower.shape[1]
    for start in range(0, len(unstable), chunk):
        rows = unstable[start:start + chunk]
        spec = lower.new_zeros(len(rows), n, width)
        spec[torch.arange(len(rows)), :, rows] = 1
        least, most = crown(nodes, node, spec.reshape(len(rows), n, *node.lower.shape[1:]))
        lower[:, rows] = torch.maximum(lower[:, rows], least.T)
        upper[:, rows] = torch.minimum(upper[:, rows], most.T)
    node.lower, node.upper = lower.view_as(node.lower), upper.view_as(node.upper)
