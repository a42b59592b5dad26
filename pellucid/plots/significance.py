"""Statistical comparison of methods over several data sets or models: Demšar's (2006)
critical-difference diagram and a heatmap of pairwise (e.g. Holm-adjusted) p-values."""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from matplotlib import colormaps
from matplotlib.axes import Axes
from matplotlib.colors import LogNorm
from matplotlib.figure import Figure

from ._common import figure_and_axes, to_numpy

P_FLOOR = 1e-4  # the colour scale of significance_matrix: p-values below this share its colour


def _sorted_ranks(average_ranks: Mapping[str, float], cd: float) -> list[tuple[str, float]]:
    if not isinstance(average_ranks, Mapping):
        raise TypeError(f"average_ranks must be a mapping {{method: average rank}}, "
                        f"got {type(average_ranks).__name__}")
    if len(average_ranks) < 2:
        raise ValueError(f"average_ranks needs at least 2 methods, got {len(average_ranks)}")
    if not (isinstance(cd, (int, float)) and math.isfinite(cd) and cd > 0):
        raise ValueError(f"cd must be a positive finite number, got {cd!r}")
    items = [(str(name), float(rank)) for name, rank in average_ranks.items()]
    for name, rank in items:
        if not math.isfinite(rank):
            raise ValueError(f"average_ranks[{name!r}] must be finite, got {rank!r}")
    return sorted(items, key=lambda item: item[1])  # stable: ties keep the mapping's order


def cliques(average_ranks: Mapping[str, float], cd: float) -> list[tuple[str, ...]]:
    """Maximal groups (>= 2 methods) whose average ranks all differ by less than ``cd``, i.e.
    methods not significantly different from one another (Demšar 2006, Nemenyi post-hoc test).

    Each group is a run of methods consecutive in rank order, listed best (lowest rank) first;
    the groups are sorted by rank and none is contained in another. ``[]`` when every pair
    differs significantly.
    """
    return _cliques(_sorted_ranks(average_ranks, cd), cd)


def _cliques(ranked: list[tuple[str, float]], cd: float) -> list[tuple[str, ...]]:
    """:func:`cliques` of ranks already sorted by :func:`_sorted_ranks`."""
    groups, last_end = [], 0
    for start, (_, low) in enumerate(ranked):
        end = start
        while end + 1 < len(ranked) and ranked[end + 1][1] - low < cd:
            end += 1
        if end > start and end > last_end:  # not inside the previous (longer-reaching) group
            groups.append(tuple(name for name, _ in ranked[start:end + 1]))
            last_end = end
    return groups


def _levels(spans: list[tuple[float, float]], gap: float) -> list[int]:
    """Greedy packing of horizontal spans (sorted by start) onto lines: a span joins the first
    line whose last span ends more than ``gap`` before it starts."""
    ends: list[float] = []
    levels = []
    for start, end in spans:
        for level, previous_end in enumerate(ends):
            if previous_end + gap < start:
                ends[level] = end
                levels.append(level)
                break
        else:
            ends.append(end)
            levels.append(len(ends) - 1)
    return levels


def critical_difference_diagram(average_ranks: Mapping[str, float], cd: float, *,
                                ax: Axes | None = None, title: str | None = None) -> Figure:
    """Critical-difference diagram of Demšar (2006), "Statistical comparisons of classifiers
    over multiple data sets" (JMLR 7).

    A rank axis from 1 to k with the BEST rank (1) on the LEFT; a bar above it of length ``cd``
    (e.g. the Nemenyi critical difference); each method a tick at its average rank joined by an
    elbow line to its name and rank (the better half labelled on the left, the worse half on
    the right); thick bars below the axis join each group from :func:`cliques`, methods whose
    ranks differ by less than ``cd`` (not significantly different).
    """
    ranked = _sorted_ranks(average_ranks, cd)
    k = len(ranked)
    groups = _cliques(ranked, cd)
    rank_of = dict(ranked)
    low = min(1, math.floor(ranked[0][1]))
    high = max(k, math.ceil(ranked[-1][1]))

    n_left = (k + 1) // 2
    left, right = ranked[:n_left], ranked[n_left:][::-1]  # the outermost method on top row
    spans = [(rank_of[group[0]], rank_of[group[-1]]) for group in groups]
    levels = _levels(spans, gap=0.1)
    n_levels = max(levels, default=-1) + 1

    step = 0.3  # vertical spacing (data units) of clique lines and label rows
    first_row = -step * (n_levels + 1)
    n_rows = max(len(left), len(right))
    bottom = first_row - step * (n_rows - 1) - step / 2
    top = 0.85

    figure, ax = figure_and_axes(ax, (7, 1.1 + 0.3 * (n_levels + n_rows)))
    ax.set_axis_off()
    ax.set_xlim(low - 0.4, high + 0.4)
    ax.set_ylim(bottom, top)
    line = {"color": "black", "linewidth": 0.8}

    # rank axis, ticks (integers and halves) and their numbers
    ax.plot([low, high], [0, 0], **line)
    for tick in np.arange(low, high + 0.25, 0.5):
        whole = float(tick).is_integer()
        ax.plot([tick, tick], [0, 0.12 if whole else 0.06], **line)
        if whole:
            ax.text(tick, 0.16, f"{int(tick)}", ha="center", va="bottom", fontsize="small")

    # the critical difference, from rank 1 rightwards
    cd_y = 0.55
    ax.plot([low, low + cd], [cd_y, cd_y], color="black", linewidth=1.5)
    for end in (low, low + cd):
        ax.plot([end, end], [cd_y - 0.06, cd_y + 0.06], color="black", linewidth=1.5)
    ax.text(low + cd / 2, cd_y + 0.08, f"CD = {cd:.2f}", ha="center", va="bottom",
            fontsize="small")

    # methods: tick, elbow down to its label row, then out to the side
    for side, members in (("left", left), ("right", right)):
        edge = low - 0.15 if side == "left" else high + 0.15
        for row, (name, rank) in enumerate(members):
            y = first_row - step * row
            ax.plot([rank, rank, edge], [0, y, y], **line)
            label = f"{name} ({rank:.2f})" if side == "left" else f"({rank:.2f}) {name}"
            ax.text(edge - 0.05 if side == "left" else edge + 0.05, y, label,
                    ha="right" if side == "left" else "left", va="center", fontsize="small")

    # groups not significantly different: thick bars just below the axis
    for (start, end), level in zip(spans, levels):
        y = -step * (level + 0.6)
        ax.plot([start - 0.04, end + 0.04], [y, y], color="black", linewidth=3.5,
                solid_capstyle="round")

    if title is not None:
        ax.set_title(title)
    return figure


def _p_matrix(methods: Sequence[str], p_values: Any) -> np.ndarray:
    names = [str(name) for name in methods]
    k = len(names)
    if k < 2:
        raise ValueError(f"methods needs at least 2 names, got {k}")
    p = to_numpy(p_values, "p_values")
    if p.shape != (k, k):
        raise ValueError(f"p_values must be (k, k) = ({k}, {k}) for {k} methods, "
                         f"got shape {p.shape}")
    p = np.where(np.isnan(p), p.T, p)  # one triangle given: mirror it
    if not np.allclose(p, p.T, equal_nan=True):
        raise ValueError("p_values must be symmetric (pairwise p-values)")
    off_diagonal = p[~np.eye(k, dtype=bool)]
    if np.any((off_diagonal < 0) | (off_diagonal > 1)):
        raise ValueError("p_values must lie in [0, 1]")
    np.fill_diagonal(p, np.nan)
    return p


def significance_matrix(methods: Sequence[str], p_values: Any, *, alpha: float = 0.05,
                        ax: Axes | None = None, title: str | None = None) -> Figure:
    """Heatmap of pairwise p-values between methods, e.g. Holm (1979)-adjusted p-values of
    post-hoc tests after a Friedman test (Demšar 2006; García & Herrera 2008).

    ``p_values`` is ``(k, k)`` and symmetric (if one triangle is NaN it is mirrored); the
    diagonal is left blank. Colours are log-scaled from ``1e-4`` (smaller p-values are
    clipped to it) to 1, darker = more significant; each cell shows p to 2 significant digits
    with a ``*`` where ``p < alpha``. A colorbar marks ``alpha``.
    """
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be in (0, 1), got {alpha!r}")
    names = [str(name) for name in methods]
    p = _p_matrix(names, p_values)
    k = len(names)
    size = 1.6 + 0.55 * k
    figure, ax = figure_and_axes(ax, (size + 1.2, size))
    norm = LogNorm(vmin=P_FLOOR, vmax=1.0, clip=True)
    colormap = colormaps["YlGnBu_r"].with_extremes(bad="white")
    image = ax.imshow(np.ma.masked_invalid(np.clip(p, P_FLOOR, 1.0)), cmap=colormap, norm=norm)
    fontsize = "small" if k <= 8 else "x-small"
    for i in range(k):
        for j in range(k):
            value = p[i, j]
            if i == j or np.isnan(value):
                continue
            red, green, blue, _ = colormap(norm(max(value, P_FLOOR)))
            dark = 0.299 * red + 0.587 * green + 0.114 * blue < 0.5
            ax.text(j, i, f"{value:.2g}" + ("*" if value < alpha else ""), ha="center",
                    va="center", fontsize=fontsize, color="white" if dark else "black")
    ax.set_xticks(range(k), names, rotation=45, ha="right", rotation_mode="anchor")
    ax.set_yticks(range(k), names)
    ax.tick_params(length=0)
    colorbar = figure.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
    colorbar.set_label(f"p-value (*: p < {alpha:g})")
    colorbar.ax.axhline(alpha, color="red", linewidth=1.5)
    if title is not None:
        ax.set_title(title)
    return figure
