"""Small datasets, all offline, several with ground-truth explanations.

Every loader returns a :class:`Dataset` (train/test tensors, class and feature names, and
``masks_*`` or ``true_attributions_*`` where the truth is known); :func:`load` picks a loader
by name. ``load_photos`` returns unlabeled demo photos.
"""
from __future__ import annotations

from typing import Any

from .bam import load_bam
from .base import Dataset
from .blockmnist import load_blockmnist
from .chaos import load_chaos_images, load_chaos_regression
from .images import Photos, load_digits, load_photos
from .tabular import load_additive, load_breast_cancer, load_suppressor, load_wine

LOADERS = {
    "digits": load_digits,
    "blockmnist": load_blockmnist,
    "suppressor": load_suppressor,
    "additive": load_additive,
    "breast_cancer": load_breast_cancer,
    "wine": load_wine,
    "chaos_regression": load_chaos_regression,
    "chaos_images": load_chaos_images,
    "bam": load_bam,
}


def load(name: str, **params: Any) -> Dataset:
    """The dataset called ``name`` (one of ``LOADERS``) with the loader's keyword ``params``."""
    if name not in LOADERS:
        raise ValueError(f"unknown dataset {name!r}; choose one of {sorted(LOADERS)}")
    return LOADERS[name](**params)


__all__ = ["Dataset", "Photos", "LOADERS", "load", "load_digits", "load_blockmnist",
           "load_suppressor", "load_additive", "load_breast_cancer", "load_wine", "load_photos",
           "load_chaos_regression", "load_chaos_images", "load_bam"]
