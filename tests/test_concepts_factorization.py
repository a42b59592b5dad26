"""Concept factorizations: NMF recovers a planted dictionary; every factorization has the same
interface, its constraints, determinism under a seed and exact implicit gradients."""
import numpy as np
import pytest
import torch
from scipy.optimize import linear_sum_assignment

from pellucid.explain.concepts import (FACTORIZATIONS, NMFConcepts, NotFittedError,
                                       encode_differentiable, hoyer_sparsity, make_factorization,
                                       reconstruction_error, sparsity)

NAMES = tuple(FACTORIZATIONS)


def planted_product(n=300, channels=24, n_concepts=5, noise=0.01, seed=0):
    """``A = U0 W0 + noise`` with sparse non-negative ``U0`` (1-2 active concepts per row) and
    ``W0`` (each concept on 8 channels), so that the factorization is identifiable."""
    rng = np.random.default_rng(seed)
    w0 = np.zeros((n_concepts, channels))
    for k in range(n_concepts):
        w0[k, rng.choice(channels, 8, replace=False)] = rng.uniform(0.5, 1.5, 8)
    u0 = rng.exponential(1.0, (n, n_concepts)) * (rng.random((n, n_concepts)) < 0.35)
    u0[np.arange(n), rng.integers(0, n_concepts, n)] += rng.exponential(1.0, n)
    a = np.maximum(u0 @ w0 + noise * rng.normal(size=(n, channels)), 0)
    return a, u0, w0


def match_concepts(w_fit, w_true):
    """Rows of ``w_fit`` matched to rows of ``w_true`` maximizing the total cosine."""
    unit = lambda w: w / np.linalg.norm(w, axis=1, keepdims=True)  # noqa: E731
    cosines = unit(w_true) @ unit(w_fit).T
    rows, cols = linear_sum_assignment(-cosines)
    return cols, cosines[rows, cols]


def test_nmf_recovers_planted_concepts_up_to_permutation():
    a, u0, w0 = planted_product()
    nmf = NMFConcepts(5, seed=0)
    u = nmf.fit(a)
    order, cosines = match_concepts(nmf.components_, w0)
    print("NMF recovery cosines", np.array2string(cosines, precision=6))
    assert cosines.min() > 0.95
    # the coefficients are recovered too (up to the scale each concept absorbed)
    scale = np.linalg.norm(nmf.components_[order], axis=1) / np.linalg.norm(w0, axis=1)
    u_matched = u[:, order] * scale
    corr = [np.corrcoef(u_matched[:, k], u0[:, k])[0, 1] for k in range(5)]
    assert min(corr) > 0.95
    assert reconstruction_error(a, nmf.inverse_transform(u)) < 0.05


@pytest.mark.parametrize("name", NAMES)
def test_every_factorization_shapes_constraints_and_seed(name):
    a, _, _ = planted_product(n=120, channels=12, n_concepts=4)
    first, second = make_factorization(name, 4, seed=3), make_factorization(name, 4, seed=3)
    u, u_again = first.fit(a), second.fit(a)
    assert u.shape == (120, 4)
    assert first.components_.shape == (4, 12) and first.offset_.shape == (12,)
    np.testing.assert_array_equal(u, u_again)
    np.testing.assert_array_equal(first.components_, second.components_)
    new = a[:7] * 1.1
    assert first.transform(new).shape == (7, 4)
    np.testing.assert_array_equal(first.transform(new), second.transform(new))
    assert first.inverse_transform(u).shape == a.shape
    assert reconstruction_error(a, first.inverse_transform(u)) < 0.6
    if name == "nmf":
        assert u.min() >= 0 and first.components_.min() >= 0 and first.transform(new).min() >= 0
    if name == "kmeans":
        np.testing.assert_array_equal(u.sum(1), 1.0)
        assert set(np.unique(u)) == {0.0, 1.0}
    if name == "pca":
        np.testing.assert_allclose(first.components_ @ first.components_.T, np.eye(4),
                                   atol=1e-10)


def test_transform_of_the_fitted_data_agrees_with_fit():
    a, _, _ = planted_product(n=150, channels=12, n_concepts=4)
    for name in ("pca", "ica", "kmeans"):
        f = make_factorization(name, 4, seed=0)
        np.testing.assert_allclose(f.fit(a), f.transform(a), atol=1e-8)


def test_nmf_refuses_negative_activations_and_linear_methods_too_many_concepts():
    a, _, _ = planted_product(n=50, channels=12)
    with pytest.raises(ValueError, match="non-negative activations"):
        NMFConcepts(3).fit(a - 0.5)
    with pytest.raises(ValueError, match="at most as many concepts as there are channels"):
        make_factorization("pca", 13, seed=0).fit(a)
    with pytest.raises(NotFittedError, match="NMFConcepts is not fitted yet; call fit first"):
        NMFConcepts(3).transform(a)
    with pytest.raises(ValueError, match="factorization must be one of"):
        make_factorization("svd", 3, seed=0)
    with pytest.raises(ValueError, match="channels"):
        f = NMFConcepts(3)
        f.fit(a)
        f.transform(a[:, :5])


def test_sparsity_scores_against_their_formulas():
    u = np.array([[1.0, 0.0, 0.0, 0.0], [1.0, 1.0, 1.0, 1.0], [2.0, 1e-5, 0.0, 3.0]])
    assert sparsity(u) == pytest.approx(5 / 12)  # 3 + 0 + 2 entries <= 1e-3 * row max
    hoyer_rows = [(2 - 1) / 1, (2 - 2) / 1, (2 - (5 + 1e-5) / np.sqrt(13 + 1e-10)) / 1]
    assert hoyer_sparsity(u) == pytest.approx(np.mean(hoyer_rows))


def _implicit_vjp(factorization, a, direction):
    leaf = torch.tensor(a, requires_grad=True)
    u = encode_differentiable(leaf, factorization)
    (grad,) = torch.autograd.grad((u * direction).sum(), leaf)
    return grad.numpy()


def test_pca_gradient_is_the_projection():
    a, _, _ = planted_product(n=80, channels=12, n_concepts=4)
    pca = make_factorization("pca", 4, seed=0)
    pca.fit(a)
    direction = torch.randn(5, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    grad = _implicit_vjp(pca, a[:5], direction)
    np.testing.assert_allclose(grad, direction.numpy() @ pca.components_, atol=1e-10)


@pytest.mark.parametrize("name", ["nmf", "ica", "dictionary"])
def test_implicit_gradient_matches_finite_differences(name):
    """d/de <g, U(a + e v)> at e = 0 by central differences of the exact solver, against the
    implicit-differentiation vector-Jacobian product <VJP(g), v>."""
    a, _, _ = planted_product(n=200, channels=12, n_concepts=4, noise=0.0)
    factorization = make_factorization(name, 4, seed=0)
    factorization.fit(a)
    rng = np.random.default_rng(1)
    rows = a[:6]
    direction_u = rng.normal(size=(6, 4))
    # a small step that keeps zero activations at zero (NMF needs them non-negative)
    direction_a = rng.normal(size=rows.shape) * (rows > 0) * 1e-6 * np.abs(rows).mean()
    plus = factorization.transform(rows + direction_a)
    minus = factorization.transform(rows - direction_a)
    finite = ((plus - minus) / 2 * direction_u).sum(1)
    grad = _implicit_vjp(factorization, rows, torch.tensor(direction_u))
    implicit = (grad * direction_a).sum(1)
    np.testing.assert_allclose(implicit, finite, rtol=0.05, atol=1e-3 * np.abs(finite).max())


def test_kmeans_gradient_raises_a_clear_error():
    a, _, _ = planted_product(n=60, channels=12)
    kmeans = make_factorization("kmeans", 3, seed=0)
    kmeans.fit(a)
    with pytest.raises(RuntimeError, match="piecewise constant"):
        _implicit_vjp(kmeans, a[:2], torch.ones(2, 3, dtype=torch.float64))


def test_ica_refuses_more_concepts_than_the_activations_span():
    a, _, _ = planted_product(n=60, channels=12, n_concepts=3, noise=0.0)  # rank 3
    with pytest.raises(ValueError, match="span 3"):
        make_factorization("ica", 4, seed=0).fit(a)


def test_ica_spans_the_principal_subspace_even_with_a_dead_first_channel():
    """scikit-learn 1.9's FastICA whitening fixes signs with ``sign(u[0])``; on these data
    (channel 0 constant, like a dead ReLU) ``u[0]`` is exactly 0 and ``FastICA(3)`` returns
    a rank-2 unmixing. Ours keeps the 3 principal directions: ICA reconstructs as PCA does."""
    rng = np.random.default_rng(0)
    a = np.concatenate([np.zeros((100, 1)), rng.random((100, 5))], axis=1)
    ica, pca = make_factorization("ica", 3, seed=0), make_factorization("pca", 3, seed=0)
    ica_error = reconstruction_error(a, ica.inverse_transform(ica.fit(a)))
    pca_error = reconstruction_error(a, pca.inverse_transform(pca.fit(a)))
    assert ica_error == pytest.approx(pca_error, rel=1e-6)
    np.testing.assert_allclose(np.cov(ica.transform(a).T), np.eye(3), atol=1e-6)  # unit variance
