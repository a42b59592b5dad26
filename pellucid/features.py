"""Feature groups: the integer ``feature_mask`` that FeatureAblation, Lime, KernelShap and
ShapleyValueSampling (and later region methods and metrics) switch on and off together.

The convention, everywhere in pellucid:

- images ``(N, C, H, W)``: an integer mask ``(H, W)`` (the same groups for every input) or
  ``(N, H, W)`` (one per input); a group covers every channel of its pixels;
- tabular ``(N, F)``: ``(F,)`` or ``(N, F)``;
- labels are any integers: they need not start at 0 nor be contiguous. :func:`check_feature_mask`
  relabels each input's mask to ``0 .. M_i - 1`` in increasing order of the given labels, so
  ``M_i`` (the number of groups) may differ from input to input (superpixels).

Makers: :func:`grid` (regular cells), :func:`slic`, :func:`felzenszwalb` and :func:`quickshift`
(scikit-image superpixels, computed per image) and :func:`column_groups` (tabular groups from
index lists or column names: one-hot blocks, correlated features).
"""
from __future__ import annotations

import numbers
from typing import Any, Callable, Sequence

import numpy as np
import torch

__all__ = ["grid", "slic", "felzenszwalb", "quickshift", "column_groups", "check_feature_mask",
           "resolve_feature_mask"]

DEFAULT_GRID_SIZE = 8


def grid(size: Sequence[int], grid_size: int | tuple[int, int] = DEFAULT_GRID_SIZE
         ) -> torch.Tensor:
    """Regular cells: a ``(H, W)`` long mask for ``size = (H, W)`` with ``grid_size`` cells per
    side (an int or ``(rows, cols)``; at most one cell per pixel), row-major labels. Cells differ
    in size by at most one pixel (pixel ``r`` is in row ``floor(r * rows / H)``)."""
    height, width = (int(s) for s in size)
    rows, cols = (grid_size, grid_size) if isinstance(grid_size, numbers.Integral) else grid_size
    if min(int(rows), int(cols)) < 1:
        raise ValueError(f"grid_size must be >= 1, got {grid_size!r}")
    rows, cols = min(int(rows), height), min(int(cols), width)
    row_of = torch.arange(height) * rows // height
    col_of = torch.arange(width) * cols // width
    return row_of[:, None] * cols + col_of[None, :]


def slic(images: Any, *, n_segments: int = 100, compactness: float = 10.0, **kwargs: Any
         ) -> torch.Tensor:
    """SLIC superpixels (Achanta et al., 2012; ``skimage.segmentation.slic``) of each image:
    ``(N, H, W)`` long. Extra keywords go to scikit-image."""
    from skimage.segmentation import slic as skimage_slic
    return _per_image(images, lambda image, axis: skimage_slic(
        image, n_segments=n_segments, compactness=compactness, channel_axis=axis,
        start_label=0, **kwargs))


def felzenszwalb(images: Any, *, scale: float = 100.0, sigma: float = 0.8, min_size: int = 20
                 ) -> torch.Tensor:
    """Felzenszwalb & Huttenlocher (2004) graph segments of each image
    (``skimage.segmentation.felzenszwalb``): ``(N, H, W)`` long."""
    from skimage.segmentation import felzenszwalb as skimage_felzenszwalb
    return _per_image(images, lambda image, axis: skimage_felzenszwalb(
        image, scale=scale, sigma=sigma, min_size=min_size, channel_axis=axis))


def quickshift(images: Any, *, kernel_size: float = 4, max_dist: float = 10.0,
               ratio: float = 0.5) -> torch.Tensor:
    """Quickshift segments (Vedaldi & Soatto, 2008; ``skimage.segmentation.quickshift``, the
    segmentation lime's image explainer uses) of each image: ``(N, H, W)`` long. Colour images
    are taken to Lab first; other channel counts are segmented as they are."""
    from skimage.segmentation import quickshift as skimage_quickshift

    def segment(image: np.ndarray, axis: int | None) -> np.ndarray:
        image = image if axis is not None else image[..., None]
        return skimage_quickshift(image, kernel_size=kernel_size, max_dist=max_dist,
                                  ratio=ratio, convert2lab=image.shape[-1] == 3, channel_axis=-1)
    return _per_image(images, segment)


def _per_image(images: Any, segment: Callable[[np.ndarray, int | None], np.ndarray]
               ) -> torch.Tensor:
    """``segment(image, channel_axis)`` on each image of ``(N, C, H, W)`` (or one ``(C, H, W)``),
    channels last, min-max scaled to ``[0, 1]`` (normalised inputs, Lab conversion); one channel
    is passed as a 2-D image (``channel_axis=None``)."""
    array = np.asarray(images.detach().cpu() if torch.is_tensor(images) else images,
                       dtype=np.float64)
    if array.ndim == 3:
        array = array[None]
    if array.ndim != 4:
        raise ValueError(f"superpixels need images (N, C, H, W) or (C, H, W); got shape "
                         f"{array.shape}")
    masks = []
    for image in array:
        low, high = image.min(), image.max()
        image = (image - low) / (high - low) if high > low else np.zeros_like(image)
        image = np.moveaxis(image, 0, -1)
        one_channel = image.shape[-1] == 1
        masks.append(segment(image[..., 0] if one_channel else image,
                             None if one_channel else -1))
    return torch.as_tensor(np.stack(masks)).long()


def column_groups(groups: Any, columns: int | Sequence[str]) -> torch.Tensor:
    """A tabular mask ``(F,)`` from groups of columns: a list of groups or a dict ``{name:
    group}``, each group a list of column indices or (with ``columns`` a list of names) column
    names. ``columns``: the number of features ``F`` or the column names. Group ``k`` gets label
    ``k``; a column in no group is a group of its own (labels after the given groups, in column
    order); a column in two groups raises."""
    names = None if isinstance(columns, numbers.Integral) else [str(c) for c in columns]
    n_features = int(columns) if names is None else len(names)
    members = list(groups.values()) if isinstance(groups, dict) else list(groups)
    mask = torch.full((n_features,), -1, dtype=torch.long)
    for label, group in enumerate(members):
        for column in ([group] if isinstance(group, (str, numbers.Integral)) else group):
            index = _column_index(column, names, n_features)
            if mask[index] >= 0:
                raise ValueError(f"column {column!r} is in two groups ({int(mask[index])} and "
                                 f"{label})")
            mask[index] = label
    alone = torch.nonzero(mask < 0)[:, 0]
    mask[alone] = len(members) + torch.arange(len(alone))
    return mask


def _column_index(column: Any, names: list[str] | None, n_features: int) -> int:
    if isinstance(column, numbers.Integral) and not isinstance(column, bool):
        if not 0 <= column < n_features:
            raise ValueError(f"column index {column} is out of range for {n_features} features")
        return int(column)
    if names is None or str(column) not in names:
        known = "pass columns=<the column names>" if names is None else f"columns: {names}"
        raise ValueError(f"unknown column {column!r}; {known}")
    return names.index(str(column))


def check_feature_mask(feature_mask: Any, x: torch.Tensor) -> torch.Tensor:
    """The mask of every input, ``(N, H, W)`` / ``(N, F)`` long on the CPU, each input's labels
    ``0 .. M_i - 1`` (relabelled in increasing order); raises, naming the shapes, when
    ``feature_mask`` is not an integer mask of the inputs' spatial / feature shape."""
    mask = as_labels(feature_mask)
    space = tuple(x.shape[2:]) if x.ndim == 4 else tuple(x.shape[1:])
    if tuple(mask.shape) == space:
        return _relabel(mask.long())[None].expand(len(x), *space)
    if tuple(mask.shape) == (len(x), *space):
        return torch.stack([_relabel(m) for m in mask.long()])
    kind = "(H, W) or (N, H, W)" if x.ndim == 4 else "(F,) or (N, F)"
    raise ValueError(f"feature_mask must have shape {kind} = {space} or {(len(x), *space)} for "
                     f"inputs of shape {tuple(x.shape)}; got {tuple(mask.shape)}")


def as_labels(feature_mask: Any) -> torch.Tensor:
    """``feature_mask`` as a tensor of integer labels (a copy); ``TypeError`` for anything
    else (floats, booleans, objects)."""
    if not isinstance(feature_mask, (torch.Tensor, np.ndarray, list, tuple)):
        raise TypeError(f"feature_mask must be an integer tensor or array, got "
                        f"{type(feature_mask).__name__}")
    mask = torch.as_tensor(np.asarray(feature_mask.detach().cpu() if torch.is_tensor(
        feature_mask) else feature_mask))
    if mask.is_floating_point() or mask.is_complex() or mask.dtype == torch.bool:
        raise TypeError(f"feature_mask must hold integer group labels, got dtype {mask.dtype}")
    return mask


def _relabel(mask: torch.Tensor) -> torch.Tensor:
    return torch.unique(mask, return_inverse=True)[1].view(mask.shape)


def resolve_feature_mask(feature_mask: Any, x: torch.Tensor) -> torch.Tensor:
    """:func:`check_feature_mask` of ``feature_mask``: ``None`` (a :func:`grid` of
    ``DEFAULT_GRID_SIZE`` cells per side for images, one group per column for tabular data), a
    mask, or a callable ``f(inputs) -> mask`` (e.g. ``functools.partial(slic, n_segments=50)``)
    run on the validated inputs."""
    if feature_mask is None:
        feature_mask = grid(x.shape[2:]) if x.ndim == 4 else torch.arange(x.shape[1])
    elif callable(feature_mask):
        feature_mask = feature_mask(x.detach().cpu())
    return check_feature_mask(feature_mask, x)
