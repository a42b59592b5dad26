"""A method x image grid of heatmaps, the usual figure of attribution papers."""
from __future__ import annotations

from typing import Any, Mapping, Sequence

from matplotlib.figure import Figure

from ._common import draw_image, image_for_display, new_figure, to_numpy
from .overlay import draw_overlay


def method_grid(images: Any, heatmaps_by_method: Mapping[str, Any], *,
                titles: Sequence[str] | None = None, show_images: bool = True,
                alpha: float = 0.5, cmap: str | None = None, symmetric: bool | None = None,
                cell_size: float = 2.0) -> Figure:
    """One row per image, one column per method (plus the image itself first).

    Args:
        images: ``(N, C, H, W)`` (or ``(N, H, W)`` grey).
        heatmaps_by_method: method name -> heatmaps ``(N, H, W)`` (one per image); the names
            become column titles, in the mapping's order.
        titles: one label per row (e.g. the class), shown at the left of each row.
        show_images: add a first column with the plain images.
        alpha, cmap, symmetric: as in :func:`~pellucid.plots.overlay` (each map scaled on its
            own; signed maps centred at 0).
        cell_size: height of one cell in inches (the width follows the images' aspect).
    """
    pictures = [image_for_display(image) for image in images]
    n = len(pictures)
    if n == 0 or not heatmaps_by_method:
        raise ValueError("method_grid needs at least one image and one method")
    maps = {}
    for name, heatmaps in heatmaps_by_method.items():
        array = to_numpy(heatmaps, f"heatmaps of {name!r}")
        if array.ndim != 3 or len(array) != n:
            raise ValueError(f"heatmaps of {name!r} must be (N, H, W) with N = {n} images; "
                             f"got shape {tuple(array.shape)}")
        maps[name] = array
    if titles is not None and len(titles) != n:
        raise ValueError(f"titles must hold one label per image ({n}), got {len(titles)}")
    columns = ["image"] * show_images + list(maps)
    height, width = pictures[0].shape[:2]
    aspect = max(width / height, 0.75)  # narrow images still leave room for the titles
    figure = new_figure((cell_size * aspect * len(columns), cell_size * n))
    axes = figure.subplots(n, len(columns), squeeze=False)
    for row in range(n):
        for col, name in enumerate(columns):
            ax = axes[row, col]
            if show_images and col == 0:
                draw_image(ax, pictures[row])
            else:
                draw_overlay(ax, pictures[row], maps[name][row], cmap=cmap, alpha=alpha,
                             symmetric=symmetric)
            if row == 0:
                ax.set_title(name, fontsize="small")
        if titles is not None:
            axes[row, 0].set_ylabel(str(titles[row]))
    return figure
