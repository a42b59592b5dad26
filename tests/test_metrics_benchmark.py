"""The new metric families in the benchmark runner: true attributions reach the agreement
metrics through ``masks=``, and the robustness metrics re-explain with the cell's method."""
import numpy as np
import torch
from sklearn.linear_model import LogisticRegression
from torch import nn

from pellucid.benchmark import BenchmarkConfig, DatasetSpec, MethodSpec, MetricSpec, run_benchmark
from pellucid.datasets import load_suppressor
from pellucid.explain import Saliency
from pellucid.metrics import SuppressorMass


def suppressor_model(data):
    """Two logits, -/+ half the logistic regression's ``w.x + b``."""
    fit = LogisticRegression(C=100.0).fit(data.x_train.numpy(), data.y_train.numpy())
    model = nn.Sequential(nn.Linear(data.x_train.shape[1], 2))
    with torch.no_grad():
        model[0].weight[:] = torch.tensor(np.stack([-fit.coef_[0], fit.coef_[0]]) / 2)
        model[0].bias[:] = torch.tensor([-fit.intercept_[0], fit.intercept_[0]]) / 2
    return model.eval()


def test_every_family_runs_in_the_benchmark(tmp_path):
    data = load_suppressor(n_train=400, n_test=40, n_irrelevant=2, seed=0)
    model = suppressor_model(data)
    metrics = [MetricSpec("SuppressorMass", {"features": [1]}), MetricSpec("RankCorrelation"),
               MetricSpec("FeatureAgreement", {"k": 1}), MetricSpec("Sparseness"),
               MetricSpec("Infidelity", {"nb_samples": 8}), MetricSpec("AverageDrop"),
               MetricSpec("Monotonicity", {"nb_samples": 2}),
               MetricSpec("SensitivityMax", {"nb_samples": 3}),
               MetricSpec("LocalLipschitz", {"nb_samples": 3}), MetricSpec("RandomLogit")]
    config = BenchmarkConfig(datasets=[DatasetSpec("suppressor", model=model, data=data)],
                             methods=[MethodSpec("Saliency"), MethodSpec("GradientInput")],
                             metrics=metrics, n_samples=10, seed=0, out=tmp_path)
    table = run_benchmark(config, progress=False).set_index(["method", "metric"])
    assert len(table) == 2 * len(metrics) and table["n"].min() > 0
    # the truth reached the metric: the same score as a direct call on the same inputs
    samples = torch.load(next(tmp_path.rglob("samples*.pt")), weights_only=False)
    direct = SuppressorMass(features=[1])(
        samples["inputs"], Saliency(model, progress=False).explain(samples["inputs"],
                                                                    samples["targets"]),
        masks=samples["masks"]).mean
    assert table.loc[("Saliency", "SuppressorMass"), "mean"] == direct > 0.4
    # the cell's method was re-explained: Saliency of a linear model does not move
    assert table.loc[("Saliency", "SensitivityMax"), "mean"] == 0.0
    assert table.loc[("GradientInput", "SensitivityMax"), "mean"] > 0.0
