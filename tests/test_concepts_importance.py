"""Concept importance on planted activations with a known linear head.

Activations at each position ``p`` of image ``i`` are ``a_i(p) = u0_i(p) W0 + noise`` (``g`` is
the identity), and ``h = Linear o mean_p``. With ``v`` the target row of the linear layer,
scaling concept ``k`` by ``m_k`` at every position gives

    f(u * m) = b + sum_k m_k c_ik,    c_ik = mean_p(u_ik(p)) (w_k . v),

an additive function of independent ``m_k ~ U[0, 1]``. Hence

- total Sobol index: ``ST_ik = Var(m_k c_ik) / Var(f) = c_ik^2 / sum_j c_ij^2``
  (``Var(m_k) = 1/12`` cancels); the expected global importance is its mean over images;
- occlusion: ``f(u) - f(u with u_k = 0) = c_ik``;
- gradient x input: ``sum_p u_ik(p) df/du_ik(p) = c_ik``.

``v`` is chosen so that ``w0_k . v = s_k`` with ``s = (8, 4, 2, 1)``: the true concepts have
well separated importances, in a known order.
"""
import numpy as np
import pytest
import torch
from scipy.stats import spearmanr
from torch import nn

from pellucid.explain.concepts import Craft, NotFittedError
from test_concepts_factorization import match_concepts

CHANNELS, N_CONCEPTS, SIZE = 16, 4, 4
STRENGTHS = np.array([8.0, 4.0, 2.0, 1.0])


def planted_feature_maps(n_images=24, seed=0):
    rng = np.random.default_rng(seed)
    w0 = np.zeros((N_CONCEPTS, CHANNELS))
    for k in range(N_CONCEPTS):
        w0[k, rng.choice(CHANNELS, 6, replace=False)] = rng.uniform(0.5, 1.5, 6)
    shape = (n_images, SIZE, SIZE, N_CONCEPTS)
    u0 = rng.exponential(1.0, shape) * (rng.random(shape) < 0.4)
    a = np.einsum("nhwr,rc->nchw", u0, w0)
    a = np.maximum(a + 0.01 * rng.normal(size=a.shape), 0)
    return torch.tensor(a, dtype=torch.float32), u0, w0


def linear_head(w0, seed=0):
    """avg-pool + Linear(C, 3); class 0 weights ``v`` with ``w0 v = STRENGTHS``."""
    torch.manual_seed(seed)
    linear = nn.Linear(CHANNELS, 3)
    v = np.linalg.lstsq(w0, STRENGTHS, rcond=None)[0]
    with torch.no_grad():
        linear.weight[0] = torch.tensor(v, dtype=torch.float32)
    return nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), linear).eval()


@pytest.fixture(scope="module")
def planted():
    a, u0, w0 = planted_feature_maps()
    return a, u0, w0, linear_head(w0)


def fitted_craft(planted, **options):
    a, _, _, h = planted
    options = {"batch_size": 4096, **options}
    craft = Craft(nn.Identity(), h, n_concepts=N_CONCEPTS, patch_size=0.5, crops_per_image=4,
                  progress=False, **options)
    return craft.fit(a, targets=0)


def contributions(coefficients, concepts, h):
    """``c_ik = mean_p u_ik(p) (w_k . v)`` written out from the fitted factors."""
    v = h[2].weight[0].detach().double()
    return coefficients.double().mean((2, 3)) * (concepts.double() @ v)


def test_sobol_importance_ranks_the_planted_concepts(planted):
    a, u0, w0, h = planted
    craft = fitted_craft(planted, importance="sobol", nb_design=256)
    order, cosines = match_concepts(craft.concepts_.double().numpy(), w0)
    assert cosines.min() > 0.95
    importances = craft.estimate_importance(a[:12])
    truth = u0[:12].mean((1, 2)) * STRENGTHS
    expected = (truth**2 / (truth**2).sum(1, keepdims=True)).mean(0)
    found = importances.numpy()[order]
    rho = spearmanr(expected, found).statistic
    print(f"planted concept cosines {np.round(cosines, 4)}; Sobol importance expected "
          f"{np.round(expected, 3)} found {np.round(found, 3)}; Spearman {rho:.3f}")
    assert rho > 0.9
    np.testing.assert_allclose(found, expected, atol=0.05)
    # per image, against c_ik^2 / sum_j c_ij^2 from the fitted factors
    c = contributions(craft.spatial_coefficients(a[:12]), craft.concepts_, h).numpy()
    np.testing.assert_allclose(craft.sample_importances_.numpy(),
                               c**2 / (c**2).sum(1, keepdims=True), atol=0.03)


@pytest.mark.parametrize("importance", ["occlusion", "gradient_input"])
def test_occlusion_and_gradient_input_equal_the_contributions(planted, importance):
    a, u0, w0, h = planted
    craft = fitted_craft(planted, importance=importance)
    craft.estimate_importance(a[:8])
    c = contributions(craft.spatial_coefficients(a[:8]), craft.concepts_, h)
    torch.testing.assert_close(craft.sample_importances_.double(), c, atol=1e-4, rtol=1e-4)
    order, _ = match_concepts(craft.concepts_.double().numpy(), w0)
    expected = (u0[:8].mean((1, 2)) * STRENGTHS).mean(0)
    assert spearmanr(expected, craft.importances_.numpy()[order]).statistic > 0.9


def test_importance_does_not_depend_on_batch_size_and_is_seeded(planted):
    a = planted[0][:3]
    small = fitted_craft(planted, nb_design=16, batch_size=7)
    large = fitted_craft(planted, nb_design=16)
    torch.testing.assert_close(small.estimate_importance(a), large.estimate_importance(a))
    torch.testing.assert_close(large.estimate_importance(a), large.estimate_importance(a),
                               rtol=0, atol=0)
    other_seed = fitted_craft(planted, nb_design=16, seed=1)
    assert not torch.equal(other_seed.estimate_importance(a), large.importances_)


def test_vector_activations_use_the_paper_formula_and_refuse_maps(planted):
    """``g`` ending with a global pooling: importance on ``(N, R)`` coefficients."""
    a, _, w0, h = planted
    g = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
    craft = Craft(g, h[2], n_concepts=N_CONCEPTS, importance="occlusion", patch_size=1.0,
                  crops_per_image=1, progress=False).fit(a, targets=0)
    u = craft.transform(a[:5])
    assert u.shape == (5, N_CONCEPTS)
    importances = craft.estimate_importance(a[:5])
    v = h[2].weight[0].detach()
    torch.testing.assert_close(importances, (u * (craft.concepts_ @ v)).mean(0), atol=1e-4,
                               rtol=1e-4)
    with pytest.raises(ValueError, match="spatial activations"):
        craft.concept_maps(a[:2])


def test_estimate_importance_needs_fit_and_valid_targets(planted):
    a, _, _, h = planted
    craft = Craft(nn.Identity(), h, n_concepts=N_CONCEPTS, progress=False)
    with pytest.raises(NotFittedError, match="fit"):
        craft.estimate_importance(a[:2])
    craft.fit(a[:6], targets=0)
    with pytest.raises(ValueError, match=r"\[0, 3\)"):
        craft.estimate_importance(a[:2], targets=5)
