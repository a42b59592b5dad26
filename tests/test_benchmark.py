"""Benchmark runner: one row per cell, heatmaps explained once, resumable after an interruption,
fingerprints that follow the config, TOML configs, and the HTML report."""
from __future__ import annotations

from html.parser import HTMLParser
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from pellucid.benchmark import (RESULT_COLUMNS, BenchmarkConfig, DatasetSpec, MethodSpec,
                                MetricSpec, RandomAttribution, load_config, run_benchmark,
                                write_report)
from pellucid.benchmark.statistics import bootstrap_ci
from pellucid.explain.base import Explainer
from pellucid.metrics import RelevanceMass
from pellucid.metrics.base import ModelMetric
from pellucid.metrics.base import MetricResult

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def tiny_cnn(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(2),
                         nn.Flatten(), nn.Linear(16, 3)).eval()


def tiny_data(n: int = 12, masks: bool = True):
    g = torch.Generator().manual_seed(0)
    x = torch.rand(n, 1, 8, 8, generator=g)
    m = torch.zeros(n, 8, 8, dtype=torch.bool)
    m[:, :4, :4] = True
    return SimpleNamespace(x_test=x, y_test=torch.randint(0, 3, (n,), generator=g),
                           masks_test=m if masks else None)


class CountingExplainer(Explainer):
    """Heatmap = input * scale (channel summed); counts its explain calls."""

    calls = 0

    def __init__(self, model, *, scale: float = 1.0, **common):
        super().__init__(model, **common)
        self.scale = scale

    def _explain(self, x, scorer):
        type(self).calls += 1
        return x.sum(1) * self.scale


class MeanHeatmap(ModelMetric):
    """Score of a sample = mean of its heatmap plus the model's score of its target; counts
    calls; can be told to raise KeyboardInterrupt on its n-th call (a user pressing Ctrl-C)."""

    calls = 0
    interrupt_on: int | None = None

    def __init__(self, model, *, offset: float = 0.0, **common):
        super().__init__(model, **common)
        self.offset = offset

    def _score(self, inputs, heatmaps, scorer):
        type(self).calls += 1
        if type(self).calls == type(self).interrupt_on:
            raise KeyboardInterrupt
        target_scores = scorer(inputs, torch.arange(len(inputs)))[:, 0]
        scores = heatmaps.flatten(1).mean(1) + target_scores + self.offset
        return MetricResult("mean_heatmap", scores.numpy(), higher_is_better=False)


@pytest.fixture(autouse=True)
def reset_counters():
    CountingExplainer.calls = 0
    MeanHeatmap.calls = 0
    MeanHeatmap.interrupt_on = None


def make_config(out, **overrides) -> BenchmarkConfig:
    config = dict(
        datasets=[DatasetSpec("toy", model=tiny_cnn(), data=tiny_data())],
        methods=[MethodSpec(CountingExplainer, label="input"),
                 MethodSpec(CountingExplainer, {"scale": 2.0}, label="double"),
                 MethodSpec("Random")],
        metrics=[MetricSpec(MeanHeatmap, label="mean"),
                 MetricSpec(MeanHeatmap, {"offset": 1.0}, label="mean+1")],
        n_samples=5, seed=0, out=out)
    config.update(overrides)
    return BenchmarkConfig(**config)


def test_one_row_per_cell_with_scores_from_the_right_heatmaps(tmp_path):
    results = run_benchmark(make_config(tmp_path), progress=False)
    assert list(results.columns) == [*RESULT_COLUMNS, "ci_low", "ci_high"]
    assert len(results) == 3 * 2
    assert set(zip(results.method, results.metric)) == {
        (m, k) for m in ("input", "double", "Random") for k in ("mean", "mean+1")}
    assert CountingExplainer.calls == 2  # once per method, shared by both metrics
    assert MeanHeatmap.calls == 6

    # independent recomputation: the seeded subset, the model's predictions, the heatmaps
    data, model = tiny_data(), make_config(tmp_path).datasets[0].model
    idx = np.sort(np.random.default_rng(0).choice(12, size=5, replace=False))
    x = data.x_test[idx]
    targets = model(x).argmax(1)
    target_logits = model(x).max(1).values.detach()  # the predicted class is the target
    for label, scale in (("input", 1.0), ("double", 2.0)):
        for metric, offset in (("mean", 0.0), ("mean+1", 1.0)):
            expected = (x.sum(1).flatten(1).mean(1) * scale + target_logits + offset).numpy()
            row = results[(results.method == label) & (results.metric == metric)].iloc[0]
            assert row["mean"] == pytest.approx(expected.mean(), rel=1e-6)
            assert row["std"] == pytest.approx(expected.std(), rel=1e-5)
            assert row["n"] == 5 and not row["higher_is_better"]
            # the cell's interval is the bootstrap of these recomputed per-input scores
            low, high = bootstrap_ci(expected, level=0.95, seed=0)
            assert (row["ci_low"], row["ci_high"]) == pytest.approx((low, high), rel=1e-5)
            assert row["ci_low"] <= row["mean"] <= row["ci_high"]
    random_row = results[results.method == "Random"].iloc[0]
    random_maps = RandomAttribution(model, seed=0).explain(x, targets)
    assert random_row["mean"] == pytest.approx(
        (random_maps.flatten(1).mean(1) + target_logits).mean().item(), rel=1e-6)

    on_disk = pd.read_csv(tmp_path / "results.csv")
    pd.testing.assert_frame_equal(on_disk, results[RESULT_COLUMNS], check_dtype=False)
    pairwise = results.attrs["pairwise"]  # 3 pairs of methods for each of the 2 metrics
    assert len(pairwise) == 6 and set(pairwise["metric"]) == {"mean", "mean+1"}
    assert pairwise["p_holm"].between(0, 1).all()


def test_interrupted_run_resumes_without_recomputing_finished_cells(tmp_path):
    MeanHeatmap.interrupt_on = 3
    with pytest.raises(KeyboardInterrupt):
        run_benchmark(make_config(tmp_path), progress=False)
    before = pd.read_csv(tmp_path / "results.csv")
    assert len(before) == 2  # cells 1 and 2 were saved as they finished
    assert CountingExplainer.calls == 2  # "input" and "double" were explained, Random not yet

    MeanHeatmap.interrupt_on, MeanHeatmap.calls, CountingExplainer.calls = None, 0, 0
    results = run_benchmark(make_config(tmp_path), progress=False)
    assert MeanHeatmap.calls == 6 - 2  # only the unfinished cells
    assert CountingExplainer.calls == 0  # heatmaps of "double" came from the disk cache
    assert len(results) == 6 and len(pd.read_csv(tmp_path / "results.csv")) == 6
    pd.testing.assert_frame_equal(results.iloc[:2][RESULT_COLUMNS], before, check_dtype=False)

    MeanHeatmap.calls = 0
    again = run_benchmark(make_config(tmp_path), progress=False)
    assert MeanHeatmap.calls == 0 and CountingExplainer.calls == 0
    pd.testing.assert_frame_equal(again, results)


def test_changed_parameters_recompute_only_the_cells_they_change(tmp_path):
    run_benchmark(make_config(tmp_path), progress=False)
    MeanHeatmap.calls = CountingExplainer.calls = 0
    changed = make_config(tmp_path, methods=[
        MethodSpec(CountingExplainer, label="input"),
        MethodSpec(CountingExplainer, {"scale": 3.0}, label="double"),
        MethodSpec("Random")])
    results = run_benchmark(changed, progress=False)
    assert CountingExplainer.calls == 1 and MeanHeatmap.calls == 2
    assert len(results) == 6
    old = pd.read_csv(tmp_path / "results.csv")
    assert len(old) == 8  # the old "double" rows stay in the log; the table shows the new ones
    double = results[results.method == "double"]["mean"].to_numpy()
    assert not np.isin(double, old.iloc[:6]["mean"].to_numpy()).any()


def test_another_model_or_data_under_the_same_name_is_not_mistaken_for_finished(tmp_path):
    run_benchmark(make_config(tmp_path), progress=False)
    MeanHeatmap.calls = CountingExplainer.calls = 0
    other_model = make_config(tmp_path, datasets=[
        DatasetSpec("toy", model=tiny_cnn(seed=1), data=tiny_data())])
    run_benchmark(other_model, progress=False)
    assert CountingExplainer.calls == 2 and MeanHeatmap.calls == 6

    MeanHeatmap.calls = CountingExplainer.calls = 0
    other_data = make_config(tmp_path, datasets=[
        DatasetSpec("toy", model=tiny_cnn(), data=tiny_data(n=13))])
    run_benchmark(other_data, progress=False)
    assert CountingExplainer.calls == 2 and MeanHeatmap.calls == 6


def test_masks_reach_localization_metrics_and_restriction_by_dataset(tmp_path):
    config = make_config(
        tmp_path,
        datasets=[DatasetSpec("with_masks", model=tiny_cnn(), data=tiny_data()),
                  DatasetSpec("no_masks", model=tiny_cnn(), data=tiny_data(masks=False))],
        methods=[MethodSpec(CountingExplainer, label="input")],
        metrics=[MetricSpec(MeanHeatmap, label="mean"),
                 MetricSpec(RelevanceMass, datasets=["with_masks"])])
    results = run_benchmark(config, progress=False)
    assert list(zip(results.dataset, results.metric)) == [
        ("with_masks", "mean"), ("with_masks", "RelevanceMass"), ("no_masks", "mean")]
    # heatmap = the (positive) input; the mask is the top-left quarter of each sample
    idx = np.sort(np.random.default_rng(0).choice(12, size=5, replace=False))
    x = tiny_data().x_test[idx, 0]
    expected = (x[:, :4, :4].sum((1, 2)) / x.sum((1, 2))).mean().item()
    assert results.iloc[1]["mean"] == pytest.approx(expected, rel=1e-6)

    unrestricted = make_config(
        tmp_path / "b", datasets=[DatasetSpec("no_masks", model=tiny_cnn(),
                                              data=tiny_data(masks=False))],
        metrics=[MetricSpec(RelevanceMass)])
    CountingExplainer.calls = 0
    with pytest.raises(ValueError, match=r"\['RelevanceMass'\] need ground-truth masks"):
        run_benchmark(unrestricted, progress=False)
    assert CountingExplainer.calls == 0  # said before any explanation ran


def test_metrics_that_do_not_score_heatmaps_are_refused(tmp_path):
    with pytest.raises(ValueError, match="unknown metric 'Roar'"):
        run_benchmark(make_config(tmp_path, metrics=["Roar"]), progress=False)
    from pellucid.procedures import Roar
    with pytest.raises(TypeError, match="Roar cannot be a benchmark metric"):
        run_benchmark(make_config(tmp_path, metrics=[Roar]), progress=False)


def test_example_toml_config_is_valid():
    config = load_config(EXAMPLES / "benchmark.toml")
    assert config.out == Path("benchmark-results") and config.n_samples == 16
    assert [m.label for m in config.methods] == ["Saliency", "IntegratedGradients", "RISE",
                                                 "Random"]
    assert config.methods[2].params == {"nb_samples": 1000, "grid_size": 4}
    assert [(m.label, m.datasets) for m in config.metrics] == [
        ("Deletion", None), ("Insertion", None), ("PointingGame", ["blockmnist"])]


@pytest.mark.parametrize("change, message", [
    ({"methods": []}, "at least one entry in 'methods'"),
    ({"methods": ["Saliency", "Saliency"]}, "distinct names"),
    ({"metrics": [{"name": "Deletion", "steps": 3}]}, r"unknown keys \['steps'\]"),
    ({"metrics": [{"name": "PointingGame", "datasets": ["mnist"]}]}, "not in the config"),
    ({"n_samples": 0}, "n_samples must be an integer >= 1"),
    ({"colour": "red"}, "unknown benchmark config keys"),
])
def test_bad_configs_say_what_is_wrong(change, message):
    config = {"datasets": ["digits"], "methods": ["Saliency"], "metrics": ["Deletion"], **change}
    with pytest.raises(ValueError, match=message):
        BenchmarkConfig.from_dict(config)


def test_unknown_method_names_the_available_ones(tmp_path):
    config = make_config(tmp_path, methods=["Salincy"])
    with pytest.raises(ValueError, match=r"unknown method 'Salincy'; available: .*Saliency"):
        run_benchmark(config, progress=False)


def test_unknown_zoo_model_is_refused_before_any_work(tmp_path):
    config = make_config(tmp_path, datasets=[DatasetSpec("digits", model="digits_cnm")])
    with pytest.raises(ValueError, match="unknown model 'digits_cnm'"):
        run_benchmark(config, progress=False)
    assert not (tmp_path / "results.csv").exists() and CountingExplainer.calls == 0


def test_toml_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_config(tmp_path / "missing.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("datasets = [")
    with pytest.raises(ValueError, match="not valid TOML"):
        load_config(bad)


class ReportPage(HTMLParser):
    """Image sources, and the text of the first column of every table row."""

    def __init__(self):
        super().__init__()
        self.images: list[str] = []
        self.rows: list[list[str]] = []
        self._cell: list[str] | None = None

    def handle_starttag(self, tag, attrs):
        if tag == "img":
            self.images.append(dict(attrs)["src"])
        elif tag == "tr":
            self.rows.append([])
        elif tag in ("td", "th"):
            self._cell = []

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell is not None:
            self.rows[-1].append("".join(self._cell))
            self._cell = None


def test_report_tables_are_sorted_and_every_image_exists(tmp_path):
    config = make_config(tmp_path)
    results = run_benchmark(config, progress=False)
    index = write_report(config)
    assert index == tmp_path / "index.html"
    page = ReportPage()
    page.feed(index.read_text(encoding="utf-8"))
    # the toy metric has no curves
    assert page.images == ["figures/toy-significance.png", "figures/toy-heatmaps.png",
                           "figures/critical-difference.png"]
    assert all((tmp_path / src).is_file() for src in page.images)

    header, *rows = page.rows[:4]
    assert header == ["method", "mean ↓", "mean+1 ↓", "mean rank"]
    # both metrics are lower-is-better and differ by a constant: sorted by "mean", ascending
    means = results[results.metric == "mean"].set_index("method")["mean"]
    assert [r[0] for r in rows] == list(means.sort_values().index)
    best = results.set_index(["method", "metric"]).loc[(rows[0][0], "mean")]
    assert rows[0][1].startswith(f"{means.min():.3f} [{best['ci_low']:.3f}, "
                                 f"{best['ci_high']:.3f}]")
    # with 5 inputs the smallest two-sided Wilcoxon p-value is 2 / 2**5 = 0.0625 > 0.05: no
    # paired test separates any two methods, so every cell is bold and no method beats Random
    html_text = index.read_text()
    assert html_text.count('<td class="best">') == 3 * 2
    assert sum(cell.endswith("†") for row in rows for cell in row[1:3]) == 2 * 2
    assert (results.attrs["pairwise"]["p_value"] >= 0.0625 - 1e-12).all()


def test_report_of_a_tabular_benchmark_has_feature_bars_and_curves(tmp_path):
    torch.manual_seed(0)
    mlp = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2)).eval()
    data = SimpleNamespace(x_test=torch.randn(10, 4, generator=torch.Generator().manual_seed(3)),
                           y_test=torch.zeros(10, dtype=torch.long),
                           feature_names=["age", "dose", "weight", "height"])
    config = BenchmarkConfig(datasets=[DatasetSpec("table", model=mlp, data=data)],
                             methods=["Saliency", "Random"], metrics=["Deletion", "Insertion"],
                             n_samples=6, out=tmp_path)
    results = run_benchmark(config, progress=False)
    assert len(results) == 4 and (results.n == 6).all()
    page = ReportPage()
    page.feed(write_report(config).read_text(encoding="utf-8"))
    assert page.images == ["figures/table-significance.png", "figures/table-features.png",
                           "figures/table-Deletion.png", "figures/table-Insertion.png",
                           "figures/critical-difference.png"]
    assert all((tmp_path / src).is_file() for src in page.images)


def test_report_before_any_result_says_so(tmp_path):
    with pytest.raises(ValueError, match="run the benchmark first"):
        write_report(make_config(tmp_path))


def test_a_method_name_must_be_a_name_or_a_class():
    with pytest.raises(TypeError, match="name must be a class name or a class, got 3"):
        MethodSpec(3)


def test_a_typo_in_params_is_named_before_any_cell_runs(tmp_path):
    config = make_config(tmp_path, methods=[MethodSpec(CountingExplainer, label="input"),
                                            MethodSpec("Rise", {"nb_sample": 10})])
    with pytest.raises(ValueError, match=r"method 'Rise' \(Rise\) has no parameter "
                                         r"\['nb_sample'\]; 'nb_sample': did you mean "
                                         r"'nb_samples'\?"):
        run_benchmark(config, progress=False)
    assert CountingExplainer.calls == 0 and not (tmp_path / "results.csv").exists()


def test_the_cells_of_python_data_are_keyed_by_the_true_attributions_they_read():
    from pellucid.benchmark.runner import data_key, fingerprint
    x, y = torch.rand(4, 3), torch.tensor([0, 1, 0, 1])
    plain = SimpleNamespace(x_test=x, y_test=y)
    truth = SimpleNamespace(x_test=x, y_test=y, true_attributions_test=torch.rand(4, 3))
    other = SimpleNamespace(x_test=x, y_test=y, true_attributions_test=torch.rand(4, 3))
    keys = {fingerprint(data_key(d)) for d in (plain, truth, other)}
    assert len(keys) == 3
    assert data_key(plain) == [x, y, None]  # data without true attributions keep their keys
