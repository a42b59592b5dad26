"""How sure a benchmark is: confidence intervals per cell, paired tests between methods on the
same inputs, a Friedman test with Nemenyi critical difference over the (dataset, metric) blocks,
the methods that do not beat Random, and how many inputs would separate the two best methods
(Demšar, 2006, "Statistical Comparisons of Classifiers over Multiple Data Sets").

Everything is computed from the per-input scores the runner caches for each cell, so a finished
run can be compared again with another test or level without recomputing a heatmap.
"""
from __future__ import annotations

import warnings
import zipfile
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Iterable

import numpy as np
import pandas as pd

from . import statistics
from .statistics import (FriedmanResult, bootstrap_ci, friedman, inputs_needed, nemenyi_cd,
                         pairwise_tests)

if TYPE_CHECKING:
    from .runner import Cell

RANDOM = "Random"
PAIRWISE_COLUMNS = ["dataset", "metric", *statistics.PAIRWISE_COLUMNS, "better"]


@dataclass(frozen=True)
class Comparison:
    """What a benchmark's numbers support (see the module docstring)."""

    pairwise: pd.DataFrame             # PAIRWISE_COLUMNS, one row per pair per (dataset, metric)
    ranked_methods: list[str]           # the methods of the Friedman test, in its order
    friedman: FriedmanResult | None     # over the (dataset, metric) blocks with every method
    critical_difference: float | None   # Nemenyi CD of the average ranks at alpha
    alpha: float

    @property
    def average_ranks(self) -> dict[str, float]:
        if self.friedman is None:
            return {}
        return dict(zip(self.ranked_methods, map(float, self.friedman.average_ranks)))


def cell_scores(cells: Iterable[Cell]) -> dict[str, np.ndarray]:
    """Per-input scores of every finished cell whose scores file can be read, by fingerprint
    (an unreadable one is left out with a warning: the runner computes that cell again)."""
    scores = {}
    for cell in cells:
        if not cell.scores_path.exists():
            continue
        try:
            with np.load(cell.scores_path) as saved:
                scores[cell.fingerprint] = saved["scores"]
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as error:
            warnings.warn(f"ignoring unreadable scores file {cell.scores_path} ({error})",
                          RuntimeWarning, stacklevel=2)
    return scores


def with_confidence_intervals(results: pd.DataFrame, cells: list[Cell], *, level: float = 0.95,
                              seed: int = 0) -> pd.DataFrame:
    """``results`` with ``ci_low`` and ``ci_high``: the bootstrap BCa interval of each cell's
    mean over its inputs (:func:`~pellucid.benchmark.statistics.bootstrap_ci`)."""
    scores = cell_scores(cells)
    bounds = [bootstrap_ci(scores[fp], level=level, seed=seed) if fp in scores
              else (np.nan, np.nan) for fp in results["fingerprint"]]
    out = results.copy()
    out["ci_low"] = [low for low, _ in bounds]
    out["ci_high"] = [high for _, high in bounds]
    return out


def compare(results: pd.DataFrame, cells: list[Cell], *, test: str = "wilcoxon",
            level: float = 0.95, alpha: float = 0.05, seed: int = 0) -> Comparison:
    """Paired tests within each (dataset, metric), Holm-corrected over its pairs, and the
    Friedman / Nemenyi ranking across them."""
    pairwise = pairwise_comparisons(results, cells, test=test, level=level, alpha=alpha,
                                    seed=seed)
    return with_ranking(pairwise, results, alpha=alpha)


def with_ranking(pairwise: pd.DataFrame, results: pd.DataFrame, *, alpha: float = 0.05
                 ) -> Comparison:
    """A :class:`Comparison` from paired tests already computed (``results.attrs["pairwise"]``
    of :func:`~pellucid.benchmark.run_benchmark`) and the ranking of ``results``."""
    return Comparison(pairwise, *rank_methods(results, alpha=alpha), alpha)


def pairwise_comparisons(results: pd.DataFrame, cells: list[Cell], *, test: str = "wilcoxon",
                         level: float = 0.95, alpha: float = 0.05, seed: int = 0
                         ) -> pd.DataFrame:
    """:data:`PAIRWISE_COLUMNS`: the paired tests of every (dataset, metric), with the better
    method of each significant pair in ``better``."""
    scores = cell_scores(cells)
    tables = []
    for (dataset, metric), block in results.groupby(["dataset", "metric"], sort=False):
        by_method = {row.method: scores[row.fingerprint] for row in block.itertuples()
                     if row.fingerprint in scores}
        if len(by_method) < 2:
            continue
        table = pairwise_tests(by_method, test=test, level=level, alpha=alpha, seed=seed)
        higher = bool(block["higher_is_better"].iloc[0])
        sign = np.sign(table["shift"]) * (1 if higher else -1)
        table["better"] = np.where(table["significant"] & (sign > 0), table["method_a"],
                                   np.where(table["significant"] & (sign < 0),
                                            table["method_b"], ""))
        table.insert(0, "metric", metric)
        table.insert(0, "dataset", dataset)
        tables.append(table)
    pairwise = (pd.concat(tables, ignore_index=True) if tables
                else pd.DataFrame(columns=PAIRWISE_COLUMNS))
    return pairwise[PAIRWISE_COLUMNS]


def rank_methods(results: pd.DataFrame, *, alpha: float = 0.05
                 ) -> tuple[list[str], FriedmanResult | None, float | None]:
    """Friedman test over the (dataset, metric) blocks in which every method has a mean (each
    block ranked in its metric's direction) and the Nemenyi critical difference; ``(None,
    None)`` with fewer than 2 blocks or 2 methods. Returns the methods in column order too."""
    means = results.pivot_table(index=["dataset", "metric"], columns="method", values="mean",
                                sort=False).dropna()
    if len(means) < 2 or means.shape[1] < 2:
        return [], None, None
    higher = results.groupby(["dataset", "metric"], sort=False)["higher_is_better"].first()
    oriented = means.to_numpy() * np.where(higher.loc[means.index].to_numpy(), 1, -1)[:, None]
    ranking = friedman(oriented, higher_is_better=True)
    return (list(means.columns), ranking,
            nemenyi_cd(means.shape[1], len(means), alpha=alpha))


def not_better_than_random(comparison: Comparison) -> set[tuple[str, str, str]]:
    """``(dataset, metric, method)`` of the methods that do not beat Random significantly."""
    pairs = comparison.pairwise
    with_random = pairs[(pairs["method_a"] == RANDOM) | (pairs["method_b"] == RANDOM)]
    out = set()
    for row in with_random.itertuples():
        method = row.method_b if row.method_a == RANDOM else row.method_a
        if row.better != method:
            out.add((row.dataset, row.metric, method))
    return out


def not_worse_than_best(comparison: Comparison, results: pd.DataFrame
                        ) -> set[tuple[str, str, str]]:
    """``(dataset, metric, method)`` of the best method of each column and of every method the
    paired test cannot tell apart from it (the report's bold cells)."""
    out = set()
    pairs = comparison.pairwise
    for (dataset, metric), block in results.groupby(["dataset", "metric"], sort=False):
        higher = bool(block["higher_is_better"].iloc[0])
        best = block.loc[block["mean"].idxmax() if higher else block["mean"].idxmin(), "method"]
        out.add((dataset, metric, best))
        here = pairs[(pairs["dataset"] == dataset) & (pairs["metric"] == metric)]
        for row in here.itertuples():
            if best in (row.method_a, row.method_b) and row.better != best:
                out.add((dataset, metric, row.method_b if row.method_a == best else row.method_a))
    return out


def inputs_to_separate_the_best(results: pd.DataFrame, cells: list[Cell], *,
                                alpha: float = 0.05, power: float = 0.8
                                ) -> list[dict[str, Any]]:
    """For each (dataset, metric): the two best methods by mean and the number of inputs a
    paired t-test needs to tell them apart with ``power`` (from this run as a pilot)."""
    scores = cell_scores(cells)
    rows = []
    for (dataset, metric), block in results.groupby(["dataset", "metric"], sort=False):
        block = block[block["fingerprint"].isin(scores)]
        if len(block) < 2:
            continue
        higher = bool(block["higher_is_better"].iloc[0])
        ordered = block.sort_values("mean", ascending=not higher)
        first, second = ordered.iloc[0], ordered.iloc[1]
        needed = inputs_needed(scores[first["fingerprint"]], scores[second["fingerprint"]],
                               power=power, alpha=alpha)
        rows.append({"dataset": dataset, "metric": metric, "first": first["method"],
                     "second": second["method"], "inputs_needed": needed,
                     "inputs_used": int(first["n"])})
    return rows
