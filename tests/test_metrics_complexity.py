"""Sparseness, Complexity, EffectiveComplexity: extreme maps with known values, and formulas
written out independently (Gini by the mean absolute difference, entropy by hand)."""
import math

import numpy as np
import pytest
import torch

from pellucid.metrics import Complexity, EffectiveComplexity, Sparseness


def maps(n=5, shape=(6, 7), seed=0):
    x = torch.rand(n, 2, *shape, generator=torch.Generator().manual_seed(seed))
    h = torch.randn(n, *shape, generator=torch.Generator().manual_seed(seed + 1))
    return x, h


def one_hot_and_constant(shape=(6, 7)):
    one_hot = torch.zeros(1, *shape)
    one_hot[0, 2, 3] = -4.0  # sign does not matter: |h|
    return torch.cat([one_hot, torch.full((1, *shape), 0.3)])


def test_sparseness_is_maximal_for_one_hot_and_zero_for_constant_maps():
    h = one_hot_and_constant()
    n = h[0].numel()
    scores = Sparseness()(torch.rand(2, 3, 6, 7), h).scores
    np.testing.assert_allclose(scores, [1 - 1 / n, 0.0], atol=1e-12)


def test_sparseness_is_the_gini_index_by_mean_absolute_difference():
    """Gini = sum_i sum_j |a_i - a_j| / (2 n sum a) (no sorting): the closed form of the
    docstring must agree on random maps, tabular too."""
    for x, h in (maps(), (torch.randn(4, 9), torch.randn(4, 9))):
        a = h.reshape(len(h), -1).abs().double().numpy()
        expected = np.abs(a[:, :, None] - a[:, None, :]).sum((1, 2)) / (
            2 * a.shape[1] * a.sum(1))
        np.testing.assert_allclose(Sparseness()(x, h).scores, expected, rtol=1e-10)


def test_complexity_is_the_entropy_of_the_fractional_contributions():
    x, h = maps()
    p = h.reshape(len(h), -1).abs().double().numpy()
    p = p / p.sum(1, keepdims=True)
    np.testing.assert_allclose(Complexity()(x, h).scores, -(p * np.log(p)).sum(1), rtol=1e-10)
    extremes = Complexity()(torch.rand(2, 3, 6, 7), one_hot_and_constant()).scores
    np.testing.assert_allclose(extremes, [0.0, math.log(42)], atol=1e-12)
    assert not Complexity.higher_is_better


def test_effective_complexity_counts_attributions_above_the_relative_threshold():
    h = torch.tensor([[0.0, 0.01, -0.2, 1.0, 0.5, 0.049], [2.0, 2.0, 0.0, 0.0, 0.0, 0.0]])
    x = torch.zeros(2, 6)
    np.testing.assert_array_equal(EffectiveComplexity()(x, h).scores, [3, 2])
    np.testing.assert_array_equal(EffectiveComplexity(threshold=0.3)(x, h).scores, [2, 2])
    np.testing.assert_array_equal(EffectiveComplexity(threshold=0.0)(x, h).scores, [5, 2])
    with pytest.raises(ValueError, match=r"threshold must be in \[0, 1\)"):
        EffectiveComplexity(threshold=1.0)


def test_a_zero_map_scores_nan_and_channels_are_summed():
    x = torch.rand(2, 3, 4, 4)
    h = torch.rand(2, 4, 4)
    h[1] = 0
    for metric in (Sparseness(), Complexity(), EffectiveComplexity()):
        scores = metric(x, h).scores
        assert np.isfinite(scores[0]) and np.isnan(scores[1])
    per_channel = torch.randn(2, 3, 4, 4)
    per_channel[:, 1] = -per_channel[:, 0]  # channels of opposite sign cancel in the sum
    np.testing.assert_allclose(Sparseness()(x, per_channel).scores,
                               Sparseness()(x, per_channel[:, 2]).scores, rtol=1e-6)
