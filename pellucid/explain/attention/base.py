"""What the ViT attention explainers share: the captured pass, the checks, the patch grid.

What is required of the model (a ViT for image classification, torchvision- or timm-style):

- self-attention in every block, computed by ``nn.MultiheadAttention``,
  ``F.scaled_dot_product_attention`` or by hand (``softmax`` over the last axis of
  ``(B, heads, L, S)`` scores, then ``@ v``); every captured attention, in call order, is one
  layer, and all have the same ``tokens x tokens`` shape;
- tokens laid out as ``[class token, other prefix tokens, patches row by row]``: the class token
  at index 0; ``nb_prefix_tokens`` counts it with any register or distillation tokens;
- the patch grid ``(h, w)`` is inferred from the token count and the image's aspect ratio
  (``h * w`` patches with ``h / w = H / W``), or given as ``patch_grid``.

The model is run as it is (no hook, no change); the token maps ``(B, T, h*w)`` of a method are
upsampled bilinearly to the image, as the CAMs are, and min-max scaled when ``normalize``.
"""
from __future__ import annotations

import numbers
from typing import Any

import torch

from ..._batching import iter_slices
from ..._imaging import upsample
from ..._scorer import Scorer
from ..._validation import check_positive_int
from ..base import WhiteBoxExplainer
from ..cam.base import min_max_normalize
from ..cam.reshape import grid_of_patches
from .capture import Attention, AttentionCapture


class AttentionExplainer(WhiteBoxExplainer):
    """Base of the attention maps of a ViT (requirements: the module docstring).

    Parameters:
        nb_prefix_tokens: tokens before the patches (the class token first); 1 for a plain
            ViT, 2 for DeiT's distillation token, 1 + registers for register ViTs.
        patch_grid: ``(h, w)`` patches, or ``None`` to infer it.
        normalize: min-max scale each map to ``[0, 1]`` (an all-zero map stays zero).
        batch_size, seed, device, progress: see :class:`~pellucid.explain.base.Explainer`.

    Returns maps ``(N, H, W)`` (``(N, T, H, W)`` for ``(N, T)`` targets). All targets of a
    batch come from one forward pass (and one backward pass per target where gradients are
    used).
    """

    input_kinds = ("images",)
    multi_target = True
    needs_gradients = True

    def __init__(self, model: Any, *, nb_prefix_tokens: int = 1, patch_grid: Any = None,
                 normalize: bool = True, **common: Any):
        super().__init__(model, **common)
        self.nb_prefix_tokens = check_positive_int("nb_prefix_tokens", nb_prefix_tokens)
        if patch_grid is not None and not (
                isinstance(patch_grid, (tuple, list)) and len(patch_grid) == 2
                and all(isinstance(v, numbers.Integral) and not isinstance(v, bool) and v > 0
                        for v in patch_grid)):
            raise ValueError(f"patch_grid must be None or (height, width) in patches, two "
                             f"positive ints; got {patch_grid!r}")
        self.patch_grid = patch_grid
        if not isinstance(normalize, bool):
            raise TypeError(f"normalize must be True or False, got {normalize!r}")
        self.normalize = normalize

    def _explain(self, x: torch.Tensor, scorer: Scorer) -> torch.Tensor:
        maps = []
        for s in iter_slices(len(x), self.batch_size, self.progress, type(self).__name__):
            rows = torch.arange(s.start, s.stop)
            layers, scores = self._run(x[s], scorer, rows)
            tokens = self._check_layers(layers, len(rows))
            grid = self._grid(tokens - self.nb_prefix_tokens, tuple(x.shape[2:]))
            token_maps = self._token_maps(layers, scores, scorer.nb_targets)  # (B, T, P)
            maps.append(token_maps.detach().float().cpu().reshape(*token_maps.shape[:2], *grid))
        images = torch.cat(maps)
        images = upsample(images, tuple(x.shape[2:]))
        return min_max_normalize(images.flatten(0, 1)).reshape(images.shape) if (
            self.normalize) else images

    def _run(self, x: torch.Tensor, scorer: Scorer, rows: torch.Tensor
             ) -> tuple[list[Attention], torch.Tensor | None]:
        """The attention layers of one batch and, for gradient methods, the scores ``(B, T)``
        in the graph (the input requires grad, so the graph exists even with frozen weights)."""
        with AttentionCapture() as capture:
            if self.needs_gradients:
                leaf = x.detach().clone().requires_grad_(True)
                scores = scorer.select(
                    self._model.forward_with_grad(leaf, **scorer.kwargs_for(rows)), rows)
            else:
                scorer.forward(x, rows)
                scores = None
        return capture.layers, scores

    def _check_layers(self, layers: list[Attention], batch: int) -> int:
        """The token count of the captured self-attentions; raises if there are none or if
        they are not all ``(B, heads, T, T)`` with the same ``T`` beyond the prefix tokens."""
        if not layers:
            raise ValueError(
                f"{type(self).__name__} found no attention in the model's forward pass: it needs "
                "a ViT whose attention is nn.MultiheadAttention, F.scaled_dot_product_attention "
                "or a softmax over the last axis of (B, heads, L, S) scores")
        shapes = [tuple(layer.as_heads(layer.weights).shape) for layer in layers]
        tokens = shapes[0][-1]
        if any(s[0] != batch or s[-2:] != (tokens, tokens) for s in shapes):
            raise ValueError(f"{type(self).__name__} needs self-attention (B={batch}, heads, "
                             f"tokens, tokens) with the same tokens in every layer; captured "
                             f"attention shapes {shapes}")
        if tokens <= self.nb_prefix_tokens:
            raise ValueError(f"the attention has {tokens} tokens, not more than "
                             f"nb_prefix_tokens={self.nb_prefix_tokens}")
        return tokens

    def _grid(self, patches: int, size: tuple[int, int]) -> tuple[int, int]:
        """``patch_grid``, or the ``(h, w)`` with ``h * w = patches`` and ``h / w = H / W``."""
        if self.patch_grid is not None:
            h, w = self.patch_grid
            if h * w != patches:
                raise ValueError(f"patch_grid={tuple(self.patch_grid)} has {h * w} patches; the "
                                 f"attention has {patches} tokens after nb_prefix_tokens="
                                 f"{self.nb_prefix_tokens}")
            return h, w
        found = grid_of_patches(patches, size)
        if found is None:
            raise ValueError(f"cannot lay {patches} patch tokens on a grid with the images' "
                             f"aspect ratio {size[0]}x{size[1]}; pass patch_grid=(h, w) (and "
                             f"check nb_prefix_tokens={self.nb_prefix_tokens})")
        return found

    def _token_maps(self, layers: list[Attention], scores: torch.Tensor | None,
                    nb_targets: int) -> torch.Tensor:
        """Maps over the patch tokens ``(B, T, h*w)``, one per target."""
        raise NotImplementedError

    def _gradients(self, scores: torch.Tensor, tensors: list[torch.Tensor]
                   ) -> list[list[torch.Tensor]]:
        """``d scores[:, j].sum() / d tensor`` for each target ``j`` and tensor (zeros for a
        tensor the score does not depend on); inputs of a batch are independent, so the sum
        gives each input its own gradient."""
        return [list(torch.autograd.grad(scores[:, j].sum(), tensors,
                                         retain_graph=j < scores.shape[1] - 1,
                                         materialize_grads=True))
                for j in range(scores.shape[1])]


def compute_dtype(tensor: torch.Tensor) -> torch.dtype:
    """At least float32 (bfloat16 and half models are explained in float32)."""
    return torch.promote_types(tensor.dtype, torch.float32)
