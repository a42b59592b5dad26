"""The model seen through concepts: splitting ``f = h o g`` and the two wrapper modules.

- :func:`split_sequential` cuts an ``nn.Sequential`` after a layer into ``g`` (input ->
  activations) and ``h`` (activations -> logits); the user's modules are shared, not copied
  or changed.
- :class:`ConceptHead`: ``u -> h(u W + offset)``, the rest of the model on concept
  coefficients (per spatial position when ``u`` is ``(B, R, h, w)``, per token when ``u`` is
  ``(B, R, T)``). Concept importance is an attribution of this module's output to its input
  ``u``.
- :class:`ConceptMaskModel`: ``m -> h((u * m) W + offset)``, a model of the concept masks
  ``m (B, R)`` (1 keeps a concept everywhere, 0 removes it) with the coefficients ``u`` passed
  per input as ``forward_kwargs={"coefficients": u}``. Any pellucid Explainer on it (baseline
  0) is a concept importance, and any pellucid metric on it is a concept metric: Deletion,
  Insertion and MuFidelity on masks of ones give C-Deletion, C-Insertion and C-muFidelity
  (Fel et al., 2023, "A Holistic Approach ...").
- :class:`ConceptModel`: ``x -> U``, the concept coefficients of an image (activations
  averaged over space, then encoded). Any pellucid Explainer applied to it with
  ``targets=k`` explains where concept ``k`` comes from in the input.

ViT token activations ``(B, T, D)`` (batch first; an optional class token first, then the
``h x w`` patch tokens row by row) are read with the CAMs' ``vit_reshape`` convention
(:func:`token_layout`): the spatial mean is the mean over the patch tokens (the class token
is no position), and coefficients per token are ``(B, R, T)`` (every token, the class token
included, so that ``h`` gets all its tokens back).
"""
from __future__ import annotations

from collections import OrderedDict
from typing import Any

import torch
from torch import nn

from ...models import module_device
from ..cam.base import token_reshape
from ..cam.reshape import vit_reshape
from .factorization import ConceptFactorization, encode_differentiable


def split_sequential(model: nn.Module, layer: Any) -> tuple[nn.Module, nn.Module]:
    """``(g, h)`` with ``g`` = ``model`` up to and including ``layer``, ``h`` = the rest.

    ``layer``: an index into the ``nn.Sequential`` (negative allowed), the name of a child,
    or a dotted name (``"features.3"``) into nested ``nn.Sequential`` containers.
    """
    if not isinstance(model, nn.Sequential):
        raise TypeError(
            f"to split a model by layer it must be a torch.nn.Sequential; got "
            f"{type(model).__name__}. Pass the two parts instead: Craft(g, h).")
    names = [name for name, _ in model.named_children()]
    head, _, rest = layer.partition(".") if isinstance(layer, str) else (layer, "", "")
    if isinstance(head, str) and head in names:
        index = names.index(head)
    elif isinstance(head, int) and not isinstance(head, bool) and -len(names) <= head < len(names):
        index = head % len(names)
    else:
        raise ValueError(f"layer must be an index in [-{len(names)}, {len(names)}) or one of "
                         f"the children's names {names}; got {layer!r}")
    children = list(model.named_children())  # names are kept in both parts
    if rest:
        name, child = children[index]
        inner_g, inner_h = split_sequential(child, rest)
        return (nn.Sequential(OrderedDict(children[:index] + [(name, inner_g)])),
                nn.Sequential(OrderedDict([(name, inner_h)] + children[index + 1:])))
    return (nn.Sequential(OrderedDict(children[:index + 1])),
            nn.Sequential(OrderedDict(children[index + 1:])))


def token_layout(count: int, grid: tuple[int, ...], reshape: vit_reshape | None = None
                 ) -> vit_reshape:
    """How ``count`` tokens ``(B, count, D)`` of images of size ``grid`` (H, W) lie on the patch
    grid: ``reshape`` when given, else ``1 + h*w`` tokens are a class token and an ``h x w``
    grid with the input's aspect ratio (``token_reshape``, as the CAMs read ViT tokens), and
    ``h*w`` such tokens a grid without a class token. ValueError for any other count."""
    if reshape is None:
        reshape = token_reshape(count, grid)
    if reshape is None:
        grid_only = token_reshape(count + 1, grid)
        if grid_only is None:
            raise ValueError(
                f"g outputs {count} tokens (B, {count}, D) for {tuple(grid)} images: neither "
                f"1 class token + an h x w patch grid nor an h x w grid with the images' aspect "
                f"ratio. Pass reshape=vit_reshape(h, w, drop_class_token=...) (from "
                f"pellucid.explain.cam) for other layouts.")
        reshape = vit_reshape(grid_only.height, grid_only.width, drop_class_token=False)
    expected = reshape.height * reshape.width + reshape.drop_class_token
    if count != expected:
        raise ValueError(f"{reshape!r} expects {expected} tokens; g outputs {count} for "
                         f"{tuple(grid)} images")
    return reshape


def activation_layout(activations: torch.Tensor, x: torch.Tensor,
                      reshape: vit_reshape | None = None) -> vit_reshape | None:
    """The :func:`token_layout` of ``g(x)`` when it is tokens ``(B, T, D)``; ``None`` for other
    activations."""
    if activations.ndim != 3:
        return None
    return token_layout(activations.shape[1], tuple(x.shape[2:]), reshape)


def tokens_to_grid(coefficients: torch.Tensor, layout: vit_reshape) -> torch.Tensor:
    """Per-token coefficients ``(B, R, T) -> (B, R, h, w)``: the patch tokens on their grid."""
    return layout(coefficients.transpose(1, 2))


def decode(coefficients: torch.Tensor, components: torch.Tensor,
           offset: torch.Tensor) -> torch.Tensor:
    """Activations from coefficients: ``(B, R) -> (B, C)``, per position
    ``(B, R, h, w) -> (B, C, h, w)``, or per token ``(B, R, T) -> (B, T, C)``."""
    if coefficients.ndim == 4:
        return (torch.einsum("brhw,rc->bchw", coefficients, components)
                + offset[None, :, None, None])
    if coefficients.ndim == 3:
        return torch.einsum("brt,rc->btc", coefficients, components) + offset
    return coefficients @ components + offset


class ConceptHead(nn.Module):
    """``u -> h(u W + offset)``; ``W``, ``offset`` are buffers on ``h``'s device."""

    def __init__(self, h: nn.Module, factorization: ConceptFactorization):
        super().__init__()
        self.h = h
        device = module_device(h)
        self.register_buffer("components", torch.as_tensor(
            factorization.components_, dtype=torch.float32, device=device))
        self.register_buffer("offset", torch.as_tensor(
            factorization.offset_, dtype=torch.float32, device=device))

    def forward(self, coefficients: torch.Tensor) -> torch.Tensor:
        return self.h(decode(coefficients, self.components, self.offset))


class ConceptMaskModel(nn.Module):
    """``(m, coefficients) -> h((coefficients * m) W + offset)``: ``m (B, R)`` scales concept
    ``k`` at every position of ``coefficients`` ``(B, R)``, ``(B, R, h, w)`` or at every
    token of ``(B, R, T)``."""

    def __init__(self, head: ConceptHead):
        super().__init__()
        self.head = head

    def forward(self, masks: torch.Tensor, coefficients: torch.Tensor) -> torch.Tensor:
        spatial = (1,) * (coefficients.ndim - 2)
        return self.head(coefficients * masks.view(*masks.shape, *spatial))


def pool_activations(activations: torch.Tensor, layout: vit_reshape | None = None
                     ) -> torch.Tensor:
    """``(B, C, h, w)`` -> ``(B, C)`` by the spatial mean; tokens ``(B, T, D)`` -> ``(B, D)``
    by the mean over the patch tokens of ``layout`` (the class token is no position);
    ``(B, C)`` as is."""
    if activations.ndim == 3 and layout is not None:
        return layout(activations).mean(dim=(2, 3))
    if activations.ndim == 4:
        return activations.mean(dim=(2, 3))
    if activations.ndim == 2:
        return activations
    raise ValueError(f"g must output activations (B, C, h, w), tokens (B, T, D) or vectors "
                     f"(B, C); got shape {tuple(activations.shape)}")


class ConceptModel(nn.Module):
    """``x -> U (B, n_concepts)``: spatially averaged activations ``g(x)`` (the mean patch
    token for tokens, read with ``reshape`` or :func:`token_layout`), encoded.

    Differentiable (implicit differentiation, see ``factorization``) except for KMeans.
    """

    def __init__(self, g: nn.Module, factorization: ConceptFactorization,
                 reshape: vit_reshape | None = None):
        super().__init__()
        self.g = g
        self.factorization = factorization
        self.reshape = reshape

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        activations = self.g(x)
        layout = activation_layout(activations, x, self.reshape)
        return encode_differentiable(pool_activations(activations, layout), self.factorization)
