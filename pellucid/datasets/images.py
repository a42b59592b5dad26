"""Image sets that ship with scikit-learn: the 8x8 handwritten digits and two sample photos."""
from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F

from .._imaging import upsample
from .base import Dataset, check_count, stratified_split


def digit_images(size: int) -> tuple[torch.Tensor, np.ndarray]:
    """scikit-learn's 1797 digits as ``(N, 1, size, size)`` in [0, 1] (bilinear upsampling of
    the 8x8 originals, values 0..16 divided by 16) and their labels."""
    from sklearn.datasets import load_digits as sklearn_digits

    bunch = sklearn_digits()
    images = torch.as_tensor(bunch.images, dtype=torch.float32)[:, None] / 16.0
    if size != 8:
        images = upsample(images, (size, size))
    return images.clamp(0, 1), bunch.target


def load_digits(size: int = 32, *, test_fraction: float = 0.25, seed: int = 0) -> Dataset:
    """scikit-learn's handwritten digits (1797 images, 10 classes), upsampled bilinearly from
    8x8 to ``size`` x ``size``, one channel, values in [0, 1]; stratified seeded split."""
    size = check_count("size", size, minimum=8)
    images, labels = digit_images(size)
    train, test = stratified_split(labels, test_fraction, seed)
    return Dataset(
        name="digits", x_train=images[train], y_train=labels[train], x_test=images[test],
        y_test=labels[test], class_names=[str(d) for d in range(10)],
        description=f"scikit-learn 8x8 digits upsampled to {size}x{size}, values in [0, 1].",
        extras={"size": size, "seed": seed},
    )


class Photos(NamedTuple):
    """Natural photos for demos (no labels): ``images`` ``(N, 3, S, S)`` in [0, 1], ``names``."""

    images: torch.Tensor
    names: list[str]


def load_photos(size: int = 224) -> Photos:
    """The two photos that ship inside scikit-learn (``china.jpg``, ``flower.jpg``), centre-
    cropped to a square and resized (bilinear, antialiased) to ``size`` x ``size``. Offline."""
    from sklearn.datasets import load_sample_images

    size = check_count("size", size, minimum=8)
    bunch = load_sample_images()
    tensors = []
    for image in bunch.images:
        x = torch.tensor(np.array(image), dtype=torch.float32).permute(2, 0, 1) / 255.0
        side = min(x.shape[1:])
        top, left = (x.shape[1] - side) // 2, (x.shape[2] - side) // 2
        x = x[:, top:top + side, left:left + side]
        tensors.append(F.interpolate(x[None], size=(size, size), mode="bilinear",
                                     align_corners=False, antialias=True)[0])
    names = [Path(f).stem for f in bunch.filenames]
    return Photos(torch.stack(tensors).clamp(0, 1), names)
