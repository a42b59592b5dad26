"""ShapleyValueSampling against the analytic answer of additive models, exactness of an
antithetic pair with two groups, efficiency, and its reported standard error checked against
the spread of estimates over seeds and against exact Shapley values enumerated here."""
import numpy as np
import torch

from conftest import small_cnn, small_mlp
from pellucid import features
from pellucid.explain import ShapleyValueSampling
from shapley_reference import exact_shapley


def test_additive_model_gives_w_times_x_minus_b(tabular):
    weights = torch.linspace(-2, 3, 6)
    baseline = torch.linspace(1, -1, 6)
    model = lambda a: (a.astype(np.float64) @ weights.double().numpy())[:, None]  # noqa: E731
    result = ShapleyValueSampling(model, nb_samples=4, baseline=baseline, progress=False
                                  ).explain_groups(tabular, 0)
    torch.testing.assert_close(result.heatmaps, weights * (tabular - baseline), rtol=0,
                               atol=1e-5)
    assert result.standard_error.abs().max() < 1e-5  # every permutation gives the same


def test_one_antithetic_pair_is_exact_with_two_groups(images):
    """With two groups a permutation and its reverse are the two orders: the exact values."""
    model = small_cnn()
    mask = features.grid((16, 16), grid_size=(1, 2))
    ours = ShapleyValueSampling(model, nb_samples=2, feature_mask=mask, progress=False
                                ).explain_groups(images, 3).values
    for i in range(len(images)):
        expected = exact_shapley(model, images[i], torch.zeros_like(images[i]), mask)[:, 3]
        torch.testing.assert_close(ours[i].double(), expected, rtol=0, atol=1e-6)


def test_values_sum_to_f_x_minus_f_baseline_and_the_standard_error_is_honest():
    model = small_mlp(n_features=7, seed=1)
    x = torch.randn(1, 7, generator=torch.Generator().manual_seed(3))
    exact = exact_shapley(model, x[0], torch.zeros(7), torch.arange(7))[:, 0].float()
    runs = [ShapleyValueSampling(model, nb_samples=40, seed=seed, progress=False
                                 ).explain_groups(x, 0) for seed in range(40)]
    values = torch.stack([run.values[0] for run in runs])                 # (40, 7)
    errors = torch.stack([run.standard_error[0] for run in runs])
    for run in runs:  # efficiency holds for every permutation, so exactly
        torch.testing.assert_close(run.values.sum(1), run.prediction - run.base_value,
                                   rtol=0, atol=1e-5)
    # the reported error matches the spread over seeds, and covers the exact values
    spread, reported = values.std(0), errors.mean(0)
    assert ((reported / spread - 1).abs() < 0.5).all()
    coverage = ((values - exact).abs() <= 2 * errors).float().mean()
    assert coverage > 0.88  # 20 pairs: t with 19 degrees of freedom covers 94%
