"""KernelShap against the analytic answer of additive models, exact Shapley values enumerated
here (tabular and image groups), shap's ExactExplainer, efficiency (exact also when sampling)
and the coalition design (paired, kernel-weighted, enumerated when it fits)."""
import math

import numpy as np
import pytest
import shap
import torch

from conftest import small_cnn, small_mlp
from pellucid import features
from pellucid.explain import KernelShap
from pellucid.explain.groups.kernel_shap import shapley_kernel_design
from shapley_reference import exact_shapley


def test_additive_model_gives_w_times_x_minus_b_enumerated_or_sampled(tabular):
    weights = torch.linspace(-2, 3, 10)
    x = torch.randn(3, 10, generator=torch.Generator().manual_seed(0))
    baseline = torch.linspace(1, -1, 10)
    model = lambda a: (a.astype(np.float64) @ weights.double().numpy())[:, None]  # noqa: E731
    for nb_samples in (1022, 60):  # 2^10 - 2: every coalition; 60: sampled
        heatmaps = KernelShap(model, nb_samples=nb_samples, baseline=baseline,
                              progress=False)(x, 0)
        torch.testing.assert_close(heatmaps, weights * (x - baseline), rtol=0, atol=1e-5)


def test_full_enumeration_equals_exact_shapley_values_on_tabular_data():
    model = small_mlp(n_features=7)
    x = torch.randn(3, 7, generator=torch.Generator().manual_seed(1))
    baseline = torch.linspace(-0.5, 0.5, 7)
    mask = torch.arange(7)
    result = KernelShap(model, nb_samples=126, baseline=baseline, progress=False
                        ).explain_groups(x, [0, 1, 2])
    for i, target in enumerate([0, 1, 2]):
        expected = exact_shapley(model, x[i], baseline, mask)[:, target]
        torch.testing.assert_close(result.values[i].double(), expected, rtol=0, atol=1e-6)


def test_full_enumeration_equals_exact_shapley_values_on_image_groups(images):
    model = small_cnn()
    mask = features.grid((16, 16), grid_size=3)  # 9 groups: 510 coalitions
    result = KernelShap(model, nb_samples=510, feature_mask=mask, baseline=0.3,
                        progress=False).explain_groups(images[:2], np.array([[1, 4]] * 2))
    for i in range(2):
        expected = exact_shapley(model, images[i], torch.full_like(images[i], 0.3), mask)
        for j, target in enumerate([1, 4]):
            torch.testing.assert_close(result.values[i, j].double(), expected[:, target],
                                       rtol=0, atol=1e-6)


def test_agrees_with_shap_exact_explainer():
    model = small_mlp(n_features=6)
    x = torch.randn(3, 6, generator=torch.Generator().manual_seed(2))
    baseline = torch.randn(1, 6, generator=torch.Generator().manual_seed(3))

    def class_one(a):
        with torch.no_grad():
            return model(torch.as_tensor(a, dtype=torch.float32))[:, 1].double().numpy()

    masker = shap.maskers.Independent(baseline.numpy(), max_samples=1)
    theirs = shap.explainers.Exact(class_one, masker)(x.numpy()).values
    ours = KernelShap(model, nb_samples=62, baseline=baseline, progress=False)(x, 1)
    correlation = np.corrcoef(ours.numpy().ravel(), theirs.ravel())[0, 1]
    assert correlation > 0.999
    np.testing.assert_allclose(ours.numpy(), theirs, atol=1e-5)


@pytest.mark.parametrize("nb_samples", [126, 40])
def test_values_sum_to_f_x_minus_f_baseline_exactly(images, nb_samples):
    """Efficiency is a constraint of the regression, so it holds when sampling too (40 of the
    2^9 - 2 coalitions here)."""
    model = small_cnn()
    mask = features.grid((16, 16), grid_size=3)
    result = KernelShap(model, nb_samples=nb_samples, feature_mask=mask, baseline="mean",
                        progress=False).explain_groups(images, 2)
    with torch.no_grad():
        expected = model(images)[:, 2] - model(images.mean((2, 3), keepdim=True).expand_as(
            images))[:, 2]
    torch.testing.assert_close(result.values.sum(1), expected, rtol=0, atol=1e-5)
    torch.testing.assert_close(result.prediction - result.base_value, expected, rtol=0,
                               atol=1e-5)


def test_sampling_approaches_the_exact_values():
    model = small_mlp(n_features=10, seed=4)
    x = torch.randn(1, 10, generator=torch.Generator().manual_seed(5))
    exact = exact_shapley(model, x[0], torch.zeros(10), torch.arange(10))[:, 0].float()
    errors = [(KernelShap(model, nb_samples=n, progress=False)(x, 0)[0] - exact).norm()
              / exact.norm() for n in (60, 600)]
    assert errors[1] < errors[0] and errors[1] < 0.05


def test_the_design_is_paired_kernel_weighted_and_enumerated_when_it_fits():
    generator = torch.Generator().manual_seed(0)
    coalitions, weights = shapley_kernel_design(5, 30, generator)  # 2^5 - 2 = 30: all
    assert len(coalitions) == 30 and len({tuple(z.tolist()) for z in coalitions}) == 30
    sizes = coalitions.sum(1)
    kernel = torch.tensor([4 / (math.comb(5, int(s)) * s * (5 - s)) for s in sizes],
                          dtype=torch.float64)
    torch.testing.assert_close(weights, kernel / kernel.sum())
    coalitions, weights = shapley_kernel_design(16, 200, generator)  # sampled: 65534 > 200
    rows = {tuple(z.tolist()) for z in coalitions}
    assert len(coalitions) <= 200 and abs(weights.sum().item() - 1) < 1e-12
    assert all(tuple((~z).tolist()) in rows for z in coalitions)  # each with its complement
    sizes = coalitions.sum(1)
    assert sizes.min() >= 1 and sizes.max() <= 15
    assert coalitions[sizes == 1].shape[0] == 16 and coalitions[sizes == 15].shape[0] == 16
