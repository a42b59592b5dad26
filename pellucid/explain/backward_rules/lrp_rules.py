"""Layer-wise relevance propagation (Bach et al., 2015; Montavon et al., 2019) as modified
gradients, applied by a torch-function mode (no module hooks).

With every layer's backward replaced as below, ``R = x * grad`` at the input is LRP: by
induction the gradient ``g`` reaching an output ``z`` satisfies ``R_z = z * g``, and a layer
``z = call(a, W, b)`` run as ``value z, gradient of z_mod * (z / z_mod).detach()`` sends back
``a * W_mod^T (R_z / z_mod)`` -- the LRP rule of ``W_mod``:

- ``epsilon``: ``z_mod = a W + b``, denominator ``z_mod + eps * sign(z_mod)`` (``eps = 0``:
  LRP-0); absorbs the relevance of the biases and of ``eps``;
- ``gamma``: ``W + gamma W+``, ``b + gamma b+`` (stabilised by 1e-9);
- ``zplus``: ``a W+`` (no bias); conserves, and for non-negative inputs and a positive score
  gives non-negative relevance;
- ``alpha_beta``: ``alpha * (a W+ share) - beta * (a W- share)`` with ``alpha - beta = 1``.

The rest of the network, as the common "LRP for transformers" choices (Ali et al., 2022;
Achtibat et al., 2024): elementwise activations pass relevance unchanged (``R_in = R_out``, the
identity rule; for ReLU this is the gradient); additions, concatenation, pooling and eval-mode
batch norm keep their gradient (additions split relevance in proportion to their terms; batch
norm is the LRP-0 rule of a diagonal layer, its shift absorbs relevance: not folded into the
preceding layer); products of two input-dependent tensors split it in halves (the uniform
rule); LayerNorm/GroupNorm/RMSNorm treat the standard deviation as a constant (the LN-rule) and
a division by an input-dependent tensor treats the divisor as constant; softmax outputs are
constants (the attention weights: relevance flows through the values only, the AH-rule), for
``F.scaled_dot_product_attention`` and ``nn.MultiheadAttention`` too (whose inner projections
then get LRP-0).
"""
from __future__ import annotations

import inspect
from functools import partial
from typing import Callable

import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

from ..deeplift.mode import ELEMENTWISE
from ..deeplift.rules import with_gradient_of

STABILISER = 1e-9


def _stabilise(z: torch.Tensor, eps: float) -> torch.Tensor:
    return z + eps * (2 * (z >= 0).to(z.dtype) - 1)


def _share(z: torch.Tensor, z_mod: torch.Tensor, eps: float) -> torch.Tensor:
    """``z_mod * (z / stabilised z_mod).detach()``: gradient of z_mod, scaled."""
    return z_mod * (z / _stabilise(z_mod, eps)).detach()


def epsilon(call, a, weight, bias, *, eps):
    z = call(a, weight, bias)
    return with_gradient_of(z, _share(z, z, eps))


def gamma(call, a, weight, bias, *, gamma):
    z = call(a, weight, bias)
    weight = weight.detach()
    bias = None if bias is None else bias.detach() + gamma * bias.detach().clamp(min=0)
    z_mod = call(a, weight + gamma * weight.clamp(min=0), bias)
    return with_gradient_of(z, _share(z, z_mod, STABILISER))


def zplus(call, a, weight, bias):
    z = call(a, weight, bias)
    return with_gradient_of(z, _share(z, call(a, weight.detach().clamp(min=0), None),
                                      STABILISER))


def alpha_beta(call, a, weight, bias, *, alpha, beta):
    z = call(a, weight, bias)
    weight = weight.detach()
    positive = _share(z, call(a, weight.clamp(min=0), None), STABILISER)
    negative = _share(z, call(a, weight.clamp(max=0), None), STABILISER)
    return with_gradient_of(z, alpha * positive - beta * negative)


CONVOLUTIONS = (F.conv1d, F.conv2d, F.conv3d, F.conv_transpose1d, F.conv_transpose2d,
                F.conv_transpose3d)


def _depends(tensor) -> bool:
    """On the path from the input (the input itself included)."""
    return isinstance(tensor, torch.Tensor) and tensor.requires_grad


def _computed(tensor) -> bool:
    """Computed from the input: not a leaf, so not a parameter (for the two-operand rules)."""
    return _depends(tensor) and tensor.grad_fn is not None


class LRPMode(TorchFunctionMode):
    """Apply ``conv_rule`` to convolutions, ``linear_rule`` to linear layers (each
    ``rule(call, input, weight, bias) -> output``) and the fixed rules above to the rest."""

    def __init__(self, conv_rule: Callable, linear_rule: Callable):
        super().__init__()
        self.conv_rule, self.linear_rule = conv_rule, linear_rule

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        handler = HANDLERS.get(func)
        if handler is None or not args:
            return func(*args, **kwargs)
        return handler(self, func, args, kwargs)


def _weighted(mode, func, args, kwargs):
    rest, keywords = list(args), dict(kwargs)
    x, weight, bias = (rest.pop(0) if rest else keywords.pop(name, None)
                       for name in ("input", "weight", "bias"))
    if not _depends(x) or not isinstance(weight, torch.Tensor):
        return func(*args, **kwargs)
    rule = mode.conv_rule if func in CONVOLUTIONS else mode.linear_rule
    return rule(lambda t, w, b: func(t, w, b, *rest, **keywords), x, weight, bias)


def _identity(mode, func, args, kwargs, in_place=False):
    """Elementwise activation: relevance passes unchanged, ``x * (f(x) / x).detach()``."""
    x = args[0]
    if not _depends(x):
        return func(*args, **kwargs)
    if inspect.isfunction(func):  # a torch.nn.functional wrapper, maybe with an `inplace` flag
        in_place = bool(inspect.signature(func).bind(*args, **kwargs).arguments.get(
            "inplace", False))
    out = func(x.detach().clone(), *args[1:], **kwargs)  # an in-place call writes the copy
    ratio = torch.where(x == 0, torch.zeros_like(out), out / torch.where(x == 0, 1, x))
    result = with_gradient_of(out, x * ratio.detach())
    return x.copy_(result) if in_place else result


def _half_product(mode, func, args, kwargs):
    if len(args) != 2 or kwargs or not (_computed(args[0]) and _computed(args[1])):
        return func(*args, **kwargs)
    a, b = args
    return 0.5 * (func(a, b.detach()) + func(a.detach(), b))


def _constant_divisor(mode, func, args, kwargs):
    if len(args) == 2 and not kwargs and _computed(args[1]) and func is not \
            torch.Tensor.__rtruediv__:
        return func(args[0], args[1].detach())
    return func(*args, **kwargs)


def _constant_output(mode, func, args, kwargs):
    """Softmax: the attention weights as constants."""
    return func(*args, **kwargs).detach() if _depends(args[0]) else func(*args, **kwargs)


def _constant_scale_norm(mode, func, args, kwargs, centre=True, groups=False):
    """LayerNorm/GroupNorm/RMSNorm with the standard deviation detached (LN-rule)."""
    bound = inspect.signature(func).bind(*args, **kwargs)
    bound.apply_defaults()
    arguments = bound.arguments
    x = arguments["input"]
    if not _depends(x):
        return func(*args, **kwargs)
    if groups:
        view = x.reshape(len(x), arguments["num_groups"], -1)
        dims: tuple[int, ...] = (2,)
    else:
        view = x
        dims = tuple(range(-len(tuple(arguments["normalized_shape"])), 0))
    centred = view - view.mean(dims, keepdim=True) if centre else view
    eps = torch.finfo(x.dtype).eps if arguments["eps"] is None else arguments["eps"]
    scale = torch.rsqrt(centred.detach().square().mean(dims, keepdim=True) + eps)
    out = (centred * scale).reshape(x.shape)
    weight, bias = arguments.get("weight"), arguments.get("bias")
    shape = (1, -1, *[1] * (x.ndim - 2)) if groups else (-1,)
    out = out if weight is None else out * weight.view(shape)
    out = out if bias is None else out + bias.view(shape)
    return with_gradient_of(func(*args, **kwargs), out)


def _attention(mode, func, args, kwargs):
    """Scaled dot-product attention with the weights as constants: queries and keys detached."""
    q, k = args[:2]
    return func(q.detach() if _depends(q) else q, k.detach() if _depends(k) else k, *args[2:],
                **kwargs)


def _multi_head_attention(mode, func, args, kwargs):
    arguments = dict(inspect.signature(func).bind(*args, **kwargs).arguments)
    for name in ("query", "key"):
        if _depends(arguments[name]):
            arguments[name] = arguments[name].detach()
    return func(**arguments)


def _handlers() -> dict:
    handlers: dict = {}
    for func in (F.linear, *CONVOLUTIONS):
        handlers[func] = _weighted
    for name in ELEMENTWISE:
        if name in ("exp", "log", "sqrt", "rsqrt", "reciprocal", "square", "pow", "__pow__",
                    "abs", "log1p", "expm1", "erf"):
            continue  # arithmetic inside other operations, not activations
        for namespace in (F, torch, torch.Tensor):
            function = getattr(namespace, name, None)
            if function is not None:
                handlers.setdefault(function, _identity)
            in_place = getattr(namespace, name + "_", None)
            if in_place is not None:
                handlers.setdefault(in_place, partial(_identity, in_place=True))
    for func in (torch.mul, torch.Tensor.mul, torch.Tensor.__mul__, torch.Tensor.__rmul__,
                 torch.matmul, torch.Tensor.matmul, torch.Tensor.__matmul__, torch.bmm,
                 torch.Tensor.bmm):
        handlers[func] = _half_product
    for func in (torch.div, torch.true_divide, torch.Tensor.div, torch.Tensor.__truediv__):
        handlers[func] = _constant_divisor
    for func in (F.softmax, torch.softmax, torch.Tensor.softmax):
        handlers[func] = _constant_output
    handlers[F.layer_norm] = _constant_scale_norm
    handlers[F.rms_norm] = partial(_constant_scale_norm, centre=False)
    handlers[F.group_norm] = partial(_constant_scale_norm, groups=True)
    handlers[F.scaled_dot_product_attention] = _attention
    handlers[F.multi_head_attention_forward] = _multi_head_attention
    return handlers


HANDLERS = _handlers()
