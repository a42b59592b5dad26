"""ShapExplainer: shap's explainers behind pellucid's interface, checked against the analytic
Shapley values of additive models and against exact Shapley values enumerated here."""
import itertools
import math

import numpy as np
import pytest
import torch
from torch import nn

from conftest import small_cnn
from pellucid.explain import ShapExplainer


def linear_model(weights):
    model = nn.Linear(len(weights[0]), len(weights), bias=True)
    with torch.no_grad():
        model.weight.copy_(torch.tensor(weights))
        model.bias.fill_(0.3)
    return model.eval()


WEIGHTS = [[1.0, 2.0, -3.0, 0.5, 0.0], [-1.0, 0.5, 2.0, 1.5, -2.0]]
X = torch.tensor([[1.0, 2.0, 3.0, 4.0, 5.0], [0.5, -1.0, 0.0, 2.0, 1.0]])
BASELINE = torch.tensor([0.5, 0.0, 1.0, 0.0, -1.0])


@pytest.mark.parametrize("algorithm", ["permutation", "exact", "kernel"])
def test_additive_model_gets_weight_times_difference(algorithm):
    """For f(x) = w.x + b the Shapley value of feature i is w_i (x_i - b_i), both targets."""
    explainer = ShapExplainer(linear_model(WEIGHTS), algorithm=algorithm, nb_samples=200,
                              baseline=BASELINE, progress=False)
    values = explainer(X, targets=np.array([[0, 1], [0, 1]]))
    expected = torch.tensor(WEIGHTS)[None] * (X - BASELINE)[:, None]
    torch.testing.assert_close(values, expected, atol=1e-5, rtol=1e-5)


class Interactions(nn.Module):
    """f(x) = x0 x1 + x2^2 x3 - x1 x2 x3 + x4: Shapley values differ from any linear rule."""

    def forward(self, x):
        score = x[:, 0] * x[:, 1] + x[:, 2] ** 2 * x[:, 3] - x[:, 1] * x[:, 2] * x[:, 3] + x[:, 4]
        return torch.stack([score, -score], 1)


def exact_shapley(f, x, baseline):
    """phi_i = sum_S |S|! (M-|S|-1)! / M! (f(S + i) - f(S)), features outside S at baseline."""
    m = len(x)
    phi = np.zeros(m)
    for i in range(m):
        others = [j for j in range(m) if j != i]
        for size in range(m):
            for subset in itertools.combinations(others, size):
                weight = math.factorial(size) * math.factorial(m - size - 1) / math.factorial(m)
                present = baseline.clone()
                present[list(subset)] = x[list(subset)]
                with_i = present.clone()
                with_i[i] = x[i]
                phi[i] += weight * (f(with_i) - f(present))
    return phi


@pytest.mark.parametrize("algorithm", ["exact", "kernel"])
def test_interactions_match_enumerated_shapley_values(algorithm):
    model = Interactions()
    values = ShapExplainer(model, algorithm=algorithm, nb_samples=100, baseline=BASELINE,
                           progress=False)(X, targets=0)
    for n in range(len(X)):
        expected = exact_shapley(lambda z: float(model(z[None])[0, 0]), X[n], BASELINE)
        np.testing.assert_allclose(values[n].numpy(), expected, atol=1e-5)


def test_background_values_sum_to_output_minus_mean_background_output():
    model = Interactions()
    background = torch.randn(6, 5, generator=torch.Generator().manual_seed(0))
    values = ShapExplainer(model, algorithm="exact", background=background,
                           progress=False)(X, targets=0)
    gaps = model(X)[:, 0] - model(background)[:, 0].mean()
    torch.testing.assert_close(values.sum(1), gaps.detach(), atol=1e-5, rtol=1e-5)


def test_tabular_partition_sums_to_the_output_gap():
    model = Interactions()
    background = torch.randn(20, 5, generator=torch.Generator().manual_seed(1))
    values = ShapExplainer(model, algorithm="partition", background=background, nb_samples=200,
                           progress=False)(X, targets=0)
    gaps = model(X)[:, 0] - model(background)[:, 0].mean()
    torch.testing.assert_close(values.sum(1), gaps.detach(), atol=1e-4, rtol=1e-4)


def test_images_partition_sums_to_the_output_gap_per_target():
    """Owen values are efficient: the map of each target sums to f(x) - f(baseline)."""
    model = small_cnn()
    x = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(2))
    explainer = ShapExplainer(model, nb_samples=120, baseline=0.2, batch_size=16,
                              progress=False)
    maps = explainer(x, targets=np.array([[1, 3], [0, 2]]))
    assert maps.shape == (2, 2, 16, 16)
    with torch.no_grad():
        gaps = model(x) - model(torch.full_like(x, 0.2))
    expected = torch.stack([gaps[0, [1, 3]], gaps[1, [0, 2]]])
    torch.testing.assert_close(maps.sum((2, 3)), expected, atol=1e-4, rtol=1e-4)


def test_same_seed_same_result_and_the_global_numpy_generator_is_left_alone():
    model = Interactions()
    explainer = ShapExplainer(model, algorithm="permutation", nb_samples=12, seed=3,
                              progress=False)
    np.random.seed(123)
    before = np.random.get_state()[1].copy()
    first = explainer(X, targets=0)
    assert np.array_equal(np.random.get_state()[1], before)
    ShapExplainer(model, algorithm="permutation", nb_samples=12, seed=None,
                  progress=False)(X, targets=0)  # shap reseeds from entropy when unseeded
    torch.testing.assert_close(explainer(X, targets=0), first, atol=0, rtol=0)
    other = ShapExplainer(model, algorithm="permutation", nb_samples=12, seed=7,
                          progress=False)(X, targets=0)
    assert not torch.equal(other, first)


def test_scikit_learn_models_work():
    from sklearn.linear_model import LinearRegression
    rng = np.random.default_rng(0)
    data = rng.normal(size=(50, 5))
    estimator = LinearRegression().fit(data, data @ np.array(WEIGHTS[0]) + 1.0)
    values = ShapExplainer(estimator, algorithm="exact", baseline=BASELINE,
                           progress=False)(X, targets=0)
    expected = torch.from_numpy(estimator.coef_).float() * (X - BASELINE)
    torch.testing.assert_close(values, expected, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("kwargs, x, match", [
    ({"algorithm": "exact"}, torch.rand(1, 3, 16, 16), "images with algorithm='partition'"),
    ({"algorithm": "partition"}, X, "pass background"),
    ({"algorithm": "permutation", "nb_samples": 10}, X, r"nb_samples >= 2 \* features \+ 1"),
    ({"background": torch.zeros(3, 4)}, X, r"background must be \(B, 5\)"),
])
def test_bad_settings_raise_before_any_pass(kwargs, x, match):
    model = small_cnn() if x.ndim == 4 else Interactions()
    calls = []
    model.register_forward_pre_hook(lambda *args: calls.append(1))
    with pytest.raises(ValueError, match=match):
        ShapExplainer(model, progress=False, **kwargs)(x)
    assert not calls


def test_unknown_algorithm_is_refused():
    with pytest.raises(ValueError, match="algorithm must be one of"):
        ShapExplainer(Interactions(), algorithm="tree")
