"""Layer outputs as CAM feature maps ``(N, C, h, w)``: token activations ``(N, tokens, C)``
(``vit_reshape``) and channels-last maps ``(N, h, w, C)`` (``channels_last_reshape``)."""
from __future__ import annotations

import math

import torch

from ..._validation import check_positive_int


class vit_reshape:  # noqa: N801 (used like a function: reshape=vit_reshape(14, 14))
    """``(N, 1 + height * width, C) -> (N, C, height, width)``: drops the class token (the first
    token) when ``drop_class_token``, and lays the patch tokens out row by row, as a ViT's patch
    embedding flattens them. Pass it as ``reshape=`` to a CAM with a ``target_layer`` whose
    output is batch-first tokens."""

    def __init__(self, height: int, width: int, drop_class_token: bool = True):
        self.height = check_positive_int("height", height)
        self.width = check_positive_int("width", width)
        self.drop_class_token = bool(drop_class_token)

    def __call__(self, tokens: torch.Tensor) -> torch.Tensor:
        expected = self.height * self.width + self.drop_class_token
        if tokens.ndim != 3 or tokens.shape[1] != expected:
            raise ValueError(
                f"{self!r} expects tokens (N, {expected}, C) "
                f"({'1 class token + ' if self.drop_class_token else ''}"
                f"{self.height}x{self.width} patches); got shape {tuple(tokens.shape)}")
        patches = tokens[:, 1:] if self.drop_class_token else tokens
        return patches.transpose(1, 2).reshape(len(tokens), -1, self.height, self.width)

    def __repr__(self) -> str:
        return (f"vit_reshape(height={self.height}, width={self.width}, "
                f"drop_class_token={self.drop_class_token})")


def channels_last_reshape(maps: torch.Tensor) -> torch.Tensor:
    """``(N, h, w, C) -> (N, C, h, w)``, for the channels-last outputs of Swin stages or of the
    inside of ConvNeXt blocks: ``reshape=channels_last_reshape``. The automatic layer choice
    applies it by itself to a channels-last layer it picks."""
    if maps.ndim != 4:
        raise ValueError(f"channels_last_reshape expects channels-last maps (N, h, w, C); got "
                         f"shape {tuple(maps.shape)}")
    return maps.permute(0, 3, 1, 2)


def grid_of_patches(patches: int, size: tuple[int, int]) -> tuple[int, int] | None:
    """The grid ``(h, w)`` of ``patches`` tokens on images of size ``(H, W)``: ``h * w =
    patches`` and ``h / w = H / W``; ``None`` if there is none."""
    height, width = size
    h = round(math.sqrt(patches * height / width))
    w = patches // max(h, 1)
    if h < 1 or h * w != patches or h * width != w * height:
        return None
    return h, w
