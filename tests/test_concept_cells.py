"""Concept metrics as benchmark cells (issue 18): concept methods ("Craft") x concept metrics
("CDeletion", ...), checked against the direct computation written out (per-class CRAFT, then
pellucid's Deletion / Insertion / MuFidelity on ``Craft.concept_space``), against the
analytic C-Deletion of a model linear in its concept coefficients, and for the resume.

On the planted model (``test_concepts_importance``: g = identity, h = Linear o mean_p) with
masks ``m`` the target's raw output is ``f(m) = b + sum_k m_k c_k``, ``c_k = mean_p u_k(p)
(w_k . v)``, ``b = h(offset)``; removing the concepts in an order gives the curve ``b + sum of
the c_k not yet removed``, whose normalized area is smallest for the order of decreasing
``c_k`` (the rearrangement inequality) and largest for the reverse."""
from __future__ import annotations

import copy
import itertools
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from pellucid.benchmark import BenchmarkConfig, DatasetSpec, MethodSpec, MetricSpec
from pellucid.benchmark import run_benchmark, write_report
from pellucid.benchmark.concept_cells import CDeletion, CraftConcepts
from pellucid.explain import Craft
from pellucid.metrics import Deletion, Insertion, MuFidelity
from test_concepts_importance import linear_head, planted_feature_maps

COMMON = {"target_layer": 1, "n_concepts": 3, "crops_per_image": 4, "nb_design": 8}
MU = {"subset_fraction": 0.5, "nb_samples": 16}


def small_cnn() -> nn.Module:
    """Random weights; the bias of class 1 puts half of the test inputs in each class."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 6, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(4),
                          nn.Flatten(), nn.Linear(96, 2)).eval()
    with torch.no_grad():
        logits = model(small_data().x_test)
        model[4].bias[1] -= (logits[:, 1] - logits[:, 0]).median() - 1e-4
    return model


def small_data():
    g = torch.Generator().manual_seed(0)
    return SimpleNamespace(x_test=torch.rand(12, 1, 8, 8, generator=g),
                           y_test=torch.zeros(12, dtype=torch.long))


def concept_config(out, model, methods=None, metrics=None) -> BenchmarkConfig:
    methods = methods or [MethodSpec("Craft", {**COMMON, "factorization": "nmf"},
                                     label="craft-nmf"),
                          MethodSpec("Craft", {**COMMON, "factorization": "pca"},
                                     label="craft-pca")]
    metrics = metrics or ["CDeletion", "CInsertion", MetricSpec("CMuFidelity", MU),
                          "ConceptReconstruction", "BottleneckFidelity"]
    return BenchmarkConfig(datasets=[DatasetSpec("toy", model=model, data=small_data())],
                           methods=methods, metrics=metrics, n_samples=8, seed=0, out=out)


def cell_file(out, method, metric):
    (path,) = (out / "cache" / "toy").glob(f"{method}__{metric}-*.npz")
    with np.load(path) as saved:
        return saved["scores"]


def direct_scores(model, x, targets, factorization):
    """Per-input scores of every concept metric, written out: a Craft per predicted class,
    fitted on that class's inputs; pellucid's metrics on its concept space."""
    expected = {name: np.full(len(x), np.nan) for name in
                ("CDeletion", "CInsertion", "CMuFidelity", "ConceptReconstruction",
                 "BottleneckFidelity")}
    importances = torch.zeros(len(x), COMMON["n_concepts"])
    g = model[:2]
    for c in targets.unique().tolist():
        rows = torch.nonzero(targets == c)[:, 0]
        xc = x[rows]
        craft = Craft(model, factorization=factorization, seed=0, progress=False, **COMMON)
        craft.fit(xc, targets=c)
        craft.estimate_importance(xc)
        phi = craft.sample_importances_
        importances[rows] = phi
        space, masks, kwargs = craft.concept_space(xc)
        for name, metric in (("CDeletion", Deletion(space, baseline=0.0, progress=False)),
                             ("CInsertion", Insertion(space, baseline=0.0, progress=False)),
                             ("CMuFidelity", MuFidelity(space, seed=0, progress=False, **MU))):
            expected[name][rows.numpy()] = metric(masks, phi, c, forward_kwargs=kwargs).scores
        with torch.no_grad():
            a = g(xc)                                                    # (n, C, h, w)
            u = craft.spatial_coefficients(xc)                           # (n, R, h, w)
            a_rows = a.permute(0, 2, 3, 1).reshape(len(xc), -1, a.shape[1]).double()
            u_rows = u.permute(0, 2, 3, 1).reshape(-1, u.shape[1]).numpy()
            rebuilt = torch.as_tensor(craft.factorization_.inverse_transform(u_rows)).double()
            error = (a_rows - rebuilt.view_as(a_rows)).flatten(1).norm(dim=1)
            expected["ConceptReconstruction"][rows.numpy()] = (
                error / a_rows.flatten(1).norm(dim=1)).numpy()
            through = craft.concept_head()(u).argmax(1)
            expected["BottleneckFidelity"][rows.numpy()] = (
                through == model(xc).argmax(1)).double().numpy()
    return expected, importances


def test_concept_cells_equal_the_direct_computation(tmp_path):
    model = small_cnn()
    results = run_benchmark(concept_config(tmp_path, model), progress=False)
    assert list(zip(results.method, results.metric)) == [
        (m, k) for m in ("craft-nmf", "craft-pca") for k in (
            "CDeletion", "CInsertion", "CMuFidelity", "ConceptReconstruction",
            "BottleneckFidelity")]
    idx = np.sort(np.random.default_rng(0).choice(12, size=8, replace=False))
    x = small_data().x_test[idx]
    targets = model(x).argmax(1)
    assert len(targets.unique()) == 2  # both classes: two concept sets per method
    for factorization in ("nmf", "pca"):
        label = f"craft-{factorization}"
        expected, importances = direct_scores(model, x, targets, factorization)
        (heatmaps,) = (tmp_path / "cache" / "toy").glob(f"{label}-*.pt")
        torch.testing.assert_close(torch.load(heatmaps)["heatmaps"], importances)
        for metric, scores in expected.items():
            np.testing.assert_allclose(cell_file(tmp_path, label, metric), scores,
                                       rtol=1e-5, atol=1e-6, err_msg=f"{label} {metric}")
            row = results[(results.method == label) & (results.metric == metric)].iloc[0]
            assert row["mean"] == pytest.approx(scores.mean(), rel=1e-5, abs=1e-7)
            assert row["n"] == 8
    higher = dict(zip(results.metric, results.higher_is_better))
    assert higher == {"CDeletion": False, "CInsertion": True, "CMuFidelity": True,
                      "ConceptReconstruction": False, "BottleneckFidelity": True}
    pairwise = results.attrs["pairwise"]  # nmf vs pca on the same inputs, per metric
    assert set(pairwise["metric"]) <= set(higher) and len(pairwise) >= 4


class ReversedCraft(CraftConcepts):
    """The concepts ranked in the reverse order of their importances."""

    def explain(self, inputs, targets):
        return -super().explain(inputs, targets)


def normalized_area(curve):
    return (curve.sum() - curve[0] / 2 - curve[-1] / 2) / (len(curve) - 1)


def test_c_deletion_through_the_runner_ranks_concepts_by_their_coefficients(tmp_path):
    a, _, w0 = planted_feature_maps()
    head = linear_head(w0)
    with torch.no_grad():
        head[2].bias[0] = 50.0                 # every input predicted as class 0
    model = nn.Sequential(nn.Identity(), head).eval()
    data = SimpleNamespace(x_test=a, y_test=torch.zeros(len(a), dtype=torch.long))
    params = {"target_layer": 0, "n_concepts": 4, "crops_per_image": 4,
              "importance": "occlusion", "batch_size": 4096}
    config = BenchmarkConfig(
        datasets=[DatasetSpec("toy", model=model, data=data)],
        methods=[MethodSpec("Craft", params, label="coefficients"),
                 MethodSpec(ReversedCraft, params, label="reversed")],
        metrics=[MetricSpec("CDeletion", {"probabilities": False})],
        n_samples=8, seed=0, out=tmp_path)
    results = run_benchmark(config, progress=False)

    idx = np.sort(np.random.default_rng(0).choice(len(a), size=8, replace=False))
    x = a[idx]
    assert (model(x).argmax(1) == 0).all()
    craft = Craft(model, seed=0, progress=False, **params).fit(x, targets=0)
    v = head[2].weight[0].detach().double()
    c = craft.spatial_coefficients(x).double().mean((2, 3)) * (craft.concepts_.double() @ v)
    with torch.no_grad():
        b = head(torch.as_tensor(craft.factorization_.inverse_transform(
            np.zeros((1, 4)))).float().view(1, -1, 1, 1).expand(1, -1, 4, 4))[0, 0].double()
    areas = {order: torch.stack([normalized_area(torch.stack(
        [b + c[i, list(order[k:])].sum() for k in range(5)])) for i in range(len(x))])
        for order in itertools.permutations(range(4))}
    table = torch.stack(list(areas.values()))                          # (24 orders, N)
    found = cell_file(tmp_path, "coefficients", "CDeletion")
    np.testing.assert_allclose(found, table.min(0).values.numpy(), rtol=1e-5)
    by_coefficients = [areas[tuple(np.argsort(-c[i].numpy(), kind="stable"))][i]
                       for i in range(len(x))]
    np.testing.assert_allclose(found, torch.stack(by_coefficients).numpy(), rtol=1e-5)
    np.testing.assert_allclose(cell_file(tmp_path, "reversed", "CDeletion"),
                               table.max(0).values.numpy(), rtol=1e-5)
    (pair,) = results.attrs["pairwise"].itertuples()
    assert pair.better == "coefficients"


def test_a_second_run_reads_the_finished_concept_cells(tmp_path, monkeypatch):
    calls = {"n": 0, "interrupt_on": 3}
    fit_classes = CraftConcepts.fit_classes

    def counting(self, inputs, targets):
        calls["n"] += 1
        if calls["n"] == calls["interrupt_on"]:
            raise KeyboardInterrupt
        return fit_classes(self, inputs, targets)

    monkeypatch.setattr(CraftConcepts, "fit_classes", counting)
    config = concept_config(tmp_path, small_cnn(), methods=[MethodSpec("Craft", COMMON)],
                            metrics=["CDeletion", "BottleneckFidelity"])
    with pytest.raises(KeyboardInterrupt):  # explain (1), CDeletion (2), then stopped
        run_benchmark(config, progress=False)
    before = pd.read_csv(tmp_path / "results.csv")
    assert list(before.metric) == ["CDeletion"]

    calls.update(n=0, interrupt_on=None)
    results = run_benchmark(config, progress=False)
    assert calls["n"] == 1  # BottleneckFidelity only: the importances came from the cache
    pd.testing.assert_frame_equal(results.iloc[:1][before.columns], before, check_dtype=False)

    calls["n"] = 0
    again = run_benchmark(config, progress=False)
    assert calls["n"] == 0
    pd.testing.assert_frame_equal(again, results)


def test_concept_and_attribution_cells_pair_within_their_kind(tmp_path):
    config = concept_config(tmp_path, small_cnn(),
                            methods=[MethodSpec("Craft", COMMON), MethodSpec("Saliency")],
                            metrics=["BottleneckFidelity", "Deletion"])
    results = run_benchmark(config, progress=False)
    assert list(zip(results.method, results.metric)) == [("Craft", "BottleneckFidelity"),
                                                         ("Saliency", "Deletion")]
    page = write_report(config).read_text()  # the heatmap grid shows Saliency alone
    assert "BottleneckFidelity" in page and (tmp_path / "figures" / "toy-heatmaps.png").exists()


def test_bad_concept_configs_fail_before_any_work(tmp_path, monkeypatch):
    monkeypatch.setattr(CraftConcepts, "fit_classes", None)  # any fit would fail otherwise
    model = small_cnn()
    with pytest.raises(ValueError, match="'Craft' is in no cell: it needs a concept metric"):
        run_benchmark(concept_config(tmp_path, model, methods=[MethodSpec("Craft", COMMON)],
                                     metrics=["Deletion"]), progress=False)
    with pytest.raises(ValueError, match="'CDeletion' is in no cell: it needs a concept method"):
        run_benchmark(concept_config(tmp_path, model, methods=["Saliency"],
                                     metrics=["CDeletion", "Deletion"]), progress=False)
    with pytest.raises(ValueError, match="has no parameter"):
        run_benchmark(concept_config(tmp_path, model, methods=[MethodSpec("Craft", COMMON)],
                                     metrics=[MetricSpec("CDeletion", {"stpe": 1})]),
                      progress=False)
    assert not (tmp_path / "results.csv").exists()


def test_concept_metrics_refuse_heatmaps_that_are_not_concept_importances():
    model = small_cnn()
    metric = CDeletion(model, CraftConcepts, explainer_kwargs=COMMON, progress=False)
    x = small_data().x_test[:4]
    with pytest.raises(ValueError, match=r"\(N, n_concepts\) = \(4, 3\); got \(4, 8, 8\)"):
        metric(x, torch.rand(4, 8, 8), 0)
    with pytest.raises(TypeError, match="concept method"):
        CDeletion(model, Craft)
    with pytest.raises(ValueError, match="removes concepts, not pixels"):
        CDeletion(model, CraftConcepts, masking="layer")
    pristine = copy.deepcopy(model.state_dict())
    metric(x, torch.rand(4, 3), 0)
    for key, value in model.state_dict().items():
        torch.testing.assert_close(value, pristine[key])


def test_concept_cells_run_on_ray_as_locally(tmp_path):
    ray = pytest.importorskip("ray")
    config = concept_config(tmp_path / "local", small_cnn(),
                            methods=[MethodSpec("Craft", COMMON)], metrics=["CDeletion"])
    local = run_benchmark(config, progress=False)
    ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    try:
        on_ray = run_benchmark(config, out=tmp_path / "ray", executor="ray", progress=False)
    finally:
        ray.shutdown()
    times = ["explain_s_per_sample", "metric_s"]
    pd.testing.assert_frame_equal(on_ray.drop(columns=times), local.drop(columns=times))
