"""HTML report of a benchmark: one self-contained page (no JavaScript) with PNG figures beside it.

``write_report(config)`` reads what :func:`~pellucid.benchmark.run_benchmark` left in the output
folder (``results.csv`` and the cache) and writes ``index.html`` and ``figures/*.png`` there:

- per dataset: the model and its test accuracy, a summary table (methods x metrics, mean and
  its bootstrap confidence interval, an arrow giving each metric's direction, in bold the best
  method of each column and every method a paired test cannot tell apart from it, a mark on the
  methods that do not beat Random, methods sorted by their mean rank over the metrics), the
  pairwise significance matrices, a method x image grid of heatmaps (for tabular data: bars of
  each method's mean absolute attribution per feature), the curves of every metric that has
  them (deletion, insertion, ...), and how many inputs would separate the two best methods;
- across datasets and metrics: the Friedman test and the critical-difference diagram;
- the timings: explanation seconds per input, and the seconds all metrics took on each
  method's heatmaps.

Images are referenced by relative paths, so the folder can be moved or zipped as a whole.
"""
from __future__ import annotations

import datetime
import html
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd
import torch
from matplotlib.figure import Figure

from ..metrics.base import MetricResult
from ..plots import (critical_difference_diagram, method_grid, plot_curves, save_figure,
                     significance_matrix, tabular_bars)
from .comparison import (Comparison, inputs_to_separate_the_best, not_better_than_random,
                         not_worse_than_best, with_ranking)
from .config import BenchmarkConfig, load_config
from .concept_cells import is_concept_method
from .runner import (RESULTS_FILE, Cell, load_cached, plan_cells, read_results, select_results,
                     slug, with_statistics)

GRID_IMAGES = 4
ARROWS = {True: "↑", False: "↓"}
TESTS = {"wilcoxon": "Wilcoxon signed-rank test", "ttest": "t-test"}

STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; max-width: 72rem;
       margin: 2rem auto; padding: 0 1rem; color: #1f2328; line-height: 1.45; }
h1 { margin-bottom: 0.2rem; } h2 { border-bottom: 1px solid #d0d7de; padding-bottom: 0.3rem;
margin-top: 2.5rem; }
.meta { color: #59636e; }
table { border-collapse: collapse; margin: 0.8rem 0; font-variant-numeric: tabular-nums; }
th, td { border: 1px solid #d0d7de; padding: 0.3rem 0.7rem; text-align: right; }
th { background: #f6f8fa; } td:first-child, th:first-child { text-align: left; }
td.best { font-weight: 700; background: #dafbe1; }
span.ci { color: #59636e; font-size: 0.85em; font-weight: 400; }
figure { margin: 1rem 0; } figure img { max-width: 100%; border: 1px solid #d0d7de; }
figcaption { color: #59636e; font-size: 0.9rem; }
"""


def write_report(config: BenchmarkConfig | dict | str | Path, *, out: str | Path | None = None,
                 title: str = "pellucid benchmark", results: pd.DataFrame | None = None,
                 extra_sections: Sequence[str] = ()) -> Path:
    """Write ``index.html`` (and ``figures/``) for the results of ``config`` in its output
    folder (or ``out``); returns the path of ``index.html``. ``results``: the table
    :func:`~pellucid.benchmark.run_benchmark` returned for this config, whose intervals and
    paired tests are then reused rather than computed again. ``extra_sections``: HTML blocks
    placed after the datasets' sections (the demo's concept section)."""
    config = load_config(config)
    out_dir = Path(out) if out is not None else config.out
    cells = list(plan_cells(config, out_dir))
    if results is None or "pairwise" not in results.attrs:
        results = with_statistics(select_results(read_results(out_dir / RESULTS_FILE), cells),
                                  cells, config)
    if results.empty:
        raise ValueError(f"no results for this config in {out_dir / RESULTS_FILE}; run the "
                         "benchmark first")
    comparison = with_ranking(results.attrs["pairwise"], results, alpha=config.alpha)
    sections = [dataset_section(spec.name, results, [c for c in cells if c.dataset is spec],
                                out_dir, comparison)
                for spec in config.datasets if (results["dataset"] == spec.name).any()]
    finished = f"{len(results)} of {len(cells)} cells finished"
    page = "\n".join([
        "<!DOCTYPE html>", '<html lang="en">', "<head>", '<meta charset="utf-8">',
        f"<title>{esc(title)}</title>", f"<style>{STYLE}</style>", "</head>", "<body>",
        f"<h1>{esc(title)}</h1>",
        f'<p class="meta">{esc(datetime.date.today().isoformat())} · {config.n_samples} test '
        f"inputs per dataset · seed {config.seed} · {finished} · raw numbers: "
        f'<a href="{RESULTS_FILE}">{RESULTS_FILE}</a></p>',
        f"<p>Each cell is the mean of a metric over the explained inputs and its "
        f"{config.level:.0%} bootstrap confidence interval (BCa). ↑: higher is better, ↓: lower "
        "is better. In bold: the best method of each column and every method that a paired "
        f"{TESTS[config.paired_test]} on the same inputs (Holm-corrected, α = {config.alpha}) "
        "cannot tell apart from it. Methods are sorted by their mean rank over the metrics. "
        "<em>Random</em> (uniform random heatmaps), where present, is the chance level; † marks "
        "a method that does not beat it significantly.</p>",
        *sections, *extra_sections, ranking_section(comparison, out_dir),
        timings_section(results),
        "</body>", "</html>"])
    path = out_dir / "index.html"
    path.write_text(page, encoding="utf-8")
    return path


def dataset_section(name: str, results: pd.DataFrame, cells: list[Cell], out_dir: Path,
                    comparison: Comparison) -> str:
    """Model line, summary table, significance, heatmap figure and curves of one dataset."""
    samples = torch.load(cells[0].samples_path, weights_only=True)
    parts = [f"<h2>{esc(name)}</h2>",
             f'<p class="meta">model {esc(samples["model"])} · test accuracy '
             f'{samples["accuracy"]:.1%} · {len(samples["inputs"])} test inputs explained, each '
             "for the class the model predicts</p>",
             f'<p>{esc(samples["description"])}</p>' if samples["description"] else "",
             summary_table(results[results["dataset"] == name], comparison),
             separation_text(results[results["dataset"] == name], cells, comparison.alpha),
             significance_figure(name, comparison, out_dir)]
    method_cells = {c.method.label: c for c in cells  # concept importances are no image
                    if c.heatmaps_path.exists() and not is_concept_method(c.method.name)}
    saved = {label: load_cached(c.heatmaps_path) for label, c in method_cells.items()}
    heatmaps = {label: s["heatmaps"] for label, s in saved.items() if s is not None}
    if heatmaps:
        heatmap_figure = image_grid if samples["inputs"].ndim == 4 else feature_bars
        parts.append(heatmap_figure(name, samples, heatmaps, out_dir))
    for metric in dict.fromkeys(c.metric.label for c in cells):
        curves = {c.method.label: load_metric_result(c) for c in cells
                  if c.metric.label == metric and c.scores_path.exists()}
        curves = {k: v for k, v in curves.items() if v.curves is not None}
        if curves:
            figure = plot_curves(curves, title=f"{metric} on {name}", show_spread=False)
            parts.append(figure_html(figure, out_dir, f"{slug(name)}-{slug(metric)}.png",
                                     f"{metric} curves, mean over the inputs; the legend gives "
                                     "each method's area under the curve."))
    return "\n".join(parts)


def image_grid(name: str, samples: dict, heatmaps: dict[str, torch.Tensor], out_dir: Path
               ) -> str:
    """Method x image grid of the first few explained images."""
    shown = slice(0, GRID_IMAGES)
    titles = [f"label {y} · predicted {t}" for y, t in zip(samples["labels"][shown].tolist(),
                                                            samples["targets"][shown].tolist())]
    figure = method_grid(samples["inputs"][shown], {k: v[shown] for k, v in heatmaps.items()},
                         titles=titles)
    return figure_html(figure, out_dir, f"{slug(name)}-heatmaps.png",
                       f"Heatmaps of the first {len(titles)} explained inputs (red: evidence "
                       "for the predicted class; blue: against it).")


def feature_bars(name: str, samples: dict, heatmaps: dict[str, torch.Tensor], out_dir: Path
                 ) -> str:
    """One panel per method: mean |attribution| of the most important tabular features."""
    figure = Figure(figsize=(3.2 * len(heatmaps), 4.0), layout="constrained")
    for ax, (label, h) in zip(figure.subplots(1, len(heatmaps), squeeze=False)[0],
                              heatmaps.items()):
        tabular_bars(h, samples["feature_names"], ax=ax, title=label)
    return figure_html(figure, out_dir, f"{slug(name)}-features.png",
                       "Mean absolute attribution of the most important features over the "
                       "explained inputs (error bars: ±1 std), per method.")


def load_metric_result(cell: Cell) -> MetricResult:
    """The per-sample scores (and curves) that the runner saved for ``cell``."""
    with np.load(cell.scores_path) as saved:
        return MetricResult(cell.metric.label, saved["scores"], curves=saved.get("curves"),
                            fractions=saved.get("fractions"))


def figure_html(figure: Any, out_dir: Path, name: str, caption: str) -> str:
    """Save ``figure`` as ``figures/<name>`` and return an ``<img>`` with a relative path."""
    save_figure(figure, out_dir / "figures" / name)
    return (f'<figure><img src="figures/{esc(name)}" alt="{esc(caption)}">'
            f"<figcaption>{esc(caption)}</figcaption></figure>")


def summary_table(table: pd.DataFrame, comparison: Comparison) -> str:
    """Methods x metrics, mean [CI]; rows sorted by mean rank (each metric ranked in its
    direction); bold where no paired test separates the method from the column's best."""
    metrics = list(dict.fromkeys(table["metric"]))
    means, lows, highs = (table.pivot(index="method", columns="metric", values=column)[metrics]
                          for column in ("mean", "ci_low", "ci_high"))
    higher = table.groupby("metric")["higher_is_better"].first()
    ranks = pd.DataFrame({m: means[m].rank(ascending=not higher[m]) for m in metrics})
    order = ranks.mean(axis=1).sort_values(kind="stable").index
    dataset = table["dataset"].iloc[0]
    bold = not_worse_than_best(comparison, table)
    chance = not_better_than_random(comparison)
    head = "".join(f"<th>{esc(m)} {ARROWS[bool(higher[m])]}</th>" for m in metrics)
    rows = []
    for method in order:
        cells = []
        for m in metrics:
            css = ' class="best"' if (dataset, m, method) in bold else ""
            mark = " †" if (dataset, m, method) in chance else ""
            cells.append(f"<td{css}>{number(means.at[method, m])} "
                         f'<span class="ci">[{number(lows.at[method, m])}, '
                         f"{number(highs.at[method, m])}]</span>{mark}</td>")
        rows.append(f"<tr><td>{esc(method)}</td>{''.join(cells)}"
                    f"<td>{ranks.loc[method].mean():.2f}</td></tr>")
    return (f"<table><thead><tr><th>method</th>{head}<th>mean rank</th></tr></thead>"
            f"<tbody>{''.join(rows)}</tbody></table>")


def significance_figure(name: str, comparison: Comparison, out_dir: Path) -> str:
    """One Holm-corrected p-value matrix per metric of the dataset."""
    pairs = comparison.pairwise[comparison.pairwise["dataset"] == name]
    metrics = list(dict.fromkeys(pairs["metric"]))
    if not metrics:
        return ""
    columns = min(2, len(metrics))  # two readable matrices a row, whatever the metric count
    rows = -(-len(metrics) // columns)
    figure = Figure(figsize=(6.5 * columns, 5.8 * rows), layout="constrained")
    axes = figure.subplots(rows, columns, squeeze=False).ravel()
    for ax in axes[len(metrics):]:
        ax.set_visible(False)
    for ax, metric in zip(axes, metrics):
        block = pairs[pairs["metric"] == metric]
        methods = list(dict.fromkeys([*block["method_a"], *block["method_b"]]))
        index = {m: i for i, m in enumerate(methods)}
        p = np.full((len(methods), len(methods)), np.nan)
        for row in block.itertuples():
            p[index[row.method_a], index[row.method_b]] = row.p_holm
            p[index[row.method_b], index[row.method_a]] = row.p_holm
        significance_matrix(methods, p, alpha=comparison.alpha, ax=ax, title=metric)
    return figure_html(figure, out_dir, f"{slug(name)}-significance.png",
                       "Holm-corrected p-values of the paired tests between methods, per metric "
                       f"(★: p < {comparison.alpha}).")


def separation_text(table: pd.DataFrame, cells: list[Cell], alpha: float) -> str:
    """How many inputs a paired t-test needs to separate the two best methods of each metric."""
    lines = []
    for row in inputs_to_separate_the_best(table, cells, alpha=alpha):
        needed = ("cannot be estimated (no difference)" if row["inputs_needed"] is None
                  else f"needs about {row['inputs_needed']} inputs")
        lines.append(f"<li>{esc(row['metric'])}: telling {esc(row['first'])} from "
                     f"{esc(row['second'])} {needed} (power 0.8, α = {alpha}); this run has "
                     f"{row['inputs_used']}.</li>")
    return f'<ul class="meta">{"".join(lines)}</ul>' if lines else ""


def ranking_section(comparison: Comparison, out_dir: Path) -> str:
    """Friedman test over the (dataset, metric) blocks and the critical-difference diagram."""
    if comparison.friedman is None:
        return ""
    result = comparison.friedman
    figure = critical_difference_diagram(comparison.average_ranks,
                                         comparison.critical_difference)
    return "\n".join([
        "<h2>Ranking across datasets and metrics</h2>",
        f"<p>Friedman test over {result.n_blocks} (dataset, metric) blocks and {result.k} "
        f"methods: χ²<sub>F</sub> = {result.chi2:.2f}, F<sub>F</sub> = {result.f_statistic:.2f}, "
        f"p = {result.p_value:.3g}. Nemenyi critical difference at α = {comparison.alpha}: "
        f"{comparison.critical_difference:.2f} (Demšar, 2006). Methods joined by a bar do not "
        "differ significantly.</p>",
        figure_html(figure, out_dir, "critical-difference.png",
                    "Average rank of each method over the (dataset, metric) blocks (1 = best) "
                    "and the Nemenyi critical difference.")])


def timings_section(results: pd.DataFrame) -> str:
    explain = results.groupby(["method", "dataset"], sort=False)["explain_s_per_sample"].first()
    metric = results.groupby(["method", "dataset"], sort=False)["metric_s"].sum()
    rows = "".join(
        f"<tr><td>{esc(method)}</td><td>{esc(dataset)}</td><td>{explain[method, dataset]:.4f}"
        f"</td><td>{metric[method, dataset]:.2f}</td></tr>"
        for method, dataset in explain.index)
    return ("<h2>Timings</h2><p>Wall-clock seconds on this machine: explanation time per input, "
            "and the total time of all metrics on that method's heatmaps.</p>"
            "<table><thead><tr><th>method</th><th>dataset</th><th>explain s / input</th>"
            f"<th>metrics s</th></tr></thead><tbody>{rows}</tbody></table>")


def number(value: float) -> str:
    return f"{value:.3f}" if np.isfinite(value) else "n/a"


def esc(text: Any) -> str:
    return html.escape(str(text))
