"""Tabular attributions: sorted bar chart, and shap's waterfall plot wrapped to return a Figure."""
from __future__ import annotations

import warnings
from typing import Any, Sequence

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from ._common import figure_and_axes, to_numpy


def _names(feature_names: Sequence[str] | None, n: int) -> list[str]:
    names = list(feature_names) if feature_names is not None else [f"feature {i}" for i in range(n)]
    if len(names) != n:
        raise ValueError(f"feature_names must hold one name per feature ({n}), got {len(names)}")
    return [str(name) for name in names]


def tabular_bars(attributions: Any, feature_names: Sequence[str] | None = None, *,
                 ax: Axes | None = None, top_k: int | None = 10, title: str | None = None
                 ) -> Figure:
    """Horizontal bars of feature attributions, the largest magnitude on top.

    ``(F,)``: one explanation, signed bars (red = for the target, blue = against).
    ``(N, F)``: a global view, the mean absolute attribution over the N samples with +-1 std
    error bars. ``top_k`` keeps the most important features (``None``: all).
    """
    values = to_numpy(attributions, "attributions")
    if values.ndim not in (1, 2) or values.shape[-1] == 0:
        raise ValueError(f"attributions must be (F,) or (N, F), got shape {values.shape}")
    names = _names(feature_names, values.shape[-1])
    if values.ndim == 2:
        heights, errors = np.abs(values).mean(0), np.abs(values).std(0)
        colors, label = ["tab:blue"] * len(heights), "mean |attribution|"
    else:
        heights, errors = values, None
        colors, label = ["tab:red" if v >= 0 else "tab:blue" for v in values], "attribution"
    order = np.argsort(-np.abs(heights), kind="stable")[:top_k]
    figure, ax = figure_and_axes(ax, (5, 0.35 * len(order) + 1.2))
    positions = np.arange(len(order))
    ax.barh(positions, heights[order], xerr=None if errors is None else errors[order],
            color=[colors[i] for i in order])
    ax.set_yticks(positions, [names[i] for i in order])
    ax.invert_yaxis()
    ax.axvline(0, color="black", linewidth=0.8)
    ax.set_xlabel(label)
    if title is not None:
        ax.set_title(title)
    return figure


def waterfall(attributions: Any, feature_names: Sequence[str] | None = None, *,
              base_value: float = 0.0, feature_values: Any = None, max_display: int = 10,
              title: str | None = None) -> Figure:
    """shap's waterfall plot of one explanation ``(F,)``: from ``base_value`` (the expected
    model output) to ``base_value + sum(attributions)``, one step per feature.

    Drawn by ``shap.plots.waterfall`` on a fresh figure that is then detached from pyplot, so
    nothing is left open and the Figure is returned (shap draws on the current figure, hence
    no ``ax=``).
    """
    import matplotlib.pyplot as plt
    with warnings.catch_warnings():  # shap's colormap set-up warns under recent matplotlib
        warnings.simplefilter("ignore", PendingDeprecationWarning)
        import shap

    values = to_numpy(attributions, "attributions")
    if values.ndim != 1:
        raise ValueError(f"waterfall shows one explanation: attributions must be (F,), "
                         f"got shape {values.shape}")
    data = None if feature_values is None else to_numpy(feature_values, "feature_values")
    if data is not None and data.shape != values.shape:
        raise ValueError(f"feature_values must have shape {values.shape}, got {data.shape}")
    explanation = shap.Explanation(values=values, base_values=float(base_value), data=data,
                                   feature_names=_names(feature_names, len(values)))
    before = set(plt.get_fignums())
    figure = plt.figure()
    try:
        shap.plots.waterfall(explanation, max_display=max_display, show=False)
        if title is not None:
            figure.axes[0].set_title(title)
    finally:
        for number in set(plt.get_fignums()) - before:
            plt.close(number)
    return figure
