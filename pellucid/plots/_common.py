"""Shared plumbing: figures made without pyplot (nothing is left open), array conversion,
image display and heatmap colour scaling."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from .._shap_values import as_heatmap_array

SAVE_FORMATS = (".png", ".svg", ".pdf")


def new_figure(figsize: tuple[float, float]) -> Figure:
    """A Figure that pyplot does not track (Agg canvas): never left open, Jupyter displays it."""
    return Figure(figsize=figsize, layout="constrained")


def figure_and_axes(ax: Axes | None, figsize: tuple[float, float]) -> tuple[Figure, Axes]:
    """The caller's axes and their figure, or a new single-panel figure."""
    if ax is not None:
        if not isinstance(ax, Axes):
            raise TypeError(f"ax must be a matplotlib Axes, got {type(ax).__name__}")
        return ax.figure, ax
    figure = new_figure(figsize)
    return figure, figure.add_subplot()


def to_numpy(value: Any, name: str) -> np.ndarray:
    """A float numpy copy of a tensor, array or sequence (of a ``shap.Explanation``: its
    values, channels-last images summed over channels)."""
    value = as_heatmap_array(value)
    if hasattr(value, "detach"):
        value = value.detach().cpu().numpy()
    try:
        array = np.array(value, dtype=np.float64)
    except (TypeError, ValueError) as error:
        raise TypeError(f"{name} must be a tensor or array of numbers, "
                        f"got {type(value).__name__}") from error
    return array


def image_for_display(image: Any) -> np.ndarray:
    """``(C, H, W)`` (C = 1 or 3), ``(H, W, 3)`` or ``(H, W)`` -> ``(H, W)`` or ``(H, W, 3)``
    scaled to [0, 1] (min-max when the values leave [0, 1])."""
    array = to_numpy(image, "image")
    if array.ndim == 3 and array.shape[0] in (1, 3):  # channels first, as in torch
        array = np.moveaxis(array, 0, -1)
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[..., 0]
    if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[2] != 3):
        raise ValueError(f"image must be (C, H, W) with C in (1, 3), (H, W, 3) or (H, W); "
                         f"got shape {tuple(np.shape(image))}")
    low, high = np.nanmin(array), np.nanmax(array)
    if low < 0 or high > 1:
        array = (array - low) / (high - low) if high > low else np.zeros_like(array)
    return array


def heatmap_style(heatmap: np.ndarray, cmap: str | None, symmetric: bool | None
                  ) -> tuple[str, float, float]:
    """Colormap and limits: a signed map (negative values present, or ``symmetric=True``) gets
    the diverging ``'bwr'`` centred at 0 (white = 0); a non-negative map ``'jet'`` from its min
    to its max."""
    low, high = float(np.min(heatmap)), float(np.max(heatmap))
    signed = low < 0 if symmetric is None else symmetric
    if signed:
        bound = max(abs(low), abs(high)) or 1.0
        return cmap or "bwr", -bound, bound
    return cmap or "jet", low, high if high > low else low + 1.0


def draw_image(ax: Axes, picture: np.ndarray) -> None:
    """Show a picture from :func:`image_for_display` on [0, 1] (grey when 2-D), without ticks."""
    ax.imshow(picture, cmap="gray" if picture.ndim == 2 else None, vmin=0, vmax=1)
    ax.set_xticks([])
    ax.set_yticks([])


def save_figure(figure: Figure, path: str | Path, *, dpi: int = 150) -> Path:
    """Write ``figure`` as PNG, SVG or PDF, chosen by the extension of ``path`` (parent folders
    are created). Returns the path."""
    path = Path(path)
    if path.suffix.lower() not in SAVE_FORMATS:
        raise ValueError(f"path must end with one of {SAVE_FORMATS}, got {path.name!r}")
    if not isinstance(figure, Figure):
        raise TypeError(f"figure must be a matplotlib Figure, got {type(figure).__name__}")
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=dpi, bbox_inches="tight")
    return path
