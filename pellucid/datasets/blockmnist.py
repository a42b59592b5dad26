"""BlockMNIST (Shah, Jain, Netrapalli, 2021, "Do Input Gradients Highlight Discriminative
Features?"), built offline from scikit-learn's digits.

Each image stacks two square blocks vertically: a *signal* block holding a digit, and a *null*
block holding a fixed pattern (a hollow square) that is the same in every image. The signal
block is placed at the top or the bottom at random, independently of the label, so the label is
decided by the signal block alone and its position is known: ``masks_*`` mark it. A faithful
attribution puts its mass inside the mask (pointing game, relevance mass).
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from .._validation import check_non_negative
from .base import Dataset, check_count, stratified_split
from .images import digit_images


def null_patch(block_size: int) -> torch.Tensor:
    """The fixed pattern of the null block: a hollow square of side ``block_size // 2``,
    centred, one pixel thick (``block_size // 14`` pixels for large blocks), value 1."""
    patch = torch.zeros(block_size, block_size)
    side = max(block_size // 2, 3)
    start = (block_size - side) // 2
    thickness = max(1, block_size // 14)
    square = patch[start:start + side, start:start + side]
    square[:thickness] = 1
    square[-thickness:] = 1
    square[:, :thickness] = 1
    square[:, -thickness:] = 1
    return patch


def stack_blocks(digits: torch.Tensor, signal_on_top: np.ndarray, noise: float,
                 rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Images ``(N, 1, 2b, b)`` and masks ``(N, 2b, b)`` from digit blocks ``(N, 1, b, b)``."""
    n, _, b, _ = digits.shape
    null = null_patch(b).expand(n, 1, b, b)
    top = torch.as_tensor(signal_on_top).view(n, 1, 1, 1)
    images = torch.cat([torch.where(top, digits, null), torch.where(top, null, digits)], dim=2)
    if noise > 0:
        images = images + noise * torch.as_tensor(rng.standard_normal(images.shape),
                                                  dtype=torch.float32)
    masks = torch.zeros(n, 2 * b, b, dtype=torch.bool)
    masks[torch.as_tensor(signal_on_top), :b] = True
    masks[torch.as_tensor(~signal_on_top), b:] = True
    return images.clamp(0, 1), masks


def load_blockmnist(n_train: int | None = None, n_test: int | None = None, *,
                    block_size: int = 14, digits: Sequence[int] = (0, 1), noise: float = 0.0,
                    test_fraction: float = 0.3, seed: int = 0) -> Dataset:
    """BlockMNIST images ``(N, 1, 2 * block_size, block_size)`` in [0, 1].

    Args:
        n_train, n_test: images per split; ``None`` uses each source digit of the split once,
            a number draws that many source digits with replacement (each image gets its own
            random block position either way).
        block_size: side of each block; digits are upsampled from 8x8.
        digits: the digit classes; the label is the index in this tuple (paper: 0 vs 1).
        noise: standard deviation of Gaussian pixel noise added before clipping to [0, 1].
        test_fraction: share of the source digits reserved for the test split (no digit image
            appears in both splits).
        seed: seeds the split, the draws and the block positions.
    """
    block_size = check_count("block_size", block_size, minimum=8)
    noise = check_non_negative("noise", noise)
    digits = tuple(int(d) for d in digits)
    if len(set(digits)) < 2 or not all(0 <= d <= 9 for d in digits):
        raise ValueError(f"digits must hold at least two different digits 0-9, got {digits}")
    images, labels = digit_images(block_size)
    keep = np.isin(labels, digits)
    images, labels = images[keep], np.array([digits.index(d) for d in labels[keep]])
    rng = np.random.default_rng(seed)
    train, test = stratified_split(labels, test_fraction, seed)
    splits = {}
    for split, pool, n in (("train", train, n_train), ("test", test, n_test)):
        chosen = pool if n is None else rng.choice(pool, size=check_count(f"n_{split}", n))
        on_top = rng.random(len(chosen)) < 0.5
        x, masks = stack_blocks(images[chosen], on_top, noise, rng)
        splits[split] = (x, labels[chosen], masks)
    return Dataset(
        name="blockmnist",
        x_train=splits["train"][0], y_train=splits["train"][1], masks_train=splits["train"][2],
        x_test=splits["test"][0], y_test=splits["test"][1], masks_test=splits["test"][2],
        class_names=[str(d) for d in digits],
        description=("BlockMNIST (Shah et al., 2021) from scikit-learn digits: a digit block and "
                     "a fixed null block stacked vertically, the digit block at the top or the "
                     "bottom at random; masks mark the digit block."),
        extras={"block_size": block_size, "digits": list(digits), "noise": noise, "seed": seed},
    )
