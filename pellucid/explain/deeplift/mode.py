"""The torch-function mode that applies the DeepLIFT rules while a model runs.

Inside ``with DeepLiftMode(layout, rows):`` every call of a listed function (however it is
reached: ``nn.ReLU``, ``F.relu``, ``torch.relu``, ``x.relu()``, ``x.relu_()``, ...) on a tensor
whose first dimension is the stacked batch (``rows``) is replaced by the rule of ``layout``;
everything else runs unchanged. Leaving the ``with`` block (normally or by an exception) removes
the mode; the model itself is never touched.
"""
from __future__ import annotations

import inspect
import warnings
from functools import partial
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

ELEMENTWISE = ("relu", "relu6", "leaky_relu", "elu", "selu", "celu", "gelu", "silu", "mish",
               "softplus", "sigmoid", "tanh", "hardtanh", "hardsigmoid", "hardswish",
               "logsigmoid", "softsign", "clamp", "clamp_min", "clamp_max", "clip")
"""Elementwise nonlinearities with a DeepLIFT rule, looked up in ``torch.nn.functional``,
``torch`` and ``torch.Tensor`` with their in-place ``name_`` variants."""

NO_RULE = (F.softmax, F.log_softmax, torch.softmax, torch.log_softmax, torch.Tensor.softmax,
           torch.Tensor.log_softmax, F.layer_norm, F.group_norm, F.instance_norm,
           F.local_response_norm)
"""Nonlinear operations DeepLIFT has no rule for: differentiated as they are, with a warning."""


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
        if handler is None or not args or not self._is_stacked(args[0]):
            return func(*args, **kwargs)
        return handler(self.layout, func, args, kwargs)

    def _is_stacked(self, tensor: Any) -> bool:
        return isinstance(tensor, torch.Tensor) and tensor.ndim > 0 and tensor.shape[0] == self.rows


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
    rest, keywords = list(args), dict(kwargs)
    x, weight, bias = (rest.pop(0) if rest else keywords.pop(name, None)
                       for name in ("input", "weight", "bias"))
    if not isinstance(weight, torch.Tensor):
        return func(*args, **kwargs)
    return layout.weighted(lambda t, w, b: func(t, w, b, *rest, **keywords), x, weight, bias)


def _no_rule(layout, func, args, kwargs):
    warnings.warn(f"DeepLIFT has no rule for {getattr(func, '__name__', func)}: it is "
                  "differentiated as it is, so attributions no longer sum exactly to "
                  "f(x) - f(baseline). Explain a model that returns logits.", stacklevel=3)
    return func(*args, **kwargs)


def _handlers() -> dict:
    handlers: dict = {}
    for name in ELEMENTWISE:
        for namespace in (F, torch, torch.Tensor):
            out_of_place = getattr(namespace, name, None)
            if out_of_place is None:
                continue
            handlers.setdefault(out_of_place, partial(_elementwise, out_of_place=out_of_place,
                                                      in_place=False))
            in_place = getattr(namespace, name + "_", None)
            if in_place is not None:
                handlers.setdefault(in_place, partial(_elementwise, out_of_place=out_of_place,
                                                      in_place=True))
    for kind in ("max_pool", "adaptive_max_pool"):
        for dims in (1, 2, 3):
            with_indices = getattr(F, f"{kind}{dims}d_with_indices")
            for func in (getattr(F, f"{kind}{dims}d"), with_indices):
                handlers[func] = partial(_max_pool, with_indices=with_indices)
    for func in (F.linear, F.conv1d, F.conv2d, F.conv3d, F.conv_transpose1d, F.conv_transpose2d,
                 F.conv_transpose3d):
        handlers[func] = _weighted
    for func in NO_RULE:
        handlers[func] = _no_rule
    return handlers


HANDLERS = _handlers()
