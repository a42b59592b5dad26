"""Metrics and plots take a shap.Explanation as they take pellucid's heatmaps."""
import matplotlib.pyplot as plt
import numpy as np
import pytest
import shap
import torch
from matplotlib.figure import Figure
from matplotlib.text import Text

from conftest import small_cnn
from pellucid import plots
from pellucid.metrics import Deletion, RelevanceMass

NAMES = ["age", "income", "debt", "rate"]


def tabular_explanation(values, data=None, base_values=None):
    return shap.Explanation(values=np.asarray(values), data=data, base_values=base_values,
                            feature_names=NAMES)


def test_a_metric_reads_a_tabular_explanation_as_its_values():
    rng = np.random.default_rng(0)
    x, values = rng.normal(size=(5, 4)), rng.normal(size=(5, 4))
    masks = rng.random((5, 4)) < 0.5
    expected = RelevanceMass()(x, values, masks=masks).scores
    scores = RelevanceMass()(x, tabular_explanation(values, data=x), masks=masks).scores
    np.testing.assert_array_equal(scores, expected)


def test_a_metric_reads_shap_image_explanations_summed_over_channels_last():
    """shap explains images channels-last (N, H, W, C); pellucid sums channels."""
    model = small_cnn()
    x = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    values = np.random.default_rng(1).normal(size=(2, 16, 16, 3))
    explanation = shap.Explanation(values=values, data=x.permute(0, 2, 3, 1).numpy())
    metric = Deletion(model, step=64, progress=False)
    expected = metric(x, torch.from_numpy(values.sum(-1)), targets=1).scores
    np.testing.assert_allclose(metric(x, explanation, targets=1).scores, expected)


def test_a_real_shap_explanation_scores_like_its_values():
    model = lambda z: z @ np.array([1.0, -2.0, 0.5, 3.0])  # noqa: E731
    x = np.random.default_rng(2).normal(size=(6, 4))
    explanation = shap.explainers.Exact(model, shap.maskers.Independent(np.zeros((1, 4))))(x)
    masks = np.tile([True, False, False, True], (6, 1))
    np.testing.assert_array_equal(RelevanceMass()(x, explanation, masks=masks).scores,
                                  RelevanceMass()(x, explanation.values, masks=masks).scores)


def test_several_outputs_per_sample_must_be_selected_first():
    explanation = shap.Explanation(values=np.zeros((3, 4, 2)), data=np.zeros((3, 4)))
    with pytest.raises(ValueError, match=r"holds 2 outputs per sample .* explanation\[..., k\]"):
        RelevanceMass()(np.zeros((3, 4)), explanation, masks=np.ones((3, 4)))
    RelevanceMass()(np.zeros((3, 4)), explanation[..., 1], masks=np.ones((3, 4)))


def test_bars_and_waterfall_take_names_base_value_and_data_from_an_explanation():
    values = np.array([[0.5, -0.25, 1.0, 0.1], [0.2, 0.3, -0.4, 0.0]])
    explanation = tabular_explanation(values, data=np.ones((2, 4)),
                                      base_values=np.array([0.7, 0.7]))
    ax = plots.tabular_bars(explanation[0], top_k=2).axes[0]
    assert [t.get_text() for t in ax.get_yticklabels()] == ["debt", "age"]
    figure = plots.waterfall(explanation[0])
    labels = " ".join(t.get_text() for ax in figure.axes for t in ax.get_yticklabels())
    assert all(name in labels for name in NAMES)
    texts = " ".join(t.get_text() for t in figure.findobj(Text))
    assert "0.7" in texts  # E[f(X)] = base value, drawn by shap


def test_beeswarm_returns_a_figure_and_leaves_nothing_open():
    rng = np.random.default_rng(3)
    data = rng.normal(size=(40, 4))
    values = data * np.array([3.0, -1.0, 0.2, 0.0])
    before = plt.get_fignums()
    figure = plots.beeswarm(values, data, NAMES, title="global")
    assert isinstance(figure, Figure) and plt.get_fignums() == before
    labels = [t.get_text() for t in figure.axes[0].get_yticklabels()]
    assert labels[-1] == "age" and labels[-2] == "income"  # most important on top
    assert figure.axes[0].get_title() == "global"
    same = plots.beeswarm(tabular_explanation(values, data=data))
    assert [t.get_text() for t in same.axes[0].get_yticklabels()] == labels
    with pytest.raises(ValueError, match=r"attributions must be \(N, F\)"):
        plots.beeswarm(values[0])
    with pytest.raises(ValueError, match=r"feature_values must have shape \(40, 4\)"):
        plots.beeswarm(values, data[:3])
