"""Metric curves: deletion/insertion (score vs fraction changed) and ROAR/KAR (accuracy after
retraining vs fraction removed/kept)."""
from __future__ import annotations

from typing import Mapping

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from ..metrics.base import MetricResult
from ._common import figure_and_axes


def _fractions_and_curves(name: str, result: MetricResult) -> tuple[np.ndarray, np.ndarray]:
    if not isinstance(result, MetricResult):
        raise TypeError(f"results[{name!r}] must be a MetricResult, got {type(result).__name__}")
    if result.curves is None or result.fractions is None:
        raise ValueError(f"results[{name!r}] ({result.name}) has no curves/fractions to plot")
    curves = np.atleast_2d(result.curves)
    if curves.shape[1] != len(result.fractions):
        raise ValueError(f"results[{name!r}]: curves have {curves.shape[1]} points but "
                         f"fractions has {len(result.fractions)}")
    return result.fractions, curves


def _x_label(result: MetricResult) -> str:
    kind = result.name.lower()
    if "insertion" in kind:
        return "fraction of pixels inserted"
    if "deletion" in kind:
        return "fraction of pixels deleted"
    if "kar" in kind:
        return "fraction of features kept"
    if "roar" in kind or "road" in kind:
        return "fraction of features removed"
    return "fraction of features changed"


def plot_curves(results: Mapping[str, MetricResult], *, ax: Axes | None = None,
                title: str | None = None, show_spread: bool = False) -> Figure:
    """Mean curve of each method (e.g. Deletion/Insertion results) against ``fractions``.

    The legend gives each method's area under its mean curve (trapezoid over ``fractions``,
    i.e. the mean of the per-sample areas): lower is better for deletion, higher for
    insertion. ``show_spread`` shades +-1 standard deviation across samples (off by default:
    with few samples the band hides the curves).
    """
    if not results:
        raise ValueError("results is empty: pass {method name: MetricResult}")
    figure, ax = figure_and_axes(ax, (5, 3.6))
    for name, result in results.items():
        fractions, curves = _fractions_and_curves(name, result)
        mean = curves.mean(0)
        auc = float(np.sum(np.diff(fractions) * (mean[1:] + mean[:-1]) / 2))  # trapezoid
        (line,) = ax.plot(fractions, mean, label=f"{name} (AUC={auc:.3f})")
        if show_spread and len(curves) > 1:
            spread = curves.std(0)
            ax.fill_between(fractions, mean - spread, mean + spread, color=line.get_color(),
                            alpha=0.15, linewidth=0)
    first = next(iter(results.values()))
    ax.set_xlabel(_x_label(first))
    ax.set_ylabel("score of the explained class")
    ax.set_title(title if title is not None else first.name)
    ax.legend(fontsize="small")
    return figure


def _mean_and_std(name: str, result: MetricResult) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-fraction mean and std accuracy: ``details['accuracy_mean'/'accuracy_std']`` when the
    metric stored them, else over the repeats (rows) of ``curves``."""
    fractions, curves = _fractions_and_curves(name, result)
    mean = np.asarray(result.details.get("accuracy_mean", curves.mean(0)), dtype=float)
    std = np.asarray(result.details.get("accuracy_std", curves.std(0)), dtype=float)
    return fractions, mean, std


def plot_roar(results: Mapping[str, MetricResult], *, ax: Axes | None = None,
              title: str | None = None, show_random: bool = True) -> Figure:
    """ROAR/KAR test accuracy after retraining vs the fraction removed (kept), one line per
    method with error bars (+-1 std over the retraining repeats).

    Each result needs ``fractions`` ``(S,)`` and ``curves`` ``(repeats, S)``; per-fraction
    ``details['accuracy_mean']`` / ``details['accuracy_std']`` are used when present. The
    random-ranking control (``details['random_accuracy_mean'/'random_accuracy_std']``, from the
    first result that has it) is drawn once, dashed grey, when ``show_random``.
    """
    if not results:
        raise ValueError("results is empty: pass {method name: MetricResult}")
    figure, ax = figure_and_axes(ax, (5, 3.6))
    random_drawn = False
    for name, result in results.items():
        fractions, mean, std = _mean_and_std(name, result)
        ax.errorbar(fractions, mean, yerr=std, marker="o", markersize=3, capsize=3, label=name)
        if show_random and not random_drawn and "random_accuracy_mean" in result.details:
            random_mean = np.asarray(result.details["random_accuracy_mean"], dtype=float)
            random_std = np.asarray(result.details.get("random_accuracy_std",
                                                       np.zeros_like(random_mean)), dtype=float)
            ax.errorbar(fractions, random_mean, yerr=random_std, color="grey", linestyle="--",
                        capsize=3, label="random ranking")
            random_drawn = True
    first = next(iter(results.values()))
    ax.set_xlabel(_x_label(first))
    ax.set_ylabel("test accuracy after retraining")
    ax.set_title(title if title is not None else first.name.upper())
    ax.legend(fontsize="small")
    return figure
