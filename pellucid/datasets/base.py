"""What every dataset loader returns, and the shared helpers (seeded split, standardization)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from .._validation import check_probability

TASKS = ("classification", "regression")


@dataclass
class Dataset:
    """A small train/test dataset, optionally with ground-truth explanations.

    Attributes:
        name: short name (``"digits"``, ``"blockmnist"``, ...).
        x_train, x_test: float32 tensors, images ``(N, C, H, W)`` or tabular ``(N, F)``.
        y_train, y_test: ``(N,)`` long class indices (classification) or float32 (regression).
        class_names: one name per class (``None`` for regression).
        feature_names: one name per tabular feature (``None`` for images).
        masks_train, masks_test: ``(N, H, W)`` bool ground-truth masks of the discriminative
            region (image sets with ground truth), else ``None``.
        true_attributions_train, true_attributions_test: ``(N, F)`` float32 ground-truth
            attributions (tabular sets with ground truth), else ``None``.
        task: ``"classification"`` or ``"regression"``.
        description: how the data was made, in one paragraph.
        extras: anything loader-specific (standardization statistics, generating weights, ...).
    """

    name: str
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    class_names: list[str] | None = None
    feature_names: list[str] | None = None
    masks_train: torch.Tensor | None = None
    masks_test: torch.Tensor | None = None
    true_attributions_train: torch.Tensor | None = None
    true_attributions_test: torch.Tensor | None = None
    task: str = "classification"
    description: str = ""
    extras: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self):
        if self.task not in TASKS:
            raise ValueError(f"task must be one of {TASKS}, got {self.task!r}")
        label_dtype = torch.long if self.task == "classification" else torch.float32
        self.x_train = torch.as_tensor(self.x_train, dtype=torch.float32)
        self.x_test = torch.as_tensor(self.x_test, dtype=torch.float32)
        self.y_train = torch.as_tensor(self.y_train, dtype=label_dtype)
        self.y_test = torch.as_tensor(self.y_test, dtype=label_dtype)
        for split in ("train", "test"):
            for prefix, dtype in (("masks_", torch.bool), ("true_attributions_", torch.float32)):
                value = getattr(self, prefix + split)
                if value is not None:
                    setattr(self, prefix + split, torch.as_tensor(value, dtype=dtype))

    @property
    def is_image(self) -> bool:
        return self.x_train.ndim == 4

    @property
    def input_shape(self) -> tuple[int, ...]:
        """Shape of one input: ``(C, H, W)`` or ``(F,)``."""
        return tuple(self.x_train.shape[1:])

    @property
    def n_classes(self) -> int | None:
        return None if self.class_names is None else len(self.class_names)

    def __repr__(self) -> str:
        truth = [n for n in ("masks_test", "true_attributions_test")
                 if getattr(self, n) is not None]
        return (f"Dataset({self.name!r}, {self.task}, train={len(self.x_train)}, "
                f"test={len(self.x_test)}, input_shape={self.input_shape}"
                + (f", ground truth: {truth[0]}" if truth else "") + ")")


def stratified_split(labels: np.ndarray, test_fraction: float, seed: int
                     ) -> tuple[np.ndarray, np.ndarray]:
    """Indices ``(train, test)``; each class split in the same proportion, seeded.
    ``test_fraction`` must be in (0, 1)."""
    test_fraction = check_probability("test_fraction", test_fraction)
    rng = np.random.default_rng(seed)
    train, test = [], []
    for label in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == label))
        n_test = int(round(test_fraction * len(members)))
        test.append(members[:n_test])
        train.append(members[n_test:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(test))


def standardize(train: np.ndarray, test: np.ndarray) -> tuple[np.ndarray, np.ndarray, dict]:
    """Zero mean, unit variance with the statistics of the training split only."""
    mean = train.mean(axis=0)
    scale = train.std(axis=0)
    scale[scale == 0] = 1.0
    stats = {"mean": mean.tolist(), "scale": scale.tolist()}
    return (train - mean) / scale, (test - mean) / scale, stats


def check_count(name: str, value: int, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)
