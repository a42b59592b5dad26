"""Tabular attributions: sorted bar chart, and shap's waterfall and beeswarm plots wrapped to
return a Figure. Each takes pellucid's arrays or a ``shap.Explanation`` (whose feature names,
base value and feature values are used unless given)."""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from .._shap_values import import_shap, is_explanation
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
    feature_names = _explanation_field(attributions, "feature_names", feature_names)
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


def _explanation_field(attributions: Any, field: str, given: Any) -> Any:
    """``given``, else the field of a ``shap.Explanation`` (``None`` for plain arrays)."""
    if given is not None or not is_explanation(attributions):
        return given
    return getattr(attributions, field, None)


def _shap_fields(attributions: Any, feature_values: Any, feature_names: Any, expected: str,
                 ndim: int) -> dict[str, Any]:
    """Checked ``values``, ``data`` and ``feature_names`` of a shap plot: arrays, or the fields
    of a ``shap.Explanation`` where not given."""
    feature_names = _explanation_field(attributions, "feature_names", feature_names)
    feature_values = _explanation_field(attributions, "data", feature_values)
    values = to_numpy(attributions, "attributions")
    if values.ndim != ndim or values.shape[-1] == 0:
        raise ValueError(f"{expected}, got shape {values.shape}")
    data = None if feature_values is None else to_numpy(feature_values, "feature_values")
    if data is not None and data.shape != values.shape:
        raise ValueError(f"feature_values must have shape {values.shape}, got {data.shape}")
    return {"values": values, "data": data,
            "feature_names": _names(feature_names, values.shape[-1])}


def _shap_plot(draw: Any, title: str | None) -> Figure:
    """Run a shap plotting function on a fresh figure that is then detached from pyplot, so
    nothing is left open (shap draws on the current figure, hence no ``ax=``)."""
    import matplotlib.pyplot as plt
    before = set(plt.get_fignums())
    figure = plt.figure()
    try:
        draw()
        if title is not None:
            figure.axes[0].set_title(title)
    finally:
        for number in set(plt.get_fignums()) - before:
            plt.close(number)
    return figure


def waterfall(attributions: Any, feature_names: Sequence[str] | None = None, *,
              base_value: float | None = None, feature_values: Any = None,
              max_display: int = 10, title: str | None = None) -> Figure:
    """shap's waterfall plot of one explanation ``(F,)``: from ``base_value`` (the expected
    model output; default 0) to ``base_value + sum(attributions)``, one step per feature.
    Drawn by ``shap.plots.waterfall``.
    """
    base_value = _explanation_field(attributions, "base_values", base_value)
    shap = import_shap()
    explanation = shap.Explanation(**_shap_fields(
        attributions, feature_values, feature_names, "waterfall shows one explanation: "
        "attributions must be (F,)", ndim=1),
        base_values=float(0.0 if base_value is None else base_value))
    return _shap_plot(lambda: shap.plots.waterfall(explanation, max_display=max_display,
                                                   show=False), title)


def beeswarm(attributions: Any, feature_values: Any = None,
             feature_names: Sequence[str] | None = None, *, max_display: int = 10,
             title: str | None = None) -> Figure:
    """shap's beeswarm summary of a tabular data set's explanations ``(N, F)``: one row per
    feature (the most important on top, by mean absolute attribution), one dot per sample at
    its attribution, coloured by the feature's value when ``feature_values`` ``(N, F)`` are
    given. Drawn by ``shap.plots.beeswarm``."""
    shap = import_shap()
    explanation = shap.Explanation(**_shap_fields(
        attributions, feature_values, feature_names, "beeswarm summarises a data set: "
        "attributions must be (N, F)", ndim=2))
    return _shap_plot(lambda: shap.plots.beeswarm(explanation, max_display=max_display,
                                                  show=False, plot_size=None), title)
