"""RISE: analytic expectations on a linear model, the paper's formula written out independently,
mask construction against scipy, determinism, memory bounds and input checks."""
import math

import numpy as np
import pytest
import torch
from scipy import ndimage
from scipy.stats import spearmanr
from torch import nn

from pellucid.explain.perturbation.rise import RiseMaskDesign
from pellucid.explain.perturbation.rise import Rise

from conftest import Recorder, linear_model, small_cnn


@pytest.mark.parametrize("n_outputs", [1, 2])
def test_linear_model_ranks_features_like_w_times_x(n_outputs):
    """With baseline 0 the expected saliency is affine in w_j x_j with a positive slope
    (see the next test), so RISE must rank features like w * x. Two outputs: the explained one
    is w.x, the other is ignored; raw scores (``probabilities=False``)."""
    rng = np.random.default_rng(0)
    weights, x = rng.normal(size=8), rng.normal(size=(3, 8))
    model = linear_model(weights)
    if n_outputs == 2:
        model = nn.Linear(8, 2).eval()
        with torch.no_grad():
            model.weight[1] = torch.as_tensor(weights, dtype=torch.float32)
            model.bias.zero_()
    explainer = Rise(model, nb_samples=4000, batch_size=4000, probabilities=False,
                     progress=False)
    saliency = explainer(torch.tensor(x, dtype=torch.float32), targets=n_outputs - 1).numpy()
    for row, inputs in zip(saliency, x):
        assert spearmanr(row, weights * inputs).statistic > 0.95


def test_expected_saliency_of_a_linear_model():
    """f(z) = w.z + b, baseline 0, masks M_k ~ Bernoulli(p) independent:

        saliency_j = sum_i f(x * M_i) M_ij / (N p),  so  E[saliency_j] = E[f(x * M) M_j] / p
                   = E[f(x * M) | M_j = 1]            (since P(M_j = 1) = p)
                   = b + w_j x_j + p sum_{k != j} w_k x_k
                   = b + p w.x + (1 - p) w_j x_j.

    Checked over independent seeds: the mean is within 4 standard errors of this value."""
    rng = np.random.default_rng(1)
    weights, x, bias, p = rng.normal(size=6), rng.normal(size=(2, 6)), 0.7, 0.3
    expected = bias + p * (x @ weights)[:, None] + (1 - p) * weights * x
    runs = np.stack([
        Rise(linear_model(weights, bias), nb_samples=2000, preservation_probability=p,
             batch_size=2000, seed=seed, probabilities=False, progress=False)(
            torch.tensor(x, dtype=torch.float32), targets=0).numpy()
        for seed in range(10)])
    standard_error = runs.std(axis=0, ddof=1) / math.sqrt(len(runs))
    assert np.all(np.abs(runs.mean(axis=0) - expected) < 4 * standard_error + 1e-6)
    assert np.abs(runs.mean(axis=0) - expected).max() < 0.1


def test_matches_the_papers_formula_written_out():
    """Inputs of ones and baseline 0 make every perturbed input equal to its mask, so the
    masks the model saw can be read back and the saliency recomputed independently:
    sum_i softmax(f(M_i))_c M_i / (N p)."""
    weights = np.random.default_rng(2).normal(size=(3, 2 * 8 * 10))

    def logits(array):
        return array.reshape(len(array), -1) @ weights.T

    recorder = Recorder(logits)
    x = torch.ones(1, 2, 8, 10)
    explainer = Rise(recorder, nb_samples=300, grid_size=3, preservation_probability=0.4,
                     batch_size=64, progress=False)
    saliency = explainer(x, targets=2)[0].numpy()
    inputs = np.concatenate(recorder.batches)[-300:]  # the masked inputs come last
    masks = inputs[:, 0]
    np.testing.assert_array_equal(inputs[:, 1], masks)  # one mask for all channels
    scores = np.exp(logits(inputs))
    scores = scores[:, 2] / scores.sum(1)
    reference = (scores[:, None, None] * masks).sum(0) / (300 * 0.4)
    np.testing.assert_allclose(saliency, reference, rtol=1e-4, atol=1e-6)


def test_raw_scores_when_probabilities_is_false():
    weights = np.random.default_rng(3).normal(size=(2, 12))
    recorder = Recorder(lambda a: a.reshape(len(a), -1) @ weights.T)
    saliency = Rise(recorder, nb_samples=50, probabilities=False, batch_size=50,
                    progress=False)(torch.ones(1, 12), targets=1)[0].numpy()
    masks = recorder.batches[-1]
    reference = ((masks @ weights.T)[:, 1:2] * masks).sum(0) / (50 * 0.5)
    np.testing.assert_allclose(saliency, reference, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("grid_size, size", [(3, (10, 10)), (7, (16, 23)), (4, (13, 6))])
def test_masks_are_the_reference_upsampling_cropped_at_each_masks_own_offset(grid_size, size):
    """RISE reference code: skimage resize(order=1, mode='reflect') of the grid to
    (s + 1) * cell, which is scipy.ndimage.zoom(order=1, mode='mirror', grid_mode=True),
    then a crop at a random offset per mask."""
    design = RiseMaskDesign.draw(40, grid_size, 0.5, size, torch.Generator().manual_seed(0))
    cells = [math.ceil(side / grid_size) for side in size]
    up = [(grid_size + 1) * cell for cell in cells]
    masks = design.masks(slice(0, 40)).numpy()
    for i in range(40):
        grid = design.grids[i].double().numpy()
        zoomed = ndimage.zoom(grid, (up[0] / grid_size, up[1] / grid_size), order=1,
                              mode="mirror", grid_mode=True)
        r, c = int(design.row_offsets[i]), int(design.col_offsets[i])
        np.testing.assert_allclose(masks[i], zoomed[r:r + size[0], c:c + size[1]], atol=1e-5)
    assert design.row_offsets.max() < cells[0] and design.col_offsets.max() < cells[1]
    # each mask has its own shift (Xplique shifted the whole batch once)
    assert len(set(zip(design.row_offsets.tolist(), design.col_offsets.tolist()))) > 5


def test_non_square_images_find_the_region_the_model_reads():
    height, width = 12, 20

    def region_score(array):  # depends only on the top-right corner
        return array[:, :, :4, 14:].mean(axis=(1, 2, 3))[:, None]

    x = torch.rand(2, 3, height, width, generator=torch.Generator().manual_seed(0)) + 0.5
    saliency = Rise(region_score, nb_samples=1500, grid_size=5, batch_size=256,
                    probabilities=False, progress=False)(x, targets=0)
    assert saliency.shape == (2, height, width)
    inside = saliency[:, :4, 14:].mean((1, 2))
    far = saliency[:, 8:, :8].mean((1, 2))
    assert torch.all(inside > far + 0.1 * inside.abs())


def test_same_map_whatever_the_batch_size_and_seeded():
    model, x = small_cnn(), torch.rand(3, 3, 9, 14, generator=torch.Generator().manual_seed(4))
    maps = {b: Rise(model, nb_samples=90, grid_size=4, batch_size=b, seed=5,
                    progress=False)(x) for b in (2, 7, 64)}
    torch.testing.assert_close(maps[7], maps[64], rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(maps[2], maps[64], rtol=1e-5, atol=1e-7)  # fewer than N inputs
    again = Rise(model, nb_samples=90, grid_size=4, batch_size=64, seed=5, progress=False)(x)
    torch.testing.assert_close(again, maps[64], rtol=0, atol=0)
    other = Rise(model, nb_samples=90, grid_size=4, batch_size=64, seed=6, progress=False)(x)
    assert (other - maps[64]).abs().max() > 1e-4


def test_memory_is_bounded_by_batch_size():
    recorder = Recorder(lambda a: a.reshape(len(a), -1)[:, :2])
    Rise(recorder, nb_samples=1000, grid_size=3, batch_size=33, progress=False)(
        torch.rand(3, 1, 6, 6), targets=0)
    sizes = [len(b) for b in recorder.batches]
    assert max(sizes) <= 33
    assert sum(sizes) >= 3 * 1000  # every (mask, input) pair, batched


def test_baselines_blur_and_background_mean():
    x = torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(7))
    assert Rise(small_cnn(), nb_samples=20, baseline="blur", progress=False)(x).shape == (2, 8, 8)
    background = torch.randn(50, 4, generator=torch.Generator().manual_seed(8)).mean(0)
    recorder = Recorder(lambda a: a.sum(1, keepdims=True))
    Rise(recorder, nb_samples=10, baseline=background, batch_size=10, probabilities=False,
         progress=False)(torch.zeros(1, 4) + 100, targets=0)
    masked = recorder.batches[-1]
    kept = masked == 100
    replaced = np.broadcast_to(background.numpy(), masked.shape)[~kept]
    assert 0 < kept.mean() < 1
    np.testing.assert_allclose(masked[~kept], replaced)


def test_works_with_sklearn_and_numpy_callables():
    from sklearn.linear_model import LinearRegression, LogisticRegression
    rng = np.random.default_rng(8)
    data = rng.normal(size=(200, 5))
    weights = np.array([3.0, -2.0, 0.5, 0.0, 1.0])
    regression = LinearRegression().fit(data, data @ weights)
    x = torch.tensor(data[:2], dtype=torch.float32)
    saliency = Rise(regression, nb_samples=3000, batch_size=1000, probabilities=False,
                    progress=False)(x).numpy()
    for row, inputs in zip(saliency, data[:2]):
        assert spearmanr(row, weights * inputs).statistic > 0.85
    classifier = LogisticRegression().fit(data, data @ weights > 0)
    twin = nn.Linear(5, 2).eval()  # logits (0, w.x + b): their softmax is predict_proba
    with torch.no_grad():
        twin.weight.copy_(torch.tensor(np.stack([np.zeros(5), classifier.coef_[0]])))
        twin.bias.copy_(torch.tensor([0.0, classifier.intercept_[0]]))
    same = dict(nb_samples=100, seed=4, progress=False)
    torch.testing.assert_close(Rise(classifier, **same)(x), Rise(twin, **same)(x),
                               rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(Rise(lambda a: a @ weights, probabilities=False, **same)(x, 0),
                               Rise(linear_model(weights), probabilities=False, **same)(x, 0),
                               rtol=1e-4, atol=1e-5)
    # one policy for probabilities: a single output is refused, before any masked pass
    recorder = Recorder(lambda a: a @ weights)
    with pytest.raises(ValueError, match=r"output has shape \(1, 1\).*probabilities=False"):
        Rise(recorder, nb_samples=100, progress=False)(x, 0)
    assert [len(batch) for batch in recorder.batches] == [1]


@pytest.mark.parametrize("kwargs, message", [
    ({"nb_samples": 0}, "nb_samples"),
    ({"grid_size": 0}, "grid_size"),
    ({"preservation_probability": 1.0}, "preservation_probability"),
    ({"baseline": "zeros"}, "baseline"),
])
def test_bad_hyperparameters_raise_in_init(kwargs, message):
    with pytest.raises(ValueError, match=message):
        Rise(small_cnn(), **kwargs)


def test_blur_on_tabular_inputs_and_wrong_baseline_shape_raise():
    with pytest.raises(ValueError, match="blur"):
        Rise(lambda a: a, baseline="blur", progress=False)(torch.rand(2, 4), 0)
    with pytest.raises(ValueError, match="broadcast"):
        Rise(lambda a: a, baseline=torch.zeros(3), progress=False)(torch.rand(2, 4), 0)


def test_leaves_model_and_inputs_untouched():
    model = small_cnn()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    x = torch.rand(2, 3, 8, 8)
    x_before = x.clone()
    Rise(model, nb_samples=20, progress=False)(x)
    assert not model.training
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())
    assert torch.equal(x, x_before)
