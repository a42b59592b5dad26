"""Layer masking (Balasubramanian & Feizi, "Towards Improved Input Masking for Convolutional
Neural Networks", ICCV 2023): the CNN processes only the unmasked part of its input.

A grey or black fill is itself an input: its shape and colour reach the logits (missingness
bias). Layer masking runs the model with the mask carried along: after every convolution or
pooling the mask is propagated through the same window (a position is masked when its window
touches a masked position: max-pool of the masked indicator with the layer's kernel, stride,
padding and dilation) and the masked positions are set to 0 again; elementwise layers (ReLU,
batch norm, additions) keep the mask and are re-masked too. An unmasked activation therefore
never reads a masked input. Global (adaptive) average and max pooling read the unmasked
positions only (``sum(a * keep) / sum(keep)``), so the size of the masked region does not
leak through the final average either; a window with no unmasked position gives 0.

``with LayerMasking(keep): model(x * keep)`` (``keep``: ``(n, H, W)``, 1 = kept) is the whole
interface: a torch-function mode (thread-local, no hook, the model untouched). Operations that
change the spatial size in another way (interpolation, a flatten before the head) end the
mask's journey: a head that flattens the feature map still sees where the zeros are, so use
it on CNNs with global pooling.
"""
from __future__ import annotations

import inspect
from typing import Any

import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

WINDOWED = {F.conv1d: "conv", F.conv2d: "conv", F.max_pool2d: F.max_pool2d,
            F.avg_pool2d: F.avg_pool2d, F.max_pool1d: F.max_pool1d, F.avg_pool1d: F.avg_pool1d}
"""Convolutions and pooling: the mask goes through a max-pool with the same window."""

GLOBAL = {F.adaptive_avg_pool2d: F.adaptive_avg_pool2d, F.adaptive_max_pool2d: None}
"""Adaptive pooling: over the unmasked positions only."""


class LayerMasking(TorchFunctionMode):
    """Carry ``keep`` (``(n, *spatial)``, 1 = kept, 0 = masked) through the model's layers."""

    def __init__(self, keep: torch.Tensor):
        super().__init__()
        self.keep = keep
        self._masks: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}

    def masked_input(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` with its masked positions set to 0, tracked from here on."""
        keep = self.keep.to(x)[:, None]
        return self._track(x * keep, keep)

    def _track(self, tensor: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        self._masks[id(tensor)] = (tensor, keep)
        return tensor

    def mask_of(self, tensor: Any) -> torch.Tensor | None:
        entry = self._masks.get(id(tensor)) if isinstance(tensor, torch.Tensor) else None
        return entry[1] if entry is not None and entry[0] is tensor else None

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        masks = [m for m in map(self.mask_of, _flat(args, kwargs)) if m is not None]
        if not masks:
            return func(*args, **kwargs)
        keep = masks[0]
        for other in masks[1:]:
            keep = keep * other if other.shape == keep.shape else keep
        x = next(t for t in _flat(args, kwargs) if self.mask_of(t) is not None)
        if func in GLOBAL:
            return self._global(func, x, keep, args, kwargs)
        out = func(*args, **kwargs)
        tensor = out[0] if isinstance(out, tuple) and out and torch.is_tensor(out[0]) else out
        if not torch.is_tensor(tensor) or tensor.ndim != x.ndim or tensor.shape[0] != len(keep):
            return out  # flatten, linear head: the mask's journey ends
        if func in WINDOWED:
            keep = _window(func, keep, args, kwargs)
        elif tensor.shape[2:] != keep.shape[2:]:
            return out
        tensor.mul_(keep.to(tensor))  # re-apply: masked positions are 0 again
        self._track(tensor, keep)
        return out

    def _global(self, func, x, keep, args, kwargs):
        size = inspect.signature(func).bind(*args, **kwargs).arguments["output_size"]
        weight = keep.to(x)
        if GLOBAL[func] is None:  # max over the kept positions
            out = F.adaptive_max_pool2d(x.masked_fill(weight == 0, -torch.inf), size)
        else:
            out = F.adaptive_avg_pool2d(x * weight, size) / F.adaptive_avg_pool2d(
                weight, size).clamp(min=torch.finfo(x.dtype).tiny)
        kept = F.adaptive_max_pool2d(weight, size)
        out = torch.where(kept > 0, out, torch.zeros_like(out))
        return self._track(out, kept)


def _window(func, keep: torch.Tensor, args, kwargs) -> torch.Tensor:
    """The mask after a convolution or pooling: masked where the window touches a masked
    position."""
    if WINDOWED[func] == "conv":
        names = ("input", "weight", "bias", "stride", "padding", "dilation", "groups")
        a = {**dict(zip(names, args)), **kwargs}
        kernel = tuple(a["weight"].shape[2:])
        stride, padding, dilation = a.get("stride", 1), a.get("padding", 0), a.get("dilation", 1)
        if isinstance(padding, str):  # "same" / "valid"
            dilations = (dilation,) * len(kernel) if isinstance(dilation, int) else dilation
            padding = tuple(d * (k - 1) // 2 for k, d in zip(kernel, dilations)) \
                if padding == "same" else 0
        ceil_mode = False
    else:
        names = (("input", "kernel_size", "stride", "padding", "dilation", "ceil_mode")
                 if WINDOWED[func] in (F.max_pool1d, F.max_pool2d) else
                 ("input", "kernel_size", "stride", "padding", "ceil_mode"))
        a = {**dict(zip(names, args)), **kwargs}
        kernel = a["kernel_size"]
        stride = a.get("stride") or kernel
        padding, dilation = a.get("padding", 0), a.get("dilation", 1)
        ceil_mode = a.get("ceil_mode", False)
    pool = F.max_pool2d if keep.ndim == 4 else F.max_pool1d
    return 1 - pool(1 - keep.float(), kernel, stride, padding, dilation, ceil_mode)


def _flat(args, kwargs):
    for value in (*args, *kwargs.values()):
        if isinstance(value, (list, tuple)):
            yield from (v for v in value if isinstance(v, torch.Tensor))
        elif isinstance(value, torch.Tensor):
            yield value


def layer_masked_scores(scorer: Any, batch: torch.Tensor, rows: torch.Tensor,
                        keep: torch.Tensor) -> torch.Tensor:
    """``scorer(batch, rows)`` (a call's :class:`~pellucid._scorer.Scorer`, or its
    ``forward``) with the positions where ``keep`` is 0 masked at every layer."""
    with LayerMasking(keep) as mode:
        return scorer(mode.masked_input(batch), rows)


def check_layer_masking(masking: Any, model: Any, x: torch.Tensor | None = None) -> None:
    """``masking`` is ``"fill"`` or ``"layer"``; ``"layer"`` needs a torch Module and images."""
    if masking not in ("fill", "layer"):
        raise ValueError(f"masking must be 'fill' or 'layer', got {masking!r}")
    if masking == "layer" and getattr(model, "module", None) is None:
        raise TypeError("masking='layer' runs the layers of a torch.nn.Module; got a "
                        f"{getattr(model, 'kind', type(model).__name__)} model")
    if masking == "layer" and x is not None and x.ndim != 4:
        raise ValueError(f"masking='layer' masks the feature maps of a CNN: it needs images "
                         f"(N, C, H, W), got inputs of shape {tuple(x.shape)}")


def layer_masked_forward(module: torch.nn.Module, x: torch.Tensor, keep: torch.Tensor,
                         **forward_kwargs: Any) -> Any:
    """``module`` on ``x`` with the positions where ``keep`` (``(n, *spatial)``) is 0 masked
    at every layer."""
    with LayerMasking(keep) as mode:
        return module(mode.masked_input(x), **forward_kwargs)
