"""Verified bounds of a model's outputs over a box of inputs (public, also for tests).

``output_bounds(module, lower, upper)`` runs ``module`` once inside
:class:`~.mode.BoundMode` and returns, for every row, bounds of each output (or of linear
functions of the outputs, ``spec``) valid for every input ``lower <= x <= upper``:
``method="ibp"`` (interval bound propagation), ``"crown-ibp"`` (CROWN back-substitution from the
output, IBP bounds for the hidden ReLUs) or ``"crown"`` (every unstable ReLU input tightened by
CROWN first). The CROWN results are intersected with IBP's, so they are never looser.
"""
from __future__ import annotations

from typing import Any, Callable

import torch

from ..._validation import check_choice
from .bounds import Node, crown
from .mode import BoundMode

METHODS = ("ibp", "crown-ibp", "crown")


def bounded_pass(module: torch.nn.Module, lower: torch.Tensor, upper: torch.Tensor,
                 method: str, *, forward_kwargs: dict | None = None,
                 output: Callable[[Any], torch.Tensor] = lambda outputs: outputs
                 ) -> tuple[BoundMode, Node]:
    """Run ``module`` on the box (in its dtype, on its device) and return the mode (its
    recorded nodes) and the node of ``output(outputs)`` reshaped to ``(n, -1)``."""
    check_choice("bounds", method, METHODS)
    mode = BoundMode(method)
    with torch.inference_mode(False), torch.no_grad(), mode:
        tensor = output(module(mode.input(lower, upper), **(forward_kwargs or {})))
        flat = tensor.reshape(len(lower), -1) if isinstance(tensor, torch.Tensor) else None
    node = mode.node_of(flat)
    if node is None:
        raise NotImplementedError("Eva could not follow the model's output back to its input: "
                                  "an operation it cannot bound was used outside torch "
                                  "functions (see pellucid.explain.eva.mode)")
    return mode, node


def output_bounds(module: torch.nn.Module, lower: Any, upper: Any, *, method: str = "crown",
                  spec: torch.Tensor | None = None, forward_kwargs: dict | None = None
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """Bounds ``(n, K)`` of the outputs (flattened per row) over the box ``[lower, upper]``
    (``(n, ...)`` each), or ``(n, S)`` of ``spec @ outputs`` for ``spec`` ``(S, K)`` or
    ``(n, S, K)``."""
    lower, upper = torch.as_tensor(lower), torch.as_tensor(upper)
    if lower.shape != upper.shape or not bool((lower <= upper).all()):
        raise ValueError(f"the box needs lower <= upper of one shape; got shapes "
                         f"{tuple(lower.shape)} and {tuple(upper.shape)}")
    parameter = next(module.parameters(), None)
    if parameter is not None:
        lower, upper = (t.to(parameter.device, parameter.dtype) for t in (lower, upper))
    mode, node = bounded_pass(module, lower, upper, method, forward_kwargs=forward_kwargs)
    n, k = node.lower.shape
    spec = torch.eye(k, dtype=node.lower.dtype) if spec is None else torch.as_tensor(spec)
    spec = spec.to(node.lower).expand(n, *spec.shape[-2:])
    return linear_bounds(mode, node, spec)


def linear_bounds(mode: BoundMode, node: Node, spec: torch.Tensor
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """Bounds ``(n, S)`` of ``spec (n, S, K) @ node``: IBP (the positive and negative parts of
    ``spec`` on the node's box), intersected with CROWN's unless ``method="ibp"``."""
    pos, neg = spec.clamp(min=0), spec.clamp(max=0)
    lower = (pos @ node.lower[:, :, None] + neg @ node.upper[:, :, None])[..., 0]
    upper = (pos @ node.upper[:, :, None] + neg @ node.lower[:, :, None])[..., 0]
    if mode.method == "ibp":
        return lower, upper
    least, most = crown(mode.nodes, node, spec.transpose(0, 1))
    return torch.maximum(lower, least.T), torch.minimum(upper, most.T)
