"""Sobol sensitivity indices from a pick-freeze (Saltelli) design, in numpy.

The design (Saltelli, 2002; Saltelli et al., 2010) draws two independent matrices ``A`` and
``B`` of ``n`` points in ``[0, 1]^d`` and builds, for each dimension ``i``, the matrix ``C_i``:
``A`` with its column ``i`` taken from ``B``. The model is evaluated on the ``n (d + 2)`` rows.
Here the points come from a scrambled Sobol low-discrepancy sequence over ``2d`` dimensions
(``A`` = its first ``d`` columns, ``B`` = the last ``d``), as in Fel et al. (2021), "Look at
the Variance! Efficient Black-box Explanations with Sobol-based Sensitivity Analysis".

Estimators, with ``f0 = mean(f_A)`` and ``V = var(f_A)`` (unbiased, ``ddof=1``; the convention
of Fel et al.'s reference code, ``sobol_attribution_method/estimators.py``):

- total order, Jansen (1999): ``ST_i = sum_j (f_A[j] - f_C[i, j])^2 / (2 n V)``;
- first order, Saltelli et al. (2010): ``S_i = mean_j f_B[j] (f_C[i, j] - f_A[j]) / V``.

Every function accepts leading batch axes (``f_A`` of shape ``(..., n)``, ``f_C`` of shape
``(..., d, n)``) so that many inputs are estimated at once.
"""
from __future__ import annotations

import numbers

import numpy as np
from scipy.stats import qmc

from ..._validation import check_positive_int

_TINY = 1e-12  # guards the division when the model output does not vary at all


def check_power_of_two(name: str, value) -> int:
    """``value`` as an int, or a ValueError when it is not a power of two >= 2 (the estimators
    need two designs at least: a variance of one design is undefined)."""
    if (isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 2
            or value & (value - 1)):
        raise ValueError(f"{name} must be a power of 2 (the balance properties of Sobol "
                         f"sequences need it) and at least 2: 2, 4, ..., 32, 64, ...; "
                         f"got {value!r}")
    return int(value)


def sobol_design(nb_design: int, dimension: int, seed: int | None
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pick-freeze matrices from a scrambled Sobol sequence (``scipy.stats.qmc.Sobol``).

    Returns ``A`` ``(nb_design, dimension)``, ``B`` ``(nb_design, dimension)`` and ``C``
    ``(dimension, nb_design, dimension)`` with ``C[i] = A`` except ``C[i][:, i] = B[:, i]``.
    Values in ``[0, 1]``, float32. The same ``seed`` gives the same design.
    """
    a, b = sobol_matrices(nb_design, dimension, seed)
    c = design_rows(a, b, slice(2 * nb_design, (dimension + 2) * nb_design))
    return a, b, c.reshape(dimension, nb_design, dimension)


def sobol_matrices(nb_design: int, dimension: int, seed: int | None
                   ) -> tuple[np.ndarray, np.ndarray]:
    """``A`` and ``B`` of :func:`sobol_design`: the first and last ``dimension`` columns of
    ``nb_design`` points of a scrambled Sobol sequence in ``[0, 1]^(2 dimension)``."""
    nb_design = check_power_of_two("nb_design", nb_design)
    dimension = check_positive_int("dimension", dimension)
    points = qmc.Sobol(d=2 * dimension, scramble=True, seed=seed).random(nb_design)
    points = points.astype(np.float32)
    return points[:, :dimension], points[:, dimension:]


def design_rows(a: np.ndarray, b: np.ndarray, rows: slice) -> np.ndarray:
    """Rows ``rows`` of the stacked design ``[A; B; C_0; ...; C_{d-1}]`` (``n (d + 2)`` rows),
    built on demand so a large ``d`` never needs all of ``C`` at once."""
    n, dimension = a.shape
    index = np.arange(*rows.indices(n * (dimension + 2)))
    out = np.where((index < n)[:, None], a[index % n], b[index % n])
    in_c = index >= 2 * n
    column = (index[in_c] - 2 * n) // n
    out[in_c] = a[index[in_c] % n]
    out[in_c, column] = b[index[in_c] % n, column]
    return out


def _check_outputs(f_a, f_b, f_c) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    f_a, f_b, f_c = (np.asarray(v, dtype=np.float64) for v in (f_a, f_b, f_c))
    if f_a.ndim < 1 or f_a.shape[-1] < 2:
        raise ValueError(f"f_A must have shape (..., n) with n >= 2 designs; got {f_a.shape}")
    if f_b.shape != f_a.shape:
        raise ValueError(f"f_B must have the shape of f_A {f_a.shape}; got {f_b.shape}")
    if f_c.ndim != f_a.ndim + 1 or f_c.shape[:-2] != f_a.shape[:-1] \
            or f_c.shape[-1] != f_a.shape[-1]:
        expected = f_a.shape[:-1] + ("d", f_a.shape[-1])
        raise ValueError(f"f_C must have shape {expected} (one row of n outputs per dimension); "
                         f"got {f_c.shape}")
    return f_a, f_b, f_c


def _variance(f_a: np.ndarray) -> np.ndarray:
    """Unbiased variance of ``f(A)`` over the design, kept as ``(..., 1)`` for broadcasting."""
    return np.maximum(f_a.var(axis=-1, ddof=1), _TINY)[..., None]


def jansen_total_indices(f_A, f_B, f_C) -> np.ndarray:
    """Total-order indices ``(..., d)``: ``ST_i = sum_j (f_A[j] - f_C[i, j])^2 / (2 n V)``
    (Jansen, 1999), ``V`` the unbiased variance of ``f_A``. ``f_B`` is only checked: the
    Jansen total index does not use it."""
    f_a, _, f_c = _check_outputs(f_A, f_B, f_C)
    return ((f_a[..., None, :] - f_c) ** 2).mean(axis=-1) / (2 * _variance(f_a))


def saltelli_first_order_indices(f_A, f_B, f_C) -> np.ndarray:
    """First-order indices ``(..., d)``: ``S_i = mean_j f_B[j] (f_C[i, j] - f_A[j]) / V``
    (Saltelli et al., 2010, with ``C_i = A`` except column ``i`` from ``B``)."""
    f_a, f_b, f_c = _check_outputs(f_A, f_B, f_C)
    return (f_b[..., None, :] * (f_c - f_a[..., None, :])).mean(axis=-1) / _variance(f_a)
