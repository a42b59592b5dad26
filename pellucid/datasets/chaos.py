"""ChaosMining-style low-SNR tasks (Shi et al., 2024, "ChaosMining: A Benchmark to Evaluate
Post-Hoc Local Attribution Methods in Low SNR Environments"), generated offline.

- :func:`load_chaos_regression`: a symbolic function of a few *relevant* features among many
  irrelevant ones, ``y = f(x_R) + e``. Two signal-to-noise ratios are controlled: the share of
  relevant features ``|R| / F`` (``n_relevant`` of ``n_features``) and the target's
  ``snr = Var f(x_R) / Var e`` (the noise variance is set from the population variance of ``f``).
  ``true_attributions_*`` is 1 on the relevant features, 0 elsewhere.
- :func:`load_chaos_images`: a grid of digit cells; the label is the digit in one fixed cell,
  every other cell holds a random digit (a distractor unrelated to the label), on Gaussian
  background noise. ``masks_*`` mark the label's cell.

ChaosMining's RFE-style question, "does keeping only the features an attribution ranks first
keep accuracy?", is :class:`~pellucid.procedures.Kar` (retrain on the top-ranked fraction, the
rest replaced by the training mean; compare with its random ranking) at the fraction
``n_relevant / n_features`` (classification: ``task="classification"`` thresholds ``y`` at 0).
"""
from __future__ import annotations

from typing import Callable

import numpy as np
import torch

from .._validation import check_non_negative
from .base import Dataset, check_count, stratified_split
from .images import digit_images

# f on x_R ~ U(-1, 1)^|R| (columns in order), and its population variance (closed form: for
# U(-1, 1), Var x = 1/3, Var sin(pi x) = 1/2, Var x^2 = 4/45, E x^2 y^2 = 1/9)
FUNCTIONS: dict[str, tuple[Callable[[np.ndarray], np.ndarray], Callable[[int], float]]] = {
    "linear": (lambda x: x.sum(1), lambda r: r / 3),
    "sines": (lambda x: np.sin(np.pi * x).sum(1), lambda r: r / 2),
    "products": (lambda x: (x[:, 0::2] * x[:, 1::2]).sum(1), lambda r: (r // 2) / 9),
    "squares": (lambda x: (x ** 2).sum(1), lambda r: 4 * r / 45),
}


def load_chaos_regression(n_train: int = 1000, n_test: int = 500, *, n_features: int = 100,
                          n_relevant: int = 4, function: str = "sines", snr: float = 1.0,
                          task: str = "regression", seed: int = 0) -> Dataset:
    """``x ~ U(-1, 1)^F``; ``y = f(x_R) + e`` with ``e ~ N(0, Var f / snr)``; ``R`` a seeded
    random set of ``n_relevant`` features (``extras["relevant"]``, in the order ``f`` reads
    them). ``function``: ``"linear"`` (sum), ``"sines"`` (sum of ``sin(pi x_i)``),
    ``"products"`` (``x_1 x_2 + x_3 x_4 + ...``, ``n_relevant`` even), ``"squares"`` (sum of
    ``x_i^2``, centred by its mean 1/3 each). ``task="classification"``: label ``y > 0``.
    """
    if function not in FUNCTIONS:
        raise ValueError(f"function must be one of {sorted(FUNCTIONS)}, got {function!r}")
    if task not in ("regression", "classification"):
        raise ValueError(f"task must be 'regression' or 'classification', got {task!r}")
    n_features = check_count("n_features", n_features)
    n_relevant = check_count("n_relevant", n_relevant)
    if n_relevant > n_features or (function == "products" and n_relevant % 2):
        raise ValueError(f"n_relevant must be <= n_features = {n_features} (and even for "
                         f"'products'), got {n_relevant}")
    snr = check_non_negative("snr", snr)
    if snr == 0:
        raise ValueError("snr must be > 0 (Var f / Var noise)")
    f, variance = FUNCTIONS[function]
    offset = n_relevant / 3 if function == "squares" else 0.0
    noise_std = float(np.sqrt(variance(n_relevant) / snr))
    rng = np.random.default_rng(seed)
    relevant = np.sort(rng.choice(n_features, n_relevant, replace=False))
    relevant = rng.permutation(relevant)

    def draw(n):
        x = rng.uniform(-1.0, 1.0, (check_count("n", n), n_features))
        signal = f(x[:, relevant]) - offset
        y = signal + noise_std * rng.standard_normal(n)
        return x, (y > 0).astype(np.int64) if task == "classification" else y, signal

    (x_train, y_train, s_train), (x_test, y_test, s_test) = draw(n_train), draw(n_test)
    truth = np.zeros(n_features, dtype=np.float32)
    truth[relevant] = 1.0
    return Dataset(
        name="chaos_regression", x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test,
        feature_names=[f"x{i}" for i in range(n_features)],
        class_names=["y <= 0", "y > 0"] if task == "classification" else None,
        true_attributions_train=np.broadcast_to(truth, x_train.shape).copy(),
        true_attributions_test=np.broadcast_to(truth, x_test.shape).copy(), task=task,
        description=(f"ChaosMining-style symbolic {task}: y = {function}(x_R) + noise at SNR "
                     f"{snr:g}, {n_relevant} relevant of {n_features} features U(-1, 1)."),
        extras={"relevant": relevant.tolist(), "function": function, "snr": snr,
                "noise_std": noise_std, "signal_train": s_train, "signal_test": s_test,
                "seed": seed})


def load_chaos_images(n_train: int = 600, n_test: int = 300, *, grid_cells: int = 3,
                      cell_size: int = 8, digits: tuple[int, ...] = (0, 1, 2),
                      signal_cell: int | None = None, noise: float = 0.1,
                      test_fraction: float = 0.3, seed: int = 0) -> Dataset:
    """Images ``(N, 1, g * cell_size, g * cell_size)``, ``g = grid_cells``: cell ``signal_cell``
    (row-major; ``None``: drawn from ``seed``) holds a digit of ``digits`` whose index is the
    label; every other cell a digit drawn from all ten, independently of the label; plus
    Gaussian pixel noise of std ``noise``, clipped to [0, 1]. Train and test digits come from
    disjoint source images. ``masks_*`` mark the signal cell; ``extras["signal_cell"]``."""
    grid_cells = check_count("grid_cells", grid_cells, minimum=2)
    cell_size = check_count("cell_size", cell_size, minimum=8)
    noise = check_non_negative("noise", noise)
    digits = tuple(int(d) for d in digits)
    if len(set(digits)) < 2 or not all(0 <= d <= 9 for d in digits):
        raise ValueError(f"digits must hold at least two different digits 0-9, got {digits}")
    rng = np.random.default_rng(seed)
    cells = grid_cells ** 2
    signal_cell = int(rng.integers(cells)) if signal_cell is None else signal_cell
    if not 0 <= signal_cell < cells:
        raise ValueError(f"signal_cell must be in [0, {cells}), got {signal_cell}")
    images, labels = digit_images(cell_size)
    train, test = stratified_split(labels, test_fraction, seed)
    side = grid_cells * cell_size
    row, col = divmod(signal_cell, grid_cells)
    splits = {}
    for split, pool, n in (("train", train, n_train), ("test", test, n_test)):
        n = check_count(f"n_{split}", n)
        signal_pool = pool[np.isin(labels[pool], digits)]
        chosen = rng.choice(pool, size=(n, cells))
        chosen[:, signal_cell] = rng.choice(signal_pool, size=n)
        canvas = images[chosen.reshape(-1)].view(n, grid_cells, grid_cells, cell_size, cell_size)
        canvas = canvas.permute(0, 1, 3, 2, 4).reshape(n, 1, side, side)
        canvas = canvas + noise * torch.as_tensor(rng.standard_normal(canvas.shape),
                                                  dtype=torch.float32)
        masks = torch.zeros(n, side, side, dtype=torch.bool)
        masks[:, row * cell_size:(row + 1) * cell_size, col * cell_size:(col + 1) * cell_size] = 1
        y = np.array([digits.index(d) for d in labels[chosen[:, signal_cell]]])
        splits[split] = (canvas.clamp(0, 1), y, masks)
    return Dataset(
        name="chaos_images",
        x_train=splits["train"][0], y_train=splits["train"][1], masks_train=splits["train"][2],
        x_test=splits["test"][0], y_test=splits["test"][1], masks_test=splits["test"][2],
        class_names=[str(d) for d in digits],
        description=(f"ChaosMining-style images: a {grid_cells}x{grid_cells} grid of digits; the "
                     f"label is the digit in cell {signal_cell}, the others are distractors; "
                     "masks mark the label's cell."),
        extras={"signal_cell": signal_cell, "grid_cells": grid_cells, "cell_size": cell_size,
                "digits": list(digits), "noise": noise, "seed": seed})
