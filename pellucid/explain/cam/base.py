"""Class activation maps: the base every CAM variant shares.

A CAM reads the activations ``A`` (and, for gradient variants, ``G = dy_c/dA``) of one layer,
combines them into a map at layer resolution, applies ReLU, upsamples bilinearly to the input
size and (by default) min-max normalizes each map to ``[0, 1]``.

Hook points of the variants (one each):
- ``_channel_weights(activations, gradients, batch) -> (B, C)``: the map is
  ``ReLU(sum_k w_k A_k)`` (Grad-CAM, Grad-CAM++, XGrad-CAM, Score-CAM, Ablation-CAM, CF-CAM);
- ``_layer_map(activations, gradients, batch) -> (B, h, w)``: the element-wise
  combination, for the variants that are not a channel weighting (LayerCAM, HiResCAM, EigenCAM).

Hooks live only inside :func:`forward_hook` (a context manager that removes them in ``finally``);
the user's model is never modified (parameters, mode, ``requires_grad``) and no ``.grad`` is
written (gradients come from ``torch.autograd.grad``).
"""
from __future__ import annotations

import contextlib
import difflib
import threading
from typing import Any, Callable, Iterator, NamedTuple

import torch
from torch import nn

from ..._imaging import upsample
from ..._batching import iter_slices
from ..._scorer import Scorer
from ...models import module_device, module_dtype
from ..base import WhiteBoxExplainer
from .reshape import channels_last_reshape, grid_of_patches, vit_reshape

POOLING_LAYERS = (nn.modules.pooling._AdaptiveAvgPoolNd, nn.modules.pooling._AdaptiveMaxPoolNd,
                  nn.modules.pooling._AvgPoolNd, nn.modules.pooling._MaxPoolNd,
                  nn.modules.pooling._LPPoolNd)


@contextlib.contextmanager
def forward_hook(module: nn.Module, hook: Callable) -> Iterator[None]:
    """``module.register_forward_hook(hook)`` for the duration of the block; removed even when
    the block raises. The hook acts only on the forward passes of the thread that registered
    it: another thread running the same model meanwhile (a server explaining requests from a
    thread pool) is neither captured nor ablated."""
    owner = threading.get_ident()

    def this_thread_only(hooked: nn.Module, inputs: Any, output: Any) -> Any:
        if threading.get_ident() == owner:
            return hook(hooked, inputs, output)
        return None

    handle = module.register_forward_hook(this_thread_only)
    try:
        yield
    finally:
        handle.remove()


def resolve_target_layer(model: nn.Module, target_layer: Any) -> nn.Module | None:
    """The submodule named by ``target_layer`` (a module of ``model`` or a dotted name);
    ``None`` stays ``None`` (chosen per call by :func:`find_target_layer`)."""
    if target_layer is None:
        return None
    if isinstance(target_layer, str):
        modules = dict(model.named_modules())
        if target_layer not in modules:
            names = [name for name in modules if name]
            close = difflib.get_close_matches(target_layer, names, n=5, cutoff=0.4)
            hint = f"close names: {close}" if close else f"available: {names[:20]}"
            raise ValueError(f"target_layer {target_layer!r} is not a module of the model; {hint}")
        return modules[target_layer]
    if isinstance(target_layer, nn.Module):
        if not any(m is target_layer for m in model.modules()):
            raise ValueError(f"target_layer {type(target_layer).__name__} is not a submodule of "
                             "the model being explained")
        return target_layer
    raise TypeError(f"target_layer must be a module, a dotted module name or None; "
                    f"got {type(target_layer).__name__}")


def find_target_layer(model: nn.Module, inputs: torch.Tensor,
                      forward_kwargs: dict[str, Any] | None = None) -> str:
    """Dotted name of the layer a CAM uses when ``target_layer=None`` (see
    :func:`choose_target_layer`)."""
    return choose_target_layer(model, inputs, forward_kwargs)[0]


def choose_target_layer(model: nn.Module, inputs: torch.Tensor,
                        forward_kwargs: dict[str, Any] | None = None
                        ) -> tuple[str, Callable | None]:
    """``(dotted name, reshape)`` of the layer a CAM uses when ``target_layer=None``.

    A probe forward pass on ``inputs[:1]`` records, with temporary forward hooks on every
    submodule, the order in which modules finish and their output shapes. The choice is the last
    module to finish whose output is a 4-D feature map with more than one spatial position and
    which is not a pooling layer: the output of the last convolutional stage, before global
    pooling. For ``conv -> ReLU -> pool -> linear`` that is the ReLU (the rectified feature maps
    of the last convolution); for a ResNet ``layer4`` (its last residual block), for a VGG
    ``features``.

    A 4-D output is read as channels-last ``(N, h, w, C)`` (Swin stages, ConvNeXt blocks inside,
    timm's Swin final norm) when :func:`is_channels_last` says so; ``reshape`` is then
    :func:`~pellucid.explain.cam.reshape.channels_last_reshape` (else ``None``).

    When token outputs ``(N, 1 + h*w, C)`` (a class token and patches; ``(h, w)`` a downscaled
    grid of the input) finish after the last such map (a ViT: only its patch embedding is 4-D), the
    choice is the last module with the residual stream's shape (the most common token shape)
    whose patch tokens still change the output (one backward pass of the probe): the input norm
    of the last block (``blocks[-1].norm1``) on a ViT whose head reads the class token, as
    advised for Grad-CAM on ViTs (later patch tokens get no gradient); ``reshape`` is
    ``vit_reshape(h, w)``.
    """
    names = {id(module): name for name, module in model.named_modules() if name}
    finished: list[tuple[str, Callable | None]] = []
    tokens: list[tuple[str, torch.Tensor, vit_reshape]] = []
    grid = tuple(inputs.shape[2:])

    def record(module, _inputs, output):
        if not torch.is_tensor(output) or isinstance(module, POOLING_LAYERS):
            return
        if output.ndim == 3 and len(output) == 1:
            reshape = token_reshape(output.shape[1], grid)
            if reshape is not None:
                tokens.append((names[id(module)], output, reshape))
            return
        if output.ndim != 4:
            return
        tokens.clear()  # a later 4-D stage: the token outputs before it are not the last stage
        last = is_channels_last(module, tuple(output.shape), grid)
        spatial = output.shape[1:3] if last else output.shape[2:]
        if spatial[0] * spatial[1] > 1:
            finished.append((names[id(module)], channels_last_reshape if last else None))

    with contextlib.ExitStack() as stack:
        for module in model.modules():
            if id(module) in names:
                stack.enter_context(forward_hook(module, record))
        # a leaf of its own (a normal tensor even if inputs came from inference mode): the
        # gradient check works on frozen models
        leaf = inputs[:1].detach().to(module_device(model), module_dtype(model)).clone()
        with torch.enable_grad():
            output = model(leaf.requires_grad_(True).clone(), **(forward_kwargs or {}))
    if tokens:
        return _last_token_layer(tokens, output)
    if not finished:
        raise ValueError("found no layer with a 4-D output (N, C, h, w) with more than one "
                         "spatial position, nor token outputs (N, 1 + h*w, C), to build a CAM "
                         "from; pass target_layer= (a module or dotted name), and for other "
                         "token layouts also reshape=")
    return finished[-1]


def token_reshape(count: int, grid: tuple[int, ...]) -> vit_reshape | None:
    """``vit_reshape(h, w)`` when ``count`` tokens are a class token and an ``h x w`` grid with
    the input's aspect ratio, else ``None``. Tokens without a class token are not read as a
    grid: they are as likely flattened maps of a hybrid model that has a 4-D stage."""
    if count - 1 < 2 or len(grid) != 2:
        return None
    found = grid_of_patches(count - 1, grid)
    return None if found is None or found[0] > grid[0] else vit_reshape(*found)


def _last_token_layer(tokens: list[tuple[str, torch.Tensor, vit_reshape]], output: Any
                      ) -> tuple[str, vit_reshape]:
    """The last token output of the residual stream's shape whose patch tokens reach
    ``output`` (its first tensor)."""
    shapes = [tuple(tensor.shape) for _, tensor, _ in tokens]
    stream = max(set(shapes), key=shapes.count)
    candidates = [(name, tensor, reshape) for name, tensor, reshape in tokens
                  if tuple(tensor.shape) == stream]
    while isinstance(output, (tuple, list, dict)) and output:
        output = next(iter(output.values())) if isinstance(output, dict) else output[0]
    if not (torch.is_tensor(output) and output.requires_grad):
        return candidates[-1][0], candidates[-1][2]
    grads = torch.autograd.grad(output.float().sum(), [tensor for _, tensor, _ in candidates],
                                allow_unused=True)
    for (name, _, reshape), grad in zip(reversed(candidates), reversed(grads)):
        patches = None if grad is None else grad[:, 1:]
        if patches is not None and bool((patches != 0).any()):
            return name, reshape
    return candidates[-1][0], candidates[-1][2]


def is_channels_last(module: nn.Module, shape: tuple[int, ...], grid: tuple[int, ...]) -> bool:
    """Whether a 4-D output ``shape`` is ``(N, h, w, C)`` for inputs of spatial size ``grid``:
    when ``(h, w)`` of that reading is a downscaled grid of the input (same aspect ratio, not
    larger) and the ``(N, C, h, w)`` reading is not; when both readings are, when the module
    acts on the last dimension (``LayerNorm``, ``Linear``)."""
    def is_grid(h: int, w: int) -> bool:
        return len(grid) == 2 and h <= grid[0] and w <= grid[1] and h * grid[1] == w * grid[0]

    first, last = is_grid(*shape[2:]), is_grid(*shape[1:3])
    if first and last:
        return isinstance(module, (nn.LayerNorm, nn.Linear))
    return last


class Batch(NamedTuple):
    """What a variant may need besides the activations and gradients of one batch."""

    inputs: torch.Tensor   # (B, C, H, W) on the model's device
    rows: torch.Tensor     # (B,) long: which inputs of the call they are
    scorer: Scorer         # the call's scores (targets, forward arguments)
    scores: torch.Tensor   # (B,) the target scores y_c of the unperturbed inputs
    layer: nn.Module       # the target layer
    reshape: Callable | None  # ``reshape``, or the one of an automatically chosen layer


class BaseCAM(WhiteBoxExplainer):
    """Class activation map of ``target_layer`` for each input and target.

    Parameters:
        target_layer: a submodule, its dotted name (``"layer4.1"``), or ``None`` for the last
            convolutional stage found by :func:`find_target_layer` (on a ViT, the last block's
            input norm, read with ``vit_reshape``). If the layer runs several
            times in one forward pass, its last call is used (Ablation-CAM zeroes every call).
        reshape: callable mapping the layer's output to ``(N, C, h, w)``, for token activations:
            ``vit_reshape(height, width)`` maps ``(N, 1 + h*w, C)`` to ``(N, C, h, w)``. It must
            only select and rearrange elements (gradients and ablations are mapped the same way).
            Needs an explicit ``target_layer``.
        normalize: min-max scale each map to ``[0, 1]`` (an all-zero map stays zero), as
            pytorch-grad-cam and TorchCAM do; ``False`` returns the ReLU-ed map as computed.
        batch_size, seed, device, progress: see :class:`~pellucid.explain.base.Explainer`.

    Returns maps ``(N, H, W)`` at input size (bilinear upsampling of the layer-resolution map,
    ``align_corners=False``). Works under the caller's ``torch.no_grad()``; the forward pass is
    run by ``explain`` itself.
    """

    needs_gradients = True
    input_kinds = ("images",)

    def __init__(self, model: Any, *, target_layer: Any = None, reshape: Callable | None = None,
                 normalize: bool = True, **common: Any):
        super().__init__(model, **common)
        self._layer = resolve_target_layer(self.module, target_layer)
        self.target_layer = target_layer
        if reshape is not None and not callable(reshape):
            raise TypeError(f"reshape must be a callable (N, ...) -> (N, C, h, w) or None; "
                            f"got {type(reshape).__name__}")
        if reshape is not None and target_layer is None:
            raise ValueError("reshape needs an explicit target_layer (the automatic choice only "
                             "looks at 4-D outputs); for a ViT name a token layer inside the last "
                             "block, e.g. its first LayerNorm: the patch tokens of the final norm "
                             "never reach a class-token head, so their gradients are zero")
        self.reshape = reshape
        if not isinstance(normalize, bool):
            raise TypeError(f"normalize must be True or False, got {normalize!r}")
        self.normalize = normalize

    # -- the pipeline --------------------------------------------------------------------
    def _explain(self, x: torch.Tensor, scorer: Scorer) -> torch.Tensor:
        layer, reshape = self._layer, self.reshape
        if layer is None:
            first_kwargs = scorer.kwargs_for(torch.zeros(1, dtype=torch.long))
            name, chosen = choose_target_layer(self.module, x, first_kwargs)
            layer = dict(self.module.named_modules())[name]
            reshape = chosen if reshape is None else reshape
        maps = []
        for s in iter_slices(len(x), self.batch_size, self.progress, type(self).__name__):
            xb = x[s].to(self._model.device, self._model.dtype)
            rows = torch.arange(s.start, s.stop)
            activations, gradients, scores = self._capture(layer, reshape, xb, scorer, rows)
            layer_map = self._layer_map(activations, gradients,
                                        Batch(xb, rows, scorer, scores, layer, reshape))
            maps.append(torch.relu(layer_map).detach().float().cpu())
        cams = upsample(torch.cat(maps), tuple(x.shape[2:]))
        return min_max_normalize(cams) if self.normalize else cams

    def _capture(self, layer: nn.Module, reshape: Callable | None, x: torch.Tensor,
                 scorer: Scorer, rows: torch.Tensor
                 ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
        """Activations ``(B, C, h, w)`` (the layer's output through ``reshape``), their
        gradients (or ``None`` for gradient-free variants) and the target scores ``(B,)`` for
        one batch."""
        captured: list[torch.Tensor] = []

        def keep(_module, _inputs, output):
            if not torch.is_tensor(output):
                raise TypeError(f"target_layer must output a tensor; got "
                                f"{type(output).__name__}")
            captured[:] = [output]
            # the rest of the network gets a copy, so in-place operations downstream
            # (ReLU(inplace=True)) cannot change the captured activation
            return output.clone()

        # the input requires grad so that the layer is in the graph even when the user's
        # parameters are frozen; grad mode is set here, whatever the caller's context
        leaf = x.detach().clone().requires_grad_(self.needs_gradients)
        with torch.set_grad_enabled(self.needs_gradients):
            with forward_hook(layer, keep):
                out = self.module(leaf, **scorer.kwargs_for(rows))
            if not captured:
                raise RuntimeError("target_layer was not called during the forward pass")
            output = captured[0]
            scores = scorer.select(out, rows)[:, 0]
            gradients = None
            if self.needs_gradients:
                (grad,) = torch.autograd.grad(scores.sum(), output)
                gradients = self._to_maps(grad.detach(), reshape)
        return self._to_maps(output.detach(), reshape), gradients, scores.detach()

    def _to_maps(self, tensor: torch.Tensor, reshape: Callable | None) -> torch.Tensor:
        """The layer's output (or a tensor laid out like it) as ``(B, C, h, w)``, through
        ``reshape`` (that of :class:`Batch`)."""
        maps = reshape(tensor) if reshape is not None else tensor
        if not torch.is_tensor(maps) or maps.ndim != 4:
            shape = tuple(maps.shape) if torch.is_tensor(maps) else type(maps).__name__
            hint = ("" if self.reshape is not None else
                    "; for token activations (N, tokens, C) pass reshape=vit_reshape(h, w)")
            raise ValueError(f"CAM needs layer activations (N, C, h, w); target_layer gives "
                             f"{shape}{hint}")
        return maps

    # -- hook points of the variants ---------------------------------------------------------
    def _layer_map(self, activations: torch.Tensor, gradients: torch.Tensor | None,
                   batch: Batch) -> torch.Tensor:
        """Map ``(B, h, w)`` before ReLU; by default ``sum_k w_k A_k``."""
        weights = self._channel_weights(activations, gradients, batch)
        return torch.einsum("bc,bchw->bhw", weights, activations)

    def _channel_weights(self, activations: torch.Tensor, gradients: torch.Tensor | None,
                         batch: Batch) -> torch.Tensor:
        """Weights ``(B, C)`` of the channels."""
        raise NotImplementedError


def min_max_normalize(maps: torch.Tensor) -> torch.Tensor:
    """Each map of ``(N, H, W)`` scaled to ``[0, 1]``; a constant map becomes zeros."""
    flat = maps.reshape(len(maps), -1)
    low = flat.min(1, keepdim=True).values
    span = flat.max(1, keepdim=True).values - low
    scaled = torch.where(span > 0, (flat - low) / span.clamp_min(torch.finfo(maps.dtype).tiny),
                         torch.zeros_like(flat))
    return scaled.reshape(maps.shape)


def safe_divide(numerator: torch.Tensor, denominator: torch.Tensor) -> torch.Tensor:
    """``numerator / denominator`` with 0 where the denominator is 0."""
    nonzero = denominator != 0
    return torch.where(nonzero, numerator / torch.where(nonzero, denominator, 1), 0)
