"""Layer masking (Balasubramanian & Feizi, "Towards Improved Input Masking for Convolutional
Neural Networks", ICCV 2023): the CNN processes only the unmasked part of its input.

A grey or black fill is itself an input: its shape and colour reach the logits (missingness
bias). Layer masking runs the model with the mask carried along: after every convolution or
pooling the mask is propagated through the same window (a position is masked when its window
touches a masked position: max-pool of the masked indicator with the layer's kernel, stride,
padding and dilation) and the masked positions are set to 0 again; elementwise layers (ReLU,
batch norm, additions) keep the mask and are re-masked too. An unmasked activation therefore
never reads a masked input. Global (adaptive) average and max pooling, and ``x.mean((2, 3))``,
read the unmasked positions only (``sum(a * keep) / sum(keep)``), so the size of the masked
region does not leak through the final average either (the paper averages the zeros too); a
window with no unmasked position gives 0. An operation on several masked tensors is masked
where any of them is (broadcast: a squeeze-excitation gate keeps the feature map's mask).

``with LayerMasking(keep): model(x * keep)`` (``keep``: ``(n, H, W)``, 1 = kept) is the whole
interface: a torch-function mode (thread-local, no hook, the model untouched). Operations that
change the layout or the spatial size in another way end the mask's journey. A head that
flattens the feature map reads the masked positions as zeros, as in the paper; a feature map
or tokens that go on after it (channels-last blocks of ConvNeXt or Swin, a ViT's patch tokens)
raise a warning, since the layers after it are no longer masked: layer masking is for CNNs in
``(N, C, H, W)`` layout (measured on the test architectures: ResNet, MobileNetV3 with its
squeeze-excitation, EfficientNet and DenseNet carry the mask to their global pooling).
"""
from __future__ import annotations

import inspect
import warnings
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
        keep = _combined(masks)
        x = next(t for t in _flat(args, kwargs) if self.mask_of(t) is not None)
        if func in GLOBAL:
            return self._global(func, x, keep, args, kwargs)
        if _is_spatial_mean(func, x, args, kwargs):
            return self._spatial_mean(func, x, keep, args, kwargs)
        out = func(*args, **kwargs)
        tensor = out[0] if isinstance(out, tuple) and out and torch.is_tensor(out[0]) else out
        if not torch.is_tensor(tensor) or tensor.ndim != x.ndim or tensor.shape[0] != len(keep):
            return _journey_ends(func, out, tensor, keep)  # flatten, linear head, tokens
        if func in WINDOWED:
            keep = _window(func, keep, args, kwargs)
        elif tensor.shape[2:] != keep.shape[2:]:
            return _journey_ends(func, out, tensor, keep)  # a permute, an interpolation
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


    def _spatial_mean(self, func, x, keep, args, kwargs):
        """``x.mean((2, 3))`` (any spelling of all spatial dimensions): over the kept
        positions only, like adaptive average pooling."""
        weight = keep.to(x)
        total, kept = func(x * weight, *args[1:], **kwargs), func(weight, *args[1:], **kwargs)
        out = torch.where(kept > 0, total / kept.clamp(min=torch.finfo(x.dtype).tiny),
                          torch.zeros_like(total))
        return self._track(out, (kept > 0).to(keep)) if out.ndim == x.ndim else out


def _combined(masks: list[torch.Tensor]) -> torch.Tensor:
    """One mask for an operation on several masked tensors: masked where any of them is, by
    broadcasting (a squeeze-excitation gate ``(n, 1, 1, 1)`` times a feature map's
    ``(n, 1, H, W)`` mask is the feature map's); masks of other spatial sizes are ignored."""
    keep = masks[0]
    for other in masks[1:]:
        try:
            torch.broadcast_shapes(keep.shape, other.shape)
        except RuntimeError:
            continue
        keep = keep * other
    return keep


def _is_spatial_mean(func, x: torch.Tensor, args, kwargs) -> bool:
    """``torch.mean(x, dim)`` / ``x.mean(dim)`` over exactly the spatial dimensions of ``x``."""
    if func not in (torch.mean, torch.Tensor.mean) or not args or args[0] is not x:
        return False
    dim = kwargs.get("dim", args[1] if len(args) > 1 else None)
    if dim is None:
        return False
    dims = dim if isinstance(dim, (tuple, list)) else (dim,)
    return {d % x.ndim for d in dims} == set(range(2, x.ndim))


def _journey_ends(func, out: Any, tensor: Any, keep: torch.Tensor) -> Any:
    """``out`` (its tensor: ``tensor``), the result of an operation the mask cannot follow. A flattened
    ``(n, features)`` head reads the masked positions as zeros, as in the paper; a feature map
    or tokens that go on (a permute to channels-last, a patch flatten) are warned about: the
    layers after it are no longer masked."""
    if torch.is_tensor(tensor) and tensor.ndim > 2 and bool((keep == 0).any()):
        warnings.warn(
            f"masking='layer': the mask cannot follow {getattr(func, '__name__', func)} (output "
            f"{tuple(tensor.shape)}); the layers after it read the masked positions as zeros. "
            "Layer masking is made for CNNs in (N, C, H, W) layout up to a global pooling or a "
            "flattened head (not channels-last blocks or transformer tokens).", stacklevel=2)
    return out


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
