"""The model seen through concepts: splitting ``f = h o g`` and the two wrapper modules.

- :func:`split_sequential` cuts an ``nn.Sequential`` after a layer into ``g`` (input ->
  activations) and ``h`` (activations -> logits); the user's modules are shared, not copied
  or changed.
- :class:`ConceptHead`: ``u -> h(u W + offset)``, the rest of the model on concept
  coefficients (per spatial position when ``u`` is ``(B, R, h, w)``). Concept importance is an
  attribution of this module's output to its input ``u``.
- :class:`ConceptMaskModel`: ``m -> h((u * m) W + offset)``, a model of the concept masks
  ``m (B, R)`` (1 keeps a concept everywhere, 0 removes it) with the coefficients ``u`` passed
  per input as ``forward_kwargs={"coefficients": u}``. Any pellucid Explainer on it (baseline
  0) is a concept importance, and any pellucid metric on it is a concept metric: Deletion,
  Insertion and MuFidelity on masks of ones give C-Deletion, C-Insertion and C-muFidelity
  (Fel et al., 2023, "A Holistic Approach ...").
- :class:`ConceptModel`: ``x -> U``, the concept coefficients of an image (activations
  averaged over space, then encoded). Any pellucid Explainer applied to it with
  ``targets=k`` explains where concept ``k`` comes from in the input.
"""
from __future__ import annotations

from collections import OrderedDict
from typing import Any

import torch
from torch import nn

from ...models import module_device
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


def decode(coefficients: torch.Tensor, components: torch.Tensor,
           offset: torch.Tensor) -> torch.Tensor:
    """Activations from coefficients: ``(B, R) -> (B, C)``, or per position
    ``(B, R, h, w) -> (B, C, h, w)``."""
    if coefficients.ndim == 4:
        return (torch.einsum("brhw,rc->bchw", coefficients, components)
                + offset[None, :, None, None])
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
    ``k`` at every position of ``coefficients`` ``(B, R)`` or ``(B, R, h, w)``."""

    def __init__(self, head: ConceptHead):
        super().__init__()
        self.head = head

    def forward(self, masks: torch.Tensor, coefficients: torch.Tensor) -> torch.Tensor:
        spatial = (1,) * (coefficients.ndim - 2)
        return self.head(coefficients * masks.view(*masks.shape, *spatial))


def pool_activations(activations: torch.Tensor) -> torch.Tensor:
    """``(B, C, h, w)`` -> ``(B, C)`` by the spatial mean; ``(B, C)`` as is."""
    if activations.ndim == 4:
        return activations.mean(dim=(2, 3))
    if activations.ndim == 2:
        return activations
    raise ValueError(f"g must output activations (B, C, h, w) or (B, C); got shape "
                     f"{tuple(activations.shape)}")


class ConceptModel(nn.Module):
    """``x -> U (B, n_concepts)``: spatially averaged activations ``g(x)``, encoded.

    Differentiable (implicit differentiation, see ``factorization``) except for KMeans.
    """

    def __init__(self, g: nn.Module, factorization: ConceptFactorization):
        super().__init__()
        self.g = g
        self.factorization = factorization

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return encode_differentiable(pool_activations(self.g(x)), self.factorization)
