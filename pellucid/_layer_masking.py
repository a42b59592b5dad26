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
where any of them is (broadcast: a squeeze-excitation gate keeps the feature map's mask); each
output of a split (``chunk``, ``split``, ``unbind``) keeps the mask; ``F.pad`` (a convolution's
reflect, replicate or circular padding) pads the mask the same way. Views are masked out of
place (writing into a view would write into its base).

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

import warnings
from typing import Any

import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode
from torch.utils.weak import WeakIdKeyDictionary

WINDOWED = {F.conv1d: "conv", F.conv2d: "conv", F.max_pool2d: F.max_pool2d,
            F.avg_pool2d: F.avg_pool2d, F.max_pool1d: F.max_pool1d, F.avg_pool1d: F.avg_pool1d}
"""Convolutions and pooling: the mask goes through a max-pool with the same window."""

GLOBAL = {F.adaptive_avg_pool2d: F.adaptive_avg_pool2d, F.adaptive_max_pool2d: None}
"""Adaptive pooling: over the unmasked positions only."""


class LayerMasking(TorchFunctionMode):
    """Carry ``keep`` (``(n, *spatial)``, 1 = kept, 0 = masked) through the model's layers.

    Each tracked tensor's mask is held in a weak-keyed table: an activation is freed when the
    model lets go of it, as in a plain pass (holding it would keep every layer's activations
    alive to the end of the pass: 62 MB instead of 2 MB on ten conv blocks of 8 x 16 x 64 x 64).
    """

    def __init__(self, keep: torch.Tensor):
        super().__init__()
        self.keep = keep
        self._masks = WeakIdKeyDictionary()

    def masked_input(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` with its masked positions set to 0, tracked from here on."""
        keep = self.keep.to(x)[:, None]
        return self._track(x * keep, keep)

    def _track(self, tensor: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        self._masks[tensor] = keep
        return tensor

    def mask_of(self, tensor: Any) -> torch.Tensor | None:
        return self._masks.get(tensor) if isinstance(tensor, torch.Tensor) else None

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        masks = [m for m in map(self.mask_of, _flat(args, kwargs)) if m is not None]
        if not masks:
            return func(*args, **kwargs)
        keep = _combined(masks)
        x = next(t for t in _flat(args, kwargs) if self.mask_of(t) is not None)
        if func in GLOBAL and not _returns_indices(args, kwargs):
            return self._global(func, x, keep, args, kwargs)
        if _is_spatial_mean(func, x, args, kwargs):
            return self._spatial_mean(func, x, keep, args, kwargs)
        out = func(*args, **kwargs)
        if func in WINDOWED:
            keep = _window(func, keep, args, kwargs)
        elif func is F.pad:  # the padding of a reflect / replicate / circular convolution
            keep = _padded(keep, args, kwargs)
        if isinstance(out, (tuple, list)):  # chunk, split, unbind; a pool's (values, indices)
            return type(out)(self._follow(func, item, x, keep) for item in out)
        return self._follow(func, out, x, keep)

    def _follow(self, func, tensor: Any, x: torch.Tensor, keep: torch.Tensor) -> Any:
        """``tensor`` (an output of ``func``) masked again and tracked when it is a feature map
        of the same layout as ``x`` and the mask's size; else returned as is (indices, shapes,
        a flattened head: :func:`_journey_ends`)."""
        if not (torch.is_tensor(tensor) and tensor.is_floating_point()):
            return tensor
        if (tensor.ndim != x.ndim or tensor.shape[0] != len(keep)
                or tensor.shape[2:] != keep.shape[2:]):
            return _journey_ends(func, tensor, keep)
        keep = keep.to(tensor.device)
        if tensor._is_view():  # writing into a view would write into its base (or fail)
            tensor = tensor * keep.to(tensor.dtype)
        else:
            tensor.mul_(keep.to(tensor.dtype))  # re-apply: masked positions are 0 again
        return self._track(tensor, keep)

    def _global(self, func, x, keep, args, kwargs):
        size = kwargs.get("output_size", args[1] if len(args) > 1 else None)
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


def _returns_indices(args, kwargs) -> bool:
    """Adaptive max pooling asked for its indices too (then followed like any other op)."""
    return bool(kwargs.get("return_indices", args[2] if len(args) > 2 else False))


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
        keep = keep * other.to(keep.device)
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


def _journey_ends(func, tensor: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """``tensor``, an output of ``func`` the mask cannot follow, as is. A flattened
    ``(n, features)`` head reads the masked positions as zeros, as in the paper; a feature map
    or tokens that go on (a permute to channels-last, a patch flatten) are warned about: the
    layers after it are no longer masked."""
    if tensor.ndim > 2 and bool((keep == 0).any()):
        warnings.warn(
            f"masking='layer': the mask cannot follow {getattr(func, '__name__', func)} (output "
            f"{tuple(tensor.shape)}); the layers after it read the masked positions as zeros. "
            "Layer masking is made for CNNs in (N, C, H, W) layout up to a global pooling or a "
            "flattened head (not channels-last blocks or transformer tokens).", stacklevel=2)
    return tensor


def _window(func, keep: torch.Tensor, args, kwargs) -> torch.Tensor:
    """The mask after a convolution or pooling: masked where the window touches a masked
    position. Convolutions: the masked indicator convolved with a kernel of ones of the same
    geometry (any padding, ``"same"`` with its asymmetric padding, dilation, stride); pooling:
    max-pooled with the same window."""
    masked = 1 - keep.to(torch.float32)
    if WINDOWED[func] == "conv":
        names = ("input", "weight", "bias", "stride", "padding", "dilation", "groups")
        a = {**dict(zip(names, args)), **kwargs}
        ones = torch.ones(1, 1, *a["weight"].shape[2:], device=masked.device)
        convolve = F.conv2d if keep.ndim == 4 else F.conv1d
        touched = convolve(masked, ones, None, a.get("stride", 1), a.get("padding", 0),
                           a.get("dilation", 1))
        return (touched <= 0.5).to(keep.dtype)
    names = (("input", "kernel_size", "stride", "padding", "dilation", "ceil_mode")
             if WINDOWED[func] in (F.max_pool1d, F.max_pool2d) else
             ("input", "kernel_size", "stride", "padding", "ceil_mode"))
    a = {**dict(zip(names, args)), **kwargs}
    kernel = a["kernel_size"]
    pool = F.max_pool2d if keep.ndim == 4 else F.max_pool1d
    return 1 - pool(masked, kernel, a.get("stride") or kernel, a.get("padding", 0),
                    a.get("dilation", 1), a.get("ceil_mode", False)).to(keep.dtype)


def _padded(keep: torch.Tensor, args, kwargs) -> torch.Tensor:
    """The mask of ``F.pad(x, pad, mode, value)``: padded the same way (a copied position is
    masked where its source is), constant padding kept, like a convolution's zero padding."""
    names = ("input", "pad", "mode", "value")
    a = {**dict(zip(names, args)), **kwargs}
    mode = a.get("mode", "constant")
    if mode == "constant":
        return F.pad(keep, a["pad"], value=1.0)
    return F.pad(keep, a["pad"], mode=mode)


def _flat(args, kwargs):
    for value in (*args, *kwargs.values()):
        if isinstance(value, (list, tuple)):
            yield from (v for v in value if isinstance(v, torch.Tensor))
        elif isinstance(value, torch.Tensor):
            yield value


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


def layer_masked_forward(module: Any, x: torch.Tensor, keep: torch.Tensor, *args: Any,
                         **forward_kwargs: Any) -> Any:
    """``module(x, *args, **forward_kwargs)`` (a torch Module, or a call's
    :class:`~pellucid._scorer.Scorer` or its ``forward`` with ``rows`` in ``args``) with the
    positions where ``keep`` (``(n, *spatial)``) is 0 masked at every layer."""
    with LayerMasking(keep) as mode:
        return module(mode.masked_input(x), *args, **forward_kwargs)
