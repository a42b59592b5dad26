"""The torch-function mode that applies the DeepLIFT rules while a model runs.

Inside ``with DeepLiftMode(layout, rows):`` every call of a listed function (however it is
reached: ``nn.ReLU``, ``F.relu``, ``torch.relu``, ``x.relu()``, ``x.relu_()``, ...) on a tensor
whose first dimension is the stacked batch (``rows``; a multiple of it for the rules written on
pairs: products, normalisations, softmax, attention, the fallback) is replaced by the rule of
``layout``; everything else runs unchanged. Leaving the ``with`` block (normally or by an
exception) removes the mode; the model itself is never touched.
"""
from __future__ import annotations

import inspect
import warnings
from functools import partial
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

from . import composites
from .rules import RescaleElementwise, averaged_jacobian, bilinear

ELEMENTWISE = ("relu", "relu6", "leaky_relu", "elu", "selu", "celu", "gelu", "silu", "mish",
               "softplus", "sigmoid", "tanh", "hardtanh", "hardsigmoid", "hardswish",
               "logsigmoid", "softsign", "clamp", "clamp_min", "clamp_max", "clip", "exp", "log",
               "sqrt", "rsqrt", "reciprocal", "square", "pow", "erf", "abs", "log1p", "expm1",
               "__pow__")
"""Elementwise nonlinearities with a DeepLIFT rule, looked up in ``torch.nn.functional``,
``torch`` and ``torch.Tensor`` with their in-place ``name_`` variants."""

CONVOLUTIONS = (F.conv1d, F.conv2d, F.conv3d, F.conv_transpose1d, F.conv_transpose2d,
                F.conv_transpose3d)
WEIGHTED = (F.linear, *CONVOLUTIONS)
"""The layers called ``func(input, weight, bias, *rest)`` (see :func:`split_weighted`)."""

PRODUCTS = (torch.mul, torch.Tensor.mul, torch.Tensor.__mul__, torch.Tensor.__rmul__,
            torch.matmul, torch.Tensor.matmul, torch.Tensor.__matmul__, torch.bmm,
            torch.Tensor.bmm)
"""The two-operand products given a product rule (DeepLIFT's, LRP's uniform split)."""

MAX_POOLS = {func: getattr(F, f"{kind}{dims}d_with_indices")
             for kind in ("max_pool", "adaptive_max_pool") for dims in (1, 2, 3)
             for func in (getattr(F, f"{kind}{dims}d"), getattr(F, f"{kind}{dims}d_with_indices"))}
"""Each max pooling function (``F.max_pool2d``, ``F.max_pool2d_with_indices``, ...) -> its
``_with_indices`` form."""


def split_weighted(args: tuple, kwargs: dict) -> tuple:
    """The arguments of a ``WEIGHTED`` call ``func(input, weight, bias, *rest, **keywords)``
    as ``(input, weight, bias, rest, keywords)`` (``None`` for one not given)."""
    rest, keywords = list(args), dict(kwargs)
    x, weight, bias = (rest.pop(0) if rest else keywords.pop(name, None)
                       for name in ("input", "weight", "bias"))
    return x, weight, bias, rest, keywords


class DeepLiftMode(TorchFunctionMode):
    """Route the nonlinearities (and, for RevealCancel, the linear and convolution layers) of a
    forward pass on a stacked batch of ``rows`` rows to ``layout`` (see ``layouts``)."""

    def __init__(self, layout: Any, rows: int):
        super().__init__()
        self.layout = layout
        self.rows = rows

    def __torch_function__(self, func, types, args=(), kwargs=None):
        # The mode is switched off while this runs, so the calls below are the plain ones.
        kwargs = kwargs or {}
        handler = HANDLERS.get(func)
        if handler is None or not args:
            return func(*args, **kwargs)
        return handler(self, func, args, kwargs)

    def is_stacked(self, tensor: Any) -> bool:
        """Batch-first with exactly the stacked rows (elementwise, pooling, linear layers)."""
        return isinstance(tensor, torch.Tensor) and tensor.ndim > 0 and tensor.shape[0] == self.rows

    def depends(self, tensor: Any, leading: int | None = None) -> bool:
        """Taken as a function of the input: computed with gradients (not a leaf) and batch-first
        with ``k`` rows per stacked row (``k > 1``: windows of Swin, heads of attention);
        ``leading``: the first dimension it must have (that of the other operand)."""
        return (isinstance(tensor, torch.Tensor) and tensor.ndim > 0 and tensor.requires_grad
                and tensor.grad_fn is not None and tensor.shape[0] > 0
                and tensor.shape[0] % self.rows == 0
                and (leading is None or tensor.shape[0] == leading))


def _first_stacked(handler: Callable) -> Callable:
    """The rules that apply to an input with exactly the stacked rows."""
    def checked(mode, func, args, kwargs):
        if not mode.is_stacked(args[0]):
            return func(*args, **kwargs)
        return handler(mode.layout, func, args, kwargs)
    return checked


def _elementwise(layout, func, args, kwargs, out_of_place: Callable, in_place: bool):
    """``func(x, *constants)`` -> the layout's rule for ``t -> out_of_place(t, *constants)``;
    an in-place call writes the result into ``x`` and returns it, as the original would."""
    if inspect.isfunction(func):  # a torch.nn.functional wrapper, maybe with an `inplace` flag
        arguments = inspect.signature(func).bind(*args, **kwargs).arguments
        x = arguments.pop(next(iter(inspect.signature(func).parameters)))
        in_place = bool(arguments.pop("inplace", False))
        constants, keywords = (), arguments
    else:
        x, constants, keywords = args[0], args[1:], kwargs
    if "out" in keywords or any(isinstance(v, torch.Tensor)
                                for v in (*constants, *keywords.values())):
        return func(*args, **kwargs)  # not a function of x alone: no rule
    out = layout.elementwise(x, lambda t: out_of_place(t, *constants, **keywords))
    return x.copy_(out) if in_place else out


def _max_pool(layout, func, args, kwargs, with_indices: Callable):
    arguments = inspect.signature(with_indices).bind(*args, **kwargs).arguments
    x = arguments.pop("input")
    wants_indices = arguments.pop("return_indices", False) or func is with_indices
    pool = partial(with_indices, **arguments)
    out = layout.max_pool(x, pool)
    return (out, pool(x)[1]) if wants_indices else out


def _weighted(layout, func, args, kwargs):
    """``func(input, weight, bias, *rest)``: linear, convolution, transposed convolution."""
    x, weight, bias, rest, keywords = split_weighted(args, kwargs)
    if not isinstance(weight, torch.Tensor):
        return func(*args, **kwargs)
    return layout.weighted(lambda t, w, b: func(t, w, b, *rest, **keywords), x, weight, bias)


def _no_rule(func, args, kwargs, why):
    warnings.warn(f"DeepLIFT has no rule for {getattr(func, '__name__', func)} {why}: it is "
                  "differentiated as it is, so attributions no longer sum exactly to "
                  "f(x) - f(baseline).", stacklevel=4)
    return func(*args, **kwargs)


def _bound(func, args, kwargs) -> dict:
    return dict(inspect.signature(func).bind(*args, **kwargs).arguments)


def _in_place(mode, func, args, kwargs, out_of_place, in_place: bool):
    """``a.op_(b)`` as ``a.copy_(op(a, b))`` (the rule of ``out_of_place``)."""
    out = HANDLERS[out_of_place](mode, out_of_place, args, kwargs)
    return args[0].copy_(out) if in_place else out


def _product(mode, func, args, kwargs):
    """``a * b``, ``a @ b``, ``bmm``: the product rule when both depend on the input."""
    if len(args) != 2 or kwargs or not mode.depends(args[0]) or not mode.depends(
            args[1], args[0].shape[0]):
        return func(*args, **kwargs)
    return mode.layout.pairwise(lambda a, b: bilinear(func, a, b), *args)


def _divide(mode, func, args, kwargs):
    """``a / b`` with ``b`` input-dependent: ``a * reciprocal(b)`` (Rescale, product rule)."""
    if len(args) != 2 or kwargs:
        return func(*args, **kwargs)
    numerator, denominator = args if func is not torch.Tensor.__rtruediv__ else args[::-1]
    if not mode.depends(denominator):
        return func(*args, **kwargs)
    inverse = partial(RescaleElementwise.apply, fn=torch.reciprocal)
    if mode.depends(numerator, denominator.shape[0]):
        return mode.layout.pairwise(lambda a, b: bilinear(torch.mul, a, inverse(b)),
                                    numerator, denominator)
    if isinstance(numerator, torch.Tensor) and numerator.ndim >= denominator.ndim and len(
            numerator) > 1:
        return func(*args, **kwargs)  # a constant laid out along the batch: no rule
    return mode.layout.pairwise(lambda b: numerator * inverse(b), denominator)


def _einsum(mode, func, args, kwargs):
    """``einsum("b...,b...->b...", a, b)``: the product rule (the batch letter first
    everywhere)."""
    equation, *operands = args
    operands = operands[0] if len(operands) == 1 and isinstance(operands[0], (list, tuple)) \
        else operands
    terms = equation.replace(" ", "").replace("->", ",").split(",")
    if (kwargs or len(operands) != 2 or "->" not in equation
            or len({term[:1] for term in terms}) != 1 or not mode.depends(operands[0])
            or not mode.depends(operands[1], operands[0].shape[0])):
        return func(*args, **kwargs)
    return mode.layout.pairwise(lambda a, b: bilinear(partial(func, equation), a, b), *operands)


def _composite(mode, func, args, kwargs, rule):
    """A normalisation: ``rule(input, **the other arguments)`` from ``composites``."""
    arguments = _bound(func, args, kwargs)
    x = arguments.pop("input")
    if not mode.depends(x):
        return func(*args, **kwargs)
    return mode.layout.pairwise(lambda pair: rule(pair, **arguments), x)


def _instance_norm(mode, func, args, kwargs):
    arguments = _bound(func, args, kwargs)
    if not arguments.get("use_input_stats", True):  # running statistics: affine
        return func(*args, **kwargs)
    x = arguments["input"]
    rule = partial(composites.group_norm, num_groups=x.shape[1], weight=arguments.get("weight"),
                   bias=arguments.get("bias"), eps=arguments.get("eps", 1e-5))
    return mode.layout.pairwise(rule, x) if mode.depends(x) else func(*args, **kwargs)


def _softmax(mode, func, args, kwargs, rule):
    """``softmax``/``log_softmax`` in their ``F``, ``torch`` and ``Tensor`` spellings."""
    arguments = (_bound(func, args, kwargs) if inspect.isfunction(func)
                 else {**dict(zip(("input", "dim", "dtype"), args)), **kwargs})
    x, dim, dtype = arguments["input"], arguments.get("dim"), arguments.get("dtype")
    if not mode.depends(x) or not isinstance(dim, (int, type(None))):
        return func(*args, **kwargs)
    dim = F._get_softmax_dim("softmax", x.ndim, 3) if dim is None else dim
    x = x if dtype is None else x.to(dtype)
    return mode.layout.pairwise(lambda z: rule(z, dim), x)


SDPA_ARGUMENTS = ("query", "key", "value", "attn_mask", "dropout_p", "is_causal", "scale",
                  "enable_gqa")


def _sdpa(mode, func, args, kwargs):
    """``F.scaled_dot_product_attention`` as ``composites.attention``; a mask laid out along
    the batch goes with the pairs."""
    arguments = {**dict(zip(SDPA_ARGUMENTS, args)), **kwargs}
    q, k, v = (arguments.pop(name) for name in ("query", "key", "value"))
    if not all(mode.depends(t, q.shape[0]) for t in (q, k, v)):
        return func(*args, **kwargs)
    if arguments.pop("dropout_p", 0.0):
        return _no_rule(func, args, kwargs, "with dropout (a model in training mode)")
    mask = arguments.pop("attn_mask", None)
    if mask is not None and mask.ndim == q.ndim and mask.shape[0] == q.shape[0]:
        return mode.layout.pairwise(
            lambda *t: composites.attention(*t[:3], attn_mask=t[3], **arguments), q, k, v, mask)
    return mode.layout.pairwise(
        lambda *t: composites.attention(*t, attn_mask=mask, **arguments), q, k, v)


def _multi_head_attention(mode, func, args, kwargs):
    """``F.multi_head_attention_forward`` (``nn.MultiheadAttention``) on sequence-first
    ``(T, N, E)`` inputs, as ``composites.multi_head_attention`` on batch-first pairs."""
    arguments = _bound(func, args, kwargs)
    query, key, value = (arguments.pop(name) for name in ("query", "key", "value"))
    if query.ndim != 3 or not all(t.ndim == 3 and mode.depends(t.transpose(0, 1), query.shape[1])
                                  for t in (query, key, value)):
        return func(*args, **kwargs)
    unsupported = {"bias_k": arguments.pop("bias_k", None) is not None,
                   "add_zero_attn": arguments.pop("add_zero_attn", False),
                   "static_k": arguments.pop("static_k", None) is not None,
                   "static_v": arguments.pop("static_v", None) is not None,
                   "dropout": arguments.pop("training", True) and arguments["dropout_p"] > 0}
    arguments.pop("bias_v", None)
    if any(unsupported.values()):
        used = [name for name, on in unsupported.items() if on]
        return _no_rule(func, args, kwargs, f"with {', '.join(used)}")
    for name in ("embed_dim_to_check", "dropout_p"):
        arguments.pop(name)
    batch_first = [t.transpose(0, 1) for t in (query, key, value)]
    batch = query.shape[1]
    rows = {"key_padding_mask": batch, "attn_mask": batch * arguments["num_heads"]}
    paired = {name: arguments.pop(name) for name in rows  # masks laid out along the batch
              if isinstance(arguments.get(name), torch.Tensor)
              and arguments[name].ndim == (2 if name == "key_padding_mask" else 3)
              and arguments[name].shape[0] == rows[name]}
    names = list(paired)

    def rule(*tensors):
        return composites.multi_head_attention(*tensors[:3], **dict(zip(names, tensors[3:])),
                                               **arguments)

    out, weights = mode.layout.pairwise(rule, *batch_first, *paired.values())
    return out.transpose(0, 1), weights


def _averaged_jacobian(mode, func, args, kwargs):
    """Fallback for single-input operations without a closed rule (see
    :func:`~.rules.averaged_jacobian`), when the output keeps the batch."""
    x, rest = args[0], args[1:]
    if not mode.depends(x) or kwargs.get("out") is not None:
        return func(*args, **kwargs)
    out = func(*args, **kwargs)
    if out.ndim == 0 or out.shape[0] != x.shape[0]:
        return out
    fn = partial(_call_with_input, func, rest, kwargs)
    return mode.layout.pairwise(lambda pair: averaged_jacobian(fn, pair), x)


def _call_with_input(func, rest, kwargs, x):
    return func(x, *rest, **kwargs)


AVERAGED_JACOBIAN = (F.local_response_norm, F.normalize, torch.linalg.vector_norm, torch.norm,
                     torch.Tensor.norm, torch.logsumexp, torch.Tensor.logsumexp)
"""Operations given the averaged-Jacobian fallback."""


def _handlers() -> dict:
    handlers: dict = {}
    for name in ELEMENTWISE:
        for namespace in (F, torch, torch.Tensor):
            out_of_place = getattr(namespace, name, None)
            if out_of_place is None:
                continue
            handlers.setdefault(out_of_place, _first_stacked(
                partial(_elementwise, out_of_place=out_of_place, in_place=False)))
            in_place = getattr(namespace, name + "_", None)
            if in_place is not None:
                handlers.setdefault(in_place, _first_stacked(
                    partial(_elementwise, out_of_place=out_of_place, in_place=True)))
    for func, with_indices in MAX_POOLS.items():
        handlers[func] = _first_stacked(partial(_max_pool, with_indices=with_indices))
    for func in WEIGHTED:
        handlers[func] = _first_stacked(_weighted)
    for func in PRODUCTS:
        handlers[func] = _product
    for func in (torch.Tensor.mul_, torch.Tensor.__imul__):
        handlers[func] = partial(_in_place, out_of_place=torch.mul, in_place=True)
    for func in (torch.div, torch.true_divide, torch.Tensor.div, torch.Tensor.__truediv__,
                 torch.Tensor.__rtruediv__):
        handlers[func] = _divide
    for func in (torch.Tensor.div_, torch.Tensor.__itruediv__):
        handlers[func] = partial(_in_place, out_of_place=torch.div, in_place=True)
    handlers[torch.einsum] = _einsum
    for func, rule in ((F.layer_norm, composites.layer_norm), (F.rms_norm, composites.rms_norm),
                       (F.group_norm, composites.group_norm)):
        handlers[func] = partial(_composite, rule=rule)
    handlers[F.instance_norm] = _instance_norm
    for funcs, rule in (((F.softmax, torch.softmax, torch.Tensor.softmax), composites.softmax),
                        ((F.log_softmax, torch.log_softmax, torch.Tensor.log_softmax),
                         composites.log_softmax)):
        for func in funcs:
            handlers[func] = partial(_softmax, rule=rule)
    handlers[F.scaled_dot_product_attention] = _sdpa
    handlers[F.multi_head_attention_forward] = _multi_head_attention
    for func in AVERAGED_JACOBIAN:
        handlers[func] = _averaged_jacobian
    return handlers


HANDLERS = _handlers()
