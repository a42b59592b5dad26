"""BAM-style data and scores (Yang & Kim, 2019, "Benchmarking Attribution Methods with Relative
Feature Importance"), generated offline.

Every image is a *scene* (a generated texture: horizontal stripes, vertical stripes, a
checkerboard, diagonal stripes; random frequency and phase) with an *object* (a digit from
scikit-learn, pasted at a random place with its intensity as opacity) on it. Scene and object
labels are drawn independently, so the object region is a common feature whose importance is
known: high for a model trained on object labels, none for a model trained on scene labels.
``masks_*`` mark the object's square; ``extras`` hold both label sets and every image without
its object (``x_*_without_object``).

The scores, per input (their means are the paper's numbers), on the share of ``|h|`` that falls
in the object region, ``g(h) = sum_region |h| / sum |h|``:

- model contrast (MCS): ``g(h of the object model) - g(h of the scene model)`` on the same image;
- input dependence (IDR): for the scene model, ``1[g(h with the object) < g(h without it)]``:
  the irrelevant object must get less than the scene pixels it covers;
- input independence (IIR): for the scene model, on inputs whose prediction the object does not
  change, ``1[|g(h with) - g(h without)| <= threshold]``.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch

from .._validation import check_non_negative
from .base import Dataset, check_count, stratified_split
from .images import digit_images

SCENES = ("horizontal", "vertical", "checkerboard", "diagonal")


def texture(kind: int, size: int, rng: np.random.Generator) -> np.ndarray:
    """One ``(size, size)`` texture of scene class ``kind`` in [0.2, 0.6]."""
    rows, cols = np.mgrid[:size, :size] / size
    frequency = rng.uniform(3, 6) * 2 * np.pi
    phase = rng.uniform(0, 2 * np.pi)
    wave = {0: np.sin(frequency * rows + phase), 1: np.sin(frequency * cols + phase),
            2: np.sign(np.sin(frequency * rows + phase) * np.sin(frequency * cols + phase)),
            3: np.sin(frequency * (rows + cols) / np.sqrt(2) + phase)}[kind]
    return 0.4 + 0.2 * wave


def load_bam(n_train: int = 600, n_test: int = 200, *, size: int = 32, object_size: int = 14,
             n_scenes: int = 3, n_objects: int = 3, label: str = "object", noise: float = 0.05,
             seed: int = 0) -> Dataset:
    """Images ``(N, 1, size, size)``: a scene texture of ``n_scenes`` classes with a digit of
    ``n_objects`` classes (digits ``0 .. n_objects - 1``, upsampled to ``object_size``) pasted
    on it, plus Gaussian noise (clipped to [0, 1]). ``label``: ``"object"`` or ``"scene"``, the
    labels in ``y_*``; both are in ``extras`` (``y_object_*``, ``y_scene_*``)."""
    if label not in ("object", "scene"):
        raise ValueError(f"label must be 'object' or 'scene', got {label!r}")
    size = check_count("size", size, minimum=8)
    object_size = check_count("object_size", object_size, minimum=8)
    if object_size > size:
        raise ValueError(f"object_size must be <= size = {size}, got {object_size}")
    n_scenes = check_count("n_scenes", n_scenes, minimum=2)
    n_objects = check_count("n_objects", n_objects, minimum=2)
    if n_scenes > len(SCENES) or n_objects > 10:
        raise ValueError(f"n_scenes must be <= {len(SCENES)} and n_objects <= 10, got "
                         f"{n_scenes} and {n_objects}")
    noise = check_non_negative("noise", noise)
    rng = np.random.default_rng(seed)
    digits, digit_labels = digit_images(object_size)
    keep = np.flatnonzero(digit_labels < n_objects)
    train_pool, test_pool = (keep[part] for part in stratified_split(digit_labels[keep], 0.3,
                                                                      seed))
    splits: dict[str, Any] = {}
    for split, pool, n in (("train", train_pool, n_train), ("test", test_pool, n_test)):
        n = check_count(f"n_{split}", n)
        scene_y = rng.integers(n_scenes, size=n)
        chosen = rng.choice(pool, size=n)
        scenes = np.stack([texture(k, size, rng) for k in scene_y])
        scenes = scenes + noise * rng.standard_normal(scenes.shape)
        with_object = scenes.copy()
        masks = np.zeros((n, size, size), dtype=bool)
        corners = rng.integers(size - object_size + 1, size=(n, 2))
        for i, (r, c) in enumerate(corners):
            alpha = digits[chosen[i], 0].numpy()
            region = (slice(r, r + object_size), slice(c, c + object_size))
            with_object[i][region] = (1 - alpha) * scenes[i][region] + alpha
            masks[i][region] = True
        splits[split] = {"x": np.clip(with_object, 0, 1)[:, None], "masks": masks,
                         "without": np.clip(scenes, 0, 1)[:, None], "scene": scene_y,
                         "object": digit_labels[chosen]}
    names = ([str(d) for d in range(n_objects)] if label == "object"
             else list(SCENES[:n_scenes]))
    extras = {f"y_{key}_{split}": torch.as_tensor(splits[split][key]).long()
              for split in ("train", "test") for key in ("object", "scene")}
    extras.update({f"x_{split}_without_object": torch.as_tensor(
        splits[split]["without"], dtype=torch.float32) for split in ("train", "test")})
    extras.update({"label": label, "n_scenes": n_scenes, "n_objects": n_objects,
                   "object_size": object_size, "seed": seed})
    return Dataset(
        name="bam", x_train=splits["train"]["x"], y_train=splits["train"][label],
        x_test=splits["test"]["x"], y_test=splits["test"][label],
        masks_train=splits["train"]["masks"], masks_test=splits["test"]["masks"],
        class_names=names,
        description=("BAM-style (Yang & Kim, 2019): a digit pasted on a generated texture; "
                     f"labels: {label} (both in extras); masks mark the digit's square."),
        extras=extras)


def region_share(heatmaps: Any, masks: Any) -> torch.Tensor:
    """``g(h)``: the share of ``|h|`` inside each mask, ``(N,)`` float64 (0 for a zero map);
    heatmaps ``(N, H, W)`` or ``(N, C, H, W)`` (channels summed after ``abs``)."""
    h = torch.as_tensor(heatmaps).detach().double().abs()
    h = h.sum(1) if h.ndim == 4 else h
    m = torch.as_tensor(masks).bool()
    if h.shape != m.shape:
        raise ValueError(f"masks must have the heatmaps' shape {tuple(h.shape)}; got "
                         f"{tuple(m.shape)}")
    total = h.flatten(1).sum(1)
    inside = (h * m).flatten(1).sum(1)
    return torch.where(total > 0, inside / total.clamp(min=1e-300), torch.zeros_like(total))


def model_contrast(object_model_maps: Any, scene_model_maps: Any, masks: Any) -> np.ndarray:
    """BAM's model contrast per input: ``g(object model) - g(scene model)``."""
    return (region_share(object_model_maps, masks) - region_share(scene_model_maps, masks)
            ).numpy()


def input_dependence(maps_with: Any, maps_without: Any, masks: Any) -> np.ndarray:
    """BAM's input dependence per input (scene model): ``1[g(with) < g(without)]``."""
    return (region_share(maps_with, masks) < region_share(maps_without, masks)).double().numpy()


def input_independence(maps_with: Any, maps_without: Any, masks: Any, *,
                       threshold: float = 0.1) -> np.ndarray:
    """BAM's input independence per input (scene model, inputs whose prediction the object
    does not change): ``1[|g(with) - g(without)| <= threshold]``."""
    change = (region_share(maps_with, masks) - region_share(maps_without, masks)).abs()
    return (change <= threshold).double().numpy()
