"""Lime against the weights of linear models, lime's own LimeBase fitted on the same samples
(coefficients and R^2), repeatability with a seed, and the R^2 of a surrogate that cannot fit."""
import numpy as np
import pytest
import torch
from lime.lime_base import LimeBase
from sklearn.linear_model import Lasso, Ridge
from sklearn.metrics import pairwise_distances

from conftest import Recorder, small_cnn
from pellucid import features
from pellucid.explain import Lime


def test_recovers_the_weights_of_a_linear_model():
    weights = np.linspace(-2, 3, 8)
    x = torch.randn(3, 8, generator=torch.Generator().manual_seed(0))
    model = lambda a: (a.astype(np.float64) @ weights)[:, None]  # noqa: E731
    result = Lime(model, nb_samples=300, progress=False).explain_groups(x, 0)
    # with baseline 0, f(h(z)) = sum_i (w_i x_i) z_i: the coefficients are w_i x_i
    for i in range(len(x)):
        expected = weights * x[i].numpy()
        assert np.corrcoef(result.values[i].numpy(), expected)[0, 1] > 0.99
    assert (result.r2 > 0.99).all()


def test_recovers_group_sums_on_images(images):
    weights = torch.randn(3, 16, 16, generator=torch.Generator().manual_seed(3))
    model = lambda a: (a.reshape(len(a), -1) @ weights.reshape(-1).numpy())[:, None]  # noqa
    mask = features.grid((16, 16), grid_size=3)
    values = Lime(model, nb_samples=200, feature_mask=mask, progress=False,
                  alpha=0.01).explain_groups(images, 0).values
    contributions = (weights * images).sum(1)
    expected = torch.stack([contributions[:, mask == g].sum(1) for g in range(9)], 1)
    for i in range(len(images)):
        assert np.corrcoef(values[i], expected[i])[0, 1] > 0.99


@pytest.mark.parametrize("distance, surrogate", [("cosine", "ridge"), ("hamming", "lasso")])
def test_equals_lime_s_own_fit_on_the_same_samples(distance, surrogate):
    """lime's LimeBase (its kernel, distances from scikit-learn) fitted on the coalitions the
    model saw, read back from the perturbed inputs (baseline 0, inputs without zeros)."""
    x = torch.rand(1, 6, generator=torch.Generator().manual_seed(1)) + 0.5
    model = Recorder(lambda a: np.stack([np.tanh(a @ np.arange(6.0) - 5), a[:, 0] * a[:, 1]],
                                        1))
    result = Lime(model, nb_samples=50, distance=distance, surrogate=surrogate, alpha=0.01,
                  kernel_width=0.5, progress=False).explain_groups(x, np.array([[0, 1]]))
    perturbed = np.concatenate(model.batches[1:])        # batch 0 binds the targets
    z = (perturbed != 0).astype(float)
    scores = model.function(perturbed)
    distances = pairwise_distances(z, np.ones((1, 6)), metric=distance).ravel()
    kernel = LimeBase(lambda d: np.sqrt(np.exp(-d ** 2 / 0.5 ** 2)))
    for target in (0, 1):
        regressor = Ridge(alpha=0.01) if surrogate == "ridge" else Lasso(alpha=0.01)
        _, coefficients, r2, _ = kernel.explain_instance_with_data(
            z, scores, distances, target, 6, feature_selection="none",
            model_regressor=regressor)
        theirs = np.array([c for _, c in sorted(coefficients)])
        np.testing.assert_allclose(result.values[0, target].numpy(), theirs, atol=1e-5)
        assert abs(result.r2[0, target].item() - r2) < 1e-5


def test_same_seed_same_result_and_a_poor_fit_has_a_low_r2(images):
    model = small_cnn()
    first = Lime(model, nb_samples=64, seed=3, progress=False).explain_groups(images, 1)
    again = Lime(model, nb_samples=64, seed=3, progress=False).explain_groups(images, 1)
    assert torch.equal(first.heatmaps, again.heatmaps) and torch.equal(first.r2, again.r2)
    other = Lime(model, nb_samples=64, seed=4, progress=False)(images, 1)
    assert not torch.equal(first.heatmaps, other)
    xor = lambda a: ((a[:, 0] > 0) ^ (a[:, 1] > 0)).astype(float)[:, None]  # noqa: E731
    # a wide kernel weighs the four coalitions alike: no linear function of (z_0, z_1) fits
    r2 = Lime(xor, nb_samples=200, kernel_width=100.0, alpha=1e-6, progress=False
              ).explain_groups(torch.ones(1, 2), 0).r2
    assert r2.item() < 0.1


def test_bad_hyperparameters_raise():
    for bad, message in [({"distance": "euclidean"}, "distance"),
                         ({"surrogate": "tree"}, "surrogate"),
                         ({"kernel_width": 0}, "kernel_width"), ({"alpha": -1}, "alpha"),
                         ({"nb_samples": 0}, "nb_samples")]:
        with pytest.raises(ValueError, match=message):
            Lime(small_cnn(), **bad)


@pytest.mark.parametrize("alpha", [1.0, 1e-3])
def test_chunked_weighted_ridge_equals_sklearn_ridge_and_r2_score(alpha):
    """The ridge Lime solves by chunked normal equations (memory) against scikit-learn's Ridge
    with sample weights and r2_score, on more samples than one chunk, several targets."""
    from sklearn.metrics import r2_score

    from pellucid.explain.groups.lime import weighted_ridge
    rng = np.random.default_rng(0)
    z = torch.from_numpy(rng.random((5000, 12)) < 0.5)
    targets = np.stack([z.numpy() @ rng.normal(size=12) + rng.normal(size=5000),
                        np.tanh(z.numpy() @ rng.normal(size=12))], 1)
    weights = rng.random(5000) + 0.1
    coefficients, r2 = weighted_ridge(z, targets, weights, alpha)
    reference = Ridge(alpha=alpha).fit(z.double().numpy(), targets, sample_weight=weights)
    np.testing.assert_allclose(coefficients, reference.coef_.T, rtol=0, atol=1e-6)
    expected = r2_score(targets, reference.predict(z.double().numpy()), sample_weight=weights,
                        multioutput="raw_values")
    np.testing.assert_allclose(r2, expected, rtol=0, atol=1e-6)
