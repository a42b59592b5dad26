"""The torch-function mode that bounds a forward pass over a box of inputs.

Inside ``with BoundMode(bounds) as mode:`` the model runs on ``mode.input(lower, upper)`` (a
tensor of the box centres). Every call of a supported function on a tensor computed from it,
however it is reached (``nn.ReLU``, ``F.relu``, ``x.relu_()``, ``out += identity``, ...), also
computes the bounds of its result and records it as a :class:`~.bounds.Node`. A call the mode
cannot bound raises ``NotImplementedError`` at once, naming the function: nothing is bounded
by guesswork. The model itself is never touched; leaving the ``with`` block removes the mode.

Supported: ``linear``, ``conv1d/2d/3d``, ``batch_norm`` (running statistics, i.e. eval mode),
``avg_pool``, ``adaptive_avg_pool``, ``mean``/``sum``, ``relu`` (CROWN relaxation),
``max_pool``/``adaptive_max_pool`` (DeepPoly's relaxation), addition and subtraction (of two
bounded tensors, residual connections, or of constants), multiplication and division by
constants, products with a constant matrix (``matmul``, ``@``, ``mm``), ``neg``, ``pad``,
``dropout`` in eval mode, and the reshapes (``view``, ``reshape``, ``(un)flatten``,
``permute``, ``transpose``, ``squeeze``, ``unsqueeze``, ``contiguous``, indexing, ``clone``,
``to``, ``expand``). Everything else (sigmoid, GELU, layer norm, attention, ``cat``, products
of two input-dependent tensors, batch norm or dropout in training mode) is refused.
"""
from __future__ import annotations

import inspect
from functools import partial
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

from ..deeplift.mode import MAX_POOLS, split_weighted
from .bounds import (Node, affine_backward, max_pool_backward, relu_backward, sum_backward,
                     tighten)


class BoundMode(TorchFunctionMode):
    """Record the bounded pass; ``method``: ``"ibp"``, ``"crown-ibp"`` (IBP for the hidden
    layers) or ``"crown"`` (each ReLU input tightened by CROWN before its relaxation)."""

    def __init__(self, method: str):
        super().__init__()
        self.method = method
        self.nodes: list[Node] = []
        self._by_id: dict[int, tuple[torch.Tensor, Node]] = {}

    def input(self, lower: torch.Tensor, upper: torch.Tensor) -> torch.Tensor:
        """The tensor to run the model on: the box centres, recorded as the input node."""
        centre = (lower + upper) / 2
        self._record(centre, lower, upper)
        return centre

    def node_of(self, tensor: Any) -> Node | None:
        entry = self._by_id.get(id(tensor)) if isinstance(tensor, torch.Tensor) else None
        return entry[1] if entry is not None and entry[0] is tensor else None

    def _record(self, carrier: torch.Tensor, lower: torch.Tensor, upper: torch.Tensor,
                parents: tuple = (), backward: Callable | None = None) -> torch.Tensor:
        node = Node(len(self.nodes), lower, upper, parents, backward)
        self.nodes.append(node)
        self._by_id[id(carrier)] = (carrier, node)  # keeps the carrier alive: ids stay unique
        return carrier

    def __torch_function__(self, func, types, args=(), kwargs=None):
        # The mode is switched off while this runs, so the calls below are the plain ones.
        kwargs = kwargs or {}
        bounded = [t for t in _tensors((args, kwargs)) if self.node_of(t) is not None]
        if not bounded:
            return func(*args, **kwargs)
        handler = HANDLERS.get(func)
        if handler is not None:
            return handler(self, func, args, kwargs)
        name = getattr(func, "__name__", str(func))
        if func not in REFUSED and not (name.endswith("_") and not name.endswith("__")):
            out = func(*args, **kwargs)
            if func in CONSTANT_LIKE or not any(True for _ in _tensors(out)):
                return out  # shape queries, zeros_like: nothing computed from the values
        raise NotImplementedError(
            f"Eva cannot bound {name} on a tensor computed from the input; it bounds linear, "
            "conv, batch_norm (eval), avg/adaptive_avg_pool, mean/sum, relu, max_pool, "
            "additions, products with constants (matmul too), pad, dropout (eval) and reshapes")

    # -- the rules ---------------------------------------------------------------------------
    def affine(self, run: Callable[[], Any], x: torch.Tensor, op: Callable,
               abs_op: Callable | None) -> Any:
        """Record ``op`` (affine in ``x``): IBP with centre ``op(c)`` and radius
        ``|A| r`` (``abs_op(r)``; ``None``: ``|op(r) - op(0)|``, right for the elementwise and
        selection ops, where each output reads one input)."""
        node = self.node_of(x)
        centre, radius = (node.lower + node.upper) / 2, (node.upper - node.lower) / 2
        mid = op(centre)
        spread = abs_op(radius) if abs_op is not None else (op(radius) - op(
            torch.zeros_like(radius))).abs()
        backward = affine_backward(op, tuple(node.lower.shape))
        return self._record(run(), mid - spread, mid + spread, (node,), backward)


def _tensors(tree: Any):
    if isinstance(tree, torch.Tensor):
        yield tree
    elif isinstance(tree, (list, tuple)):
        for item in tree:
            yield from _tensors(item)
    elif isinstance(tree, dict):
        for item in tree.values():
            yield from _tensors(item)


def _replace(tree: Any, old: torch.Tensor, new: torch.Tensor) -> Any:
    """``tree`` (args, kwargs) with the tensor ``old`` (by identity) replaced by ``new``."""
    if tree is old:
        return new
    if isinstance(tree, (list, tuple)):
        return type(tree)(_replace(item, old, new) for item in tree)
    if isinstance(tree, dict):
        return {key: _replace(item, old, new) for key, item in tree.items()}
    return tree


def _only_bounded(mode: BoundMode, args, kwargs) -> torch.Tensor:
    bounded = [t for t in _tensors((args, kwargs)) if mode.node_of(t) is not None]
    if len({id(t) for t in bounded}) != 1:
        raise NotImplementedError("Eva bounds this operation with one operand computed from the "
                                  "input only (not a product of two such tensors)")
    return bounded[0]


def _generic_affine(mode, func, args, kwargs, out_of_place: Callable | None = None):
    """``func`` affine in its one bounded operand (the others are constants); an in-place
    ``func`` is bounded through ``out_of_place`` and still writes into its operand."""
    x = _only_bounded(mode, args, kwargs)
    if out_of_place is not None and args[0] is not x:
        raise NotImplementedError(f"Eva cannot bound {func.__name__} writing a tensor computed "
                                  "from the input into a constant")
    if func in DIVISIONS and args[0] is not x:
        raise NotImplementedError("Eva bounds a division by a constant only")
    base = out_of_place or func

    def op(t):
        return base(*_replace(args, x, t), **_replace(kwargs, x, t))
    return mode.affine(lambda: func(*args, **kwargs), x, op, None)


def _matmul(mode, func, args, kwargs):
    """``x @ W`` or ``W @ x`` with a constant ``W``: ``|A| r`` is the product with ``|W|``."""
    x = _only_bounded(mode, args, kwargs)
    absolute = [t.abs() if isinstance(t, torch.Tensor) and t is not x else t for t in args]

    def op(t):
        return func(*_replace(args, x, t), **kwargs)
    return mode.affine(lambda: func(*args, **kwargs), x, op,
                       lambda r: func(*_replace(absolute, x, r), **kwargs))


def _weighted(mode, func, args, kwargs):
    """linear / conv: ``func(x, W, b, *rest)``; ``|A| r`` is ``func(r, |W|)`` without bias."""
    x, weight, bias, rest, keywords = split_weighted(args, kwargs)
    if mode.node_of(weight) is not None or mode.node_of(bias) is not None:
        raise NotImplementedError(f"Eva bounds {func.__name__} with constant weights only")
    return mode.affine(lambda: func(*args, **kwargs), x,
                       lambda t: func(t, weight, bias, *rest, **keywords),
                       lambda r: func(r, weight.abs(), None, *rest, **keywords))


def _batch_norm(mode, func, args, kwargs):
    a = dict(inspect.signature(F.batch_norm).bind(*args, **kwargs).arguments)
    if a.get("training") or a.get("running_mean") is None:
        raise NotImplementedError("Eva bounds batch_norm with running statistics only: put the "
                                  "model in eval mode (model.eval())")
    x, mean, var, eps = a["input"], a["running_mean"], a["running_var"], a.get("eps", 1e-5)
    weight, bias = a.get("weight"), a.get("bias")
    shape = (1, -1) + (1,) * (x.ndim - 2)
    scale = (torch.rsqrt(var + eps) * (weight if weight is not None else 1)).view(shape)
    op = partial(F.batch_norm, running_mean=mean, running_var=var, weight=weight, bias=bias,
                 training=False, eps=eps)
    return mode.affine(lambda: func(*args, **kwargs), x, op, lambda r: r * scale.abs())


def _nonnegative(mode, func, args, kwargs):
    """Averages, sums and reshapes: linear with non-negative coefficients (``|A| = A``)."""
    x = _only_bounded(mode, args, kwargs)

    def op(t):
        return func(*_replace(args, x, t), **kwargs)
    return mode.affine(lambda: func(*args, **kwargs), x, op, op)


def _pad(mode, func, args, kwargs):
    a = dict(inspect.signature(F.pad).bind(*args, **kwargs).arguments)
    x = a.pop("input")
    op = partial(F.pad, **a)
    return mode.affine(lambda: func(*args, **kwargs), x, op, partial(F.pad, **{**a, "value": 0.0}))


def _dropout(mode, func, args, kwargs):
    a = dict(inspect.signature(func).bind(*args, **kwargs).arguments)
    if a.get("training", True) and a.get("p", 0.5) > 0:
        raise NotImplementedError(f"Eva cannot bound {func.__name__} in training mode: put the "
                                  "model in eval mode (model.eval())")
    return mode.affine(lambda: func(*args, **kwargs), a["input"], lambda t: t, lambda r: r)


def _sum(mode, func, args, kwargs, out_of_place: Callable, sign: float, in_place: bool):
    """``a + b`` / ``a - b`` (with ``alpha``): two bounded operands are a residual addition,
    one bounded operand an affine map."""
    operands = [t for t in args[:2] if mode.node_of(t) is not None]
    if len(args) != 2 or len(operands) != 2 or set(kwargs) - {"alpha"}:
        return _generic_affine(mode, func, args, kwargs, out_of_place if in_place else None)
    if func is torch.Tensor.__rsub__:  # b - a written a.__rsub__(b)
        args = args[::-1]
    a, b = (mode.node_of(t) for t in args)
    weight = sign * kwargs.get("alpha", 1)
    lower = a.lower + (b.lower if weight >= 0 else b.upper) * weight
    upper = a.upper + (b.upper if weight >= 0 else b.lower) * weight
    backward = sum_backward((1.0, weight), (tuple(a.lower.shape), tuple(b.lower.shape)))
    return mode._record(func(*args, **kwargs) if func is not torch.Tensor.__rsub__
                        else out_of_place(*args), lower, upper, (a, b), backward)


def _relu(mode, func, args, kwargs):
    x = _only_bounded(mode, args, kwargs)
    node = mode.node_of(x)
    if mode.method == "crown":
        tighten(mode.nodes, node)
    out = func(*args, **kwargs)
    return mode._record(out, node.lower.clamp(min=0), node.upper.clamp(min=0), (node,),
                        relu_backward(node.lower, node.upper))


def _max_pool(mode, func, args, kwargs, with_indices: Callable):
    """Monotone: IBP pools the bounds; CROWN uses ``x_j <= y <= max u`` (``j`` the window's
    input with the largest lower bound), as DeepPoly (Singh et al., 2019)."""
    x = _only_bounded(mode, args, kwargs)
    node = mode.node_of(x)
    if mode.method == "crown":
        tighten(mode.nodes, node)
    arguments = dict(inspect.signature(with_indices).bind(*args, **kwargs).arguments)
    arguments.pop("input")
    arguments.pop("return_indices", None)
    pool = partial(with_indices, **arguments)
    lower, indices = pool(node.lower)
    upper = pool(node.upper)[0]
    out = func(*args, **kwargs)
    carrier = out[0] if isinstance(out, tuple) else out
    mode._record(carrier, lower, upper, (node,), max_pool_backward(indices, upper,
                                                                   tuple(node.lower.shape)))
    return out


DIVISIONS = {torch.div, torch.Tensor.div, torch.true_divide, torch.Tensor.true_divide,
             torch.Tensor.__truediv__, torch.Tensor.div_, torch.Tensor.true_divide_,
             torch.Tensor.__itruediv__}

REFUSED = {torch.Tensor.item, torch.Tensor.tolist, torch.Tensor.numpy, torch.Tensor.__bool__,
           torch.Tensor.__float__, torch.Tensor.__int__, torch.Tensor.__index__,
           torch.Tensor.__setitem__}
"""Calls that read values out of a bounded tensor (control flow on them is not bounded)."""

CONSTANT_LIKE = {torch.zeros_like, torch.ones_like, torch.empty_like, torch.Tensor.new_zeros,
                 torch.Tensor.new_ones, torch.Tensor.new_empty, torch.Tensor.new_full,
                 torch.Tensor.new_tensor}
"""Calls that read a bounded tensor's shape only."""

RESHAPES = ("view", "reshape", "flatten", "unflatten", "permute", "transpose", "squeeze",
            "unsqueeze", "contiguous", "__getitem__", "clone", "to", "float", "double", "half",
            "bfloat16", "expand", "expand_as", "view_as", "reshape_as", "t", "movedim", "mean",
            "sum")


def _handlers() -> dict:
    handlers: dict = {}
    for func in (F.linear, F.conv1d, F.conv2d, F.conv3d):
        handlers[func] = _weighted
    handlers[F.batch_norm] = _batch_norm
    for func in (F.avg_pool1d, F.avg_pool2d, F.avg_pool3d, F.adaptive_avg_pool1d,
                 F.adaptive_avg_pool2d, F.adaptive_avg_pool3d):
        handlers[func] = _nonnegative
    for name in RESHAPES:
        for namespace in (torch, torch.Tensor):
            if getattr(namespace, name, None) is not None:
                handlers[getattr(namespace, name)] = _nonnegative
    handlers[F.pad] = _pad
    for func in (F.dropout, F.dropout1d, F.dropout2d, F.dropout3d, F.alpha_dropout):
        handlers[func] = _dropout
    for func in (F.relu, torch.relu, torch.relu_, torch.Tensor.relu, torch.Tensor.relu_):
        handlers[func] = _relu
    for func, with_indices in MAX_POOLS.items():
        handlers[func] = partial(_max_pool, with_indices=with_indices)
    for sign, name, funcs in ((1.0, "add", (torch.add, torch.Tensor.add, torch.Tensor.__add__,
                                            torch.Tensor.__radd__)),
                              (-1.0, "sub", (torch.sub, torch.Tensor.sub, torch.Tensor.__sub__,
                                             torch.Tensor.__rsub__))):
        for in_place, group in ((False, funcs), (True, (getattr(torch.Tensor, f"{name}_"),
                                                       getattr(torch.Tensor, f"__i{name}__")))):
            for func in group:
                handlers[func] = partial(_sum, out_of_place=getattr(torch, name), sign=sign,
                                         in_place=in_place)
    for name in ("mul", "div", "true_divide"):
        for func in (getattr(torch, name), getattr(torch.Tensor, name)):
            handlers[func] = _generic_affine
        handlers[getattr(torch.Tensor, f"{name}_")] = partial(_generic_affine,
                                                              out_of_place=getattr(torch, name))
    for func in (torch.Tensor.__mul__, torch.Tensor.__rmul__, torch.Tensor.__truediv__,
                 torch.neg, torch.Tensor.neg, torch.Tensor.__neg__):
        handlers[func] = _generic_affine
    for func in (torch.matmul, torch.Tensor.matmul, torch.Tensor.__matmul__,
                 torch.Tensor.__rmatmul__, torch.mm, torch.Tensor.mm):
        handlers[func] = _matmul
    handlers[torch.Tensor.__imul__] = partial(_generic_affine, out_of_place=torch.mul)
    handlers[torch.Tensor.__itruediv__] = partial(_generic_affine, out_of_place=torch.div)
    return handlers


HANDLERS = _handlers()
