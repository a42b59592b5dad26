"""Sobol estimators (against the Ishigami function's known indices) and SobolAttribution."""
import numpy as np
import pytest

from pellucid.explain.sobol_estimators import (jansen_total_indices, saltelli_first_order_indices,
                                               sobol_design)

# Ishigami function, a = 7, b = 0.1, x_i ~ U(-pi, pi); published indices (Ishigami & Homma
# 1990; Saltelli et al. 2008), re-derived in ishigami_analytic below.
ISHIGAMI_TOTAL = np.array([0.5576, 0.4424, 0.2437])
ISHIGAMI_FIRST = np.array([0.3139, 0.4424, 0.0])


def ishigami(u, a=7.0, b=0.1):
    x = (2 * np.asarray(u, dtype=np.float64) - 1) * np.pi
    return np.sin(x[..., 0]) + a * np.sin(x[..., 1]) ** 2 + b * x[..., 2] ** 4 * np.sin(x[..., 0])


def ishigami_analytic(a=7.0, b=0.1):
    """The indices written out from the ANOVA decomposition (no sampling)."""
    v1 = 0.5 * (1 + b * np.pi ** 4 / 5) ** 2
    v2 = a ** 2 / 8
    v13 = b ** 2 * np.pi ** 8 * (1 / 18 - 1 / 50)
    v = v1 + v2 + v13
    return np.array([v1 + v13, v2, v13]) / v, np.array([v1, v2, 0.0]) / v


def test_analytic_ishigami_values_are_the_published_ones():
    total, first = ishigami_analytic()
    np.testing.assert_allclose(total, ISHIGAMI_TOTAL, atol=1e-3)
    np.testing.assert_allclose(first, ISHIGAMI_FIRST, atol=1e-3)


@pytest.mark.parametrize("seed", [0, 1])
def test_jansen_and_saltelli_recover_ishigami_indices(seed):
    a, b, c = sobol_design(2 ** 12, 3, seed=seed)
    f_a, f_b, f_c = ishigami(a), ishigami(b), ishigami(c)
    total, first = ishigami_analytic()
    np.testing.assert_allclose(jansen_total_indices(f_a, f_b, f_c), total, atol=0.03)
    np.testing.assert_allclose(saltelli_first_order_indices(f_a, f_b, f_c), first, atol=0.03)


def test_design_is_pick_freeze_and_seeded():
    a, b, c = sobol_design(16, 5, seed=3)
    assert a.shape == b.shape == (16, 5) and c.shape == (5, 16, 5)
    assert a.min() >= 0 and a.max() <= 1 and b.min() >= 0 and b.max() <= 1
    for i in range(5):
        others = [j for j in range(5) if j != i]
        np.testing.assert_array_equal(c[i][:, i], b[:, i])
        np.testing.assert_array_equal(c[i][:, others], a[:, others])
    again = sobol_design(16, 5, seed=3)
    np.testing.assert_array_equal(again[0], a)
    assert not np.array_equal(sobol_design(16, 5, seed=4)[0], a)


@pytest.mark.parametrize("bad", [0, 3, 24, 2.0, True])
def test_design_size_must_be_a_power_of_two(bad):
    with pytest.raises(ValueError, match="power of 2"):
        sobol_design(bad, 4, seed=0)


def test_estimators_accept_a_batch_axis():
    a, b, c = sobol_design(256, 3, seed=0)
    outputs = [np.stack([ishigami(m), 2 * ishigami(m) + 1]) for m in (a, b, c)]
    batched = jansen_total_indices(*outputs)
    assert batched.shape == (2, 3)
    single = jansen_total_indices(ishigami(a), ishigami(b), ishigami(c))
    np.testing.assert_allclose(batched[0], single)
    np.testing.assert_allclose(batched[1], single)  # indices are invariant to affine maps
    assert saltelli_first_order_indices(*outputs).shape == (2, 3)


def test_estimators_reject_mismatched_shapes():
    with pytest.raises(ValueError, match="f_C must have shape"):
        jansen_total_indices(np.zeros(8), np.zeros(8), np.zeros((3, 7)))
    with pytest.raises(ValueError, match="f_B must have the shape"):
        jansen_total_indices(np.zeros(8), np.zeros(4), np.zeros((3, 8)))
