"""A heatmap drawn over its image."""
from __future__ import annotations

from typing import Any

import torch
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from .._imaging import upsample
from ._common import draw_image, figure_and_axes, heatmap_style, image_for_display, to_numpy


def draw_overlay(ax: Axes, image: Any, heatmap: Any, *, cmap: str | None = None,
                 alpha: float = 0.5, symmetric: bool | None = None):
    """Draw ``image`` in grey/colour and ``heatmap`` on top; returns the heatmap's AxesImage."""
    picture = image_for_display(image)
    heat = to_numpy(heatmap, "heatmap")
    if heat.ndim == 3 and heat.shape[0] == 1:
        heat = heat[0]
    if heat.ndim != 2:
        raise ValueError(f"heatmap must be (H, W), got shape {tuple(heat.shape)}")
    if heat.shape != picture.shape[:2]:  # a map computed at a coarser resolution
        heat = upsample(torch.as_tensor(heat, dtype=torch.float32)[None], picture.shape[:2])
        heat = heat[0].numpy()
    colormap, vmin, vmax = heatmap_style(heat, cmap, symmetric)
    draw_image(ax, picture)
    return ax.imshow(heat, cmap=colormap, vmin=vmin, vmax=vmax, alpha=alpha)


def overlay(image: Any, heatmap: Any, *, ax: Axes | None = None, cmap: str | None = None,
            alpha: float = 0.5, symmetric: bool | None = None, title: str | None = None,
            colorbar: bool = True) -> Figure:
    """``heatmap`` ``(H, W)`` over ``image`` (``(C, H, W)``, ``(H, W, 3)`` or ``(H, W)``).

    Signed maps use the diverging ``'bwr'`` colormap centred at 0 (red = evidence for the
    target, blue = against); non-negative maps use ``'jet'`` (``symmetric`` forces either).
    A heatmap at a coarser resolution is resized bilinearly to the image. Returns the Figure
    (``ax.figure`` when ``ax`` is given).
    """
    if not 0 <= alpha <= 1:
        raise ValueError(f"alpha must be in [0, 1], got {alpha!r}")
    figure, ax = figure_and_axes(ax, (4, 4))
    layer = draw_overlay(ax, image, heatmap, cmap=cmap, alpha=alpha, symmetric=symmetric)
    if title is not None:
        ax.set_title(title)
    if colorbar:
        figure.colorbar(layer, ax=ax, fraction=0.046, pad=0.04)
    return figure
