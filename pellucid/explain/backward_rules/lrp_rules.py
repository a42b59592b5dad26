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
- ``alpha_beta``: ``alpha * (a W+ share) - beta * (a W- share)`` with ``alpha - beta = 1``;
- input layers only: ``flat`` and ``zbox`` (z^B), whose relevance is not of the form
  ``a * grad`` and is sent to a ``carrier`` instead (see :class:`LRPMode`).

An eval-mode batch norm right after a convolution/linear layer is folded into it (that layer's
rule sees ``W gamma / sigma`` and ``(b - mu) gamma / sigma + beta``).

The rest of the network, as the common "LRP for transformers" choices (Ali et al., 2022;
Achtibat et al., 2024): elementwise activations pass relevance unchanged (``R_in = R_out``, the
identity rule; for ReLU this is the gradient); additions, concatenation, pooling and the batch
norms that cannot be folded (not after a convolution/linear layer, e.g. DenseNet's pre-activation
ones) keep their gradient (additions split relevance in proportion to their terms; such a batch
norm is the LRP-0 rule of a diagonal layer, its shift absorbs relevance); products of two
input-dependent tensors split it in halves (the uniform rule); LayerNorm/GroupNorm/RMSNorm treat
the standard deviation as a constant (the LN-rule) and a division by an input-dependent tensor
treats the divisor as constant; softmax outputs are constants (the attention weights: relevance
flows through the values only, the AH-rule), for ``F.scaled_dot_product_attention`` and
``nn.MultiheadAttention`` too (whose inner projections then get LRP-0).
"""
from __future__ import annotations

import inspect
from functools import partial
from typing import Callable, NamedTuple

import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

from ..deeplift.mode import CONVOLUTIONS, ELEMENTWISE, PRODUCTS, WEIGHTED, split_weighted
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


def flat(call, a, weight, bias, *, carrier):
    """Flat (Lapuschkin et al., 2019): ``R_i = sum_j R_j / n_j`` with ``n_j`` the number of
    inputs in ``j``'s receptive field (padding excluded): the weights and the input as ones, no
    bias. An input-layer rule: it writes ``R_i`` as the gradient of ``carrier``."""
    z = call(a, weight, bias)
    z_mod = call(carrier.to(a.dtype), torch.ones_like(weight), None)
    return with_gradient_of(z, _share(z, z_mod, STABILISER))


def zbox(call, a, weight, bias, *, carrier, low, high):
    """z^B (Montavon et al., 2017) for inputs bounded by ``low <= x <= high``: ``R_i = sum_j
    (x_i w_ij - l_i w+_ij - h_i w-_ij) / sum_i' (x_i' w_i'j - l_i' w+_i'j - h_i' w-_i'j) R_j``
    (no bias, as zennit's ``ZBox``). An input-layer rule, ``a = x * carrier``: ``R_i`` is the
    gradient of ``carrier``."""
    z = call(a, weight, bias)
    weight = weight.detach()
    carrier = carrier.to(a.dtype)
    low, high = (bound.to(a.device, a.dtype) * carrier for bound in (low, high))
    z_mod = (call(a, weight, None) - call(low, weight.clamp(min=0), None)
             - call(high, weight.clamp(max=0), None))
    return with_gradient_of(z, _share(z, z_mod, STABILISER))


FOLDABLE = (F.conv1d, F.conv2d, F.conv3d, F.linear)
"""Layers whose output channels are dimension 1 and the weight's dimension 0 (a batch norm after
them is folded in)."""


def _depends(tensor) -> bool:
    """On the path from the input (the input itself included)."""
    return isinstance(tensor, torch.Tensor) and tensor.requires_grad


def _computed(tensor) -> bool:
    """Computed from the input: not a leaf, so not a parameter (for the two-operand rules)."""
    return _depends(tensor) and tensor.grad_fn is not None


class _Layer(NamedTuple):
    """A weighted call whose output an eval-mode batch norm may fold into."""
    output: torch.Tensor
    version: int
    rule: Callable
    call: Callable
    input: torch.Tensor
    weight: torch.Tensor
    bias: torch.Tensor | None


class LRPMode(TorchFunctionMode):
    """Apply ``conv_rule`` to convolutions, ``linear_rule`` to linear layers (each
    ``rule(call, input, weight, bias) -> output``), ``input_rule`` (``flat``, ``zbox``: with a
    ``carrier`` argument, or ``None``) to the input layers, and the fixed rules above to the rest.

    The model is fed ``inputs(x, carrier)`` ``= x * carrier`` and the relevance is the gradient
    of ``carrier`` (``x * grad`` for the rules of ``a * grad`` form). Input layers are the
    convolutions/linear layers that take that tensor itself (or a ``.to``/``.contiguous`` copy).
    An eval-mode batch norm applied to the output of a convolution/linear layer is folded into
    it: the layer's rule runs on ``W * gamma / sigma`` and ``(b - mu) * gamma / sigma + beta``,
    as if the model had been rewritten (zennit's canonizers do the same on the module tree)."""

    def __init__(self, conv_rule: Callable, linear_rule: Callable,
                 input_rule: Callable | None = None):
        super().__init__()
        self.conv_rule, self.linear_rule, self.input_rule = conv_rule, linear_rule, input_rule
        self.carrier: torch.Tensor | None = None
        self.input_layers = 0
        self._inputs: dict[int, torch.Tensor] = {}
        self._layers: dict[int, _Layer] = {}

    def inputs(self, x: torch.Tensor, carrier: torch.Tensor) -> torch.Tensor:
        self.carrier = carrier
        tensor = x.detach().to(carrier).clone() * carrier  # clone: not an inference tensor
        self._inputs[id(tensor)] = tensor
        return tensor

    def is_input(self, tensor) -> bool:
        return self._inputs.get(id(tensor)) is tensor

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        handler = HANDLERS.get(func)
        if handler is None or not args:
            out = func(*args, **kwargs)
            if func in COPIES and self.is_input(args[0]) and isinstance(out, torch.Tensor):
                self._inputs[id(out)] = out
            return out
        return handler(self, func, args, kwargs)


COPIES = (torch.Tensor.to, torch.Tensor.contiguous, torch.Tensor.float, torch.Tensor.double,
          torch.Tensor.half, torch.Tensor.bfloat16)


def _weighted(mode, func, args, kwargs):
    x, weight, bias, rest, keywords = split_weighted(args, kwargs)
    if not _depends(x) or not isinstance(weight, torch.Tensor):
        return func(*args, **kwargs)
    rule = mode.conv_rule if func in CONVOLUTIONS else mode.linear_rule
    if mode.input_rule is not None and mode.is_input(x):
        rule = partial(mode.input_rule, carrier=mode.carrier)
        mode.input_layers += 1
    call = partial(_call, func, rest, keywords)
    out = rule(call, x, weight, bias)
    if func in FOLDABLE and (func is not F.linear or out.ndim == 2):
        mode._layers[id(out)] = _Layer(out, out._version, rule, call, x, weight, bias)
    return out


def _call(func, rest, keywords, x, weight, bias):
    return func(x, weight, bias, *rest, **keywords)


def _batch_norm(mode, func, args, kwargs):
    """An eval-mode batch norm of a convolution/linear output: that layer's rule on the folded
    weights; elsewhere its gradient (the LRP-0 rule of a diagonal layer)."""
    bound = inspect.signature(func).bind(*args, **kwargs)
    bound.apply_defaults()
    arguments = bound.arguments
    x, mean, var = arguments["input"], arguments["running_mean"], arguments["running_var"]
    layer = mode._layers.pop(id(x), None)
    if layer is None or layer.output is not x or layer.version != x._version or \
            arguments["training"] or mean is None or var is None:
        return func(*args, **kwargs)
    scale = torch.rsqrt(var + arguments["eps"])
    if arguments["weight"] is not None:
        scale = scale * arguments["weight"]
    shift = -mean * scale if arguments["bias"] is None else arguments["bias"] - mean * scale
    weight = layer.weight * scale.view(-1, *[1] * (layer.weight.ndim - 1))
    bias = shift if layer.bias is None else layer.bias * scale + shift
    return layer.rule(layer.call, layer.input, weight, bias)


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
    if len(args) == 2 and not kwargs and _computed(args[1]):
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
    for func in WEIGHTED:
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
    for func in PRODUCTS:
        handlers[func] = _half_product
    for func in (torch.div, torch.true_divide, torch.Tensor.div, torch.Tensor.__truediv__):
        handlers[func] = _constant_divisor
    for func in (F.softmax, torch.softmax, torch.Tensor.softmax):
        handlers[func] = _constant_output
    handlers[F.batch_norm] = _batch_norm
    handlers[F.layer_norm] = _constant_scale_norm
    handlers[F.rms_norm] = partial(_constant_scale_norm, centre=False)
    handlers[F.group_norm] = partial(_constant_scale_norm, groups=True)
    handlers[F.scaled_dot_product_attention] = _attention
    handlers[F.multi_head_attention_forward] = _multi_head_attention
    return handlers


HANDLERS = _handlers()
