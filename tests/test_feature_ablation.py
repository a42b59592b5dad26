"""FeatureAblation against the analytic answer of additive models (tabular and images, single
columns and groups), Captum's FeatureAblation with the same mask, across model kinds, and
several targets from the passes of one."""
import numpy as np
import torch
from captum.attr import FeatureAblation as CaptumFeatureAblation
from sklearn.linear_model import LinearRegression

from conftest import small_cnn
from pellucid import features
from pellucid.explain import FeatureAblation


def additive(weights):
    """f(x) = sum_i w_i x_i over every element of each input, as a numpy callable."""
    w = np.asarray(weights, dtype=np.float64).reshape(-1)
    return lambda a: (a.reshape(len(a), -1) @ w)[:, None]


def test_additive_tabular_model_gives_w_times_x_minus_b_per_column_and_per_group(tabular):
    weights = torch.linspace(-2, 3, 6)
    baseline = torch.linspace(1, -1, 6)
    explainer = FeatureAblation(additive(weights), baseline=baseline, progress=False)
    torch.testing.assert_close(explainer(tabular, 0), weights * (tabular - baseline),
                               rtol=0, atol=1e-5)
    mask = features.column_groups([[0, 3], [1, 2, 5]], 6)
    grouped = explainer.set_params(feature_mask=mask).explain_groups(tabular, 0)
    contributions = weights * (tabular - baseline)
    expected = torch.stack([contributions[:, [0, 3]].sum(1), contributions[:, [1, 2, 5]].sum(1),
                            contributions[:, 4]], 1)
    torch.testing.assert_close(grouped.values, expected, rtol=0, atol=1e-5)
    torch.testing.assert_close(grouped.heatmaps, expected[:, mask], rtol=0, atol=1e-5)


def test_additive_image_model_gives_the_sum_over_each_group(images):
    weights = torch.randn(3, 16, 16, generator=torch.Generator().manual_seed(3))
    mask = features.grid((16, 16), grid_size=(2, 3))
    result = FeatureAblation(additive(weights), feature_mask=mask, baseline=0.5,
                             progress=False).explain_groups(images, 0)
    contributions = (weights * (images - 0.5)).sum(1)              # (N, H, W)
    expected = torch.stack([contributions[:, mask == g].sum(1) for g in range(6)], 1)
    torch.testing.assert_close(result.values, expected, rtol=0, atol=1e-5)
    torch.testing.assert_close(result.prediction, torch.from_numpy(
        additive(weights)(images.numpy().astype(np.float64))[:, 0]).float(), rtol=0, atol=1e-5)


def test_agrees_with_captum_on_superpixels_for_several_targets(images):
    model = small_cnn()
    masks = features.slic(images, n_segments=8)
    targets = np.array([[0, 3]] * len(images))
    ours = FeatureAblation(model, feature_mask=masks, baseline=0.2, progress=False)(
        images, targets)
    for j in range(targets.shape[1]):
        theirs = CaptumFeatureAblation(model).attribute(
            images, baselines=0.2, target=int(targets[0, j]),
            feature_mask=masks[:, None].expand(-1, 3, -1, -1))
        # Captum gives each element its group's value: every channel of a pixel the same
        torch.testing.assert_close(ours[:, j], theirs[:, 0], rtol=1e-5, atol=1e-5)


def test_several_targets_cost_the_passes_of_one(images):
    model = small_cnn()
    sizes = []
    model.register_forward_pre_hook(lambda module, args: sizes.append(len(args[0])))
    mask = features.grid((16, 16), grid_size=3)
    FeatureAblation(model, feature_mask=mask, batch_size=16, progress=False)(
        images, np.array([[0, 1, 2, 3, 4]] * 4))
    # one sample to bind the targets, then N * (M + 1) coalitions in passes of 16
    assert sizes[0] == 1 and sum(sizes[1:]) == 4 * 10 and max(sizes) == 16


def test_scikit_learn_models_and_numpy_callables(tabular):
    x = np.random.default_rng(0).normal(size=(50, 6))
    regression = LinearRegression().fit(x, x @ np.arange(6.0) + 1)
    heatmaps = FeatureAblation(regression, progress=False)(tabular, 0)
    torch.testing.assert_close(heatmaps, torch.arange(6.0) * tabular, rtol=0, atol=1e-4)
