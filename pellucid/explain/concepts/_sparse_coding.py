"""Sparse dictionary learning in numpy, vectorized over rows:
``min_{U, W} 0.5 ||A - U W||_F^2 + alpha ||U||_1`` with atoms ``||w_k|| <= 1``.

Codes by FISTA (Beck & Teboulle, 2009) on all rows at once; atoms by block coordinate
descent (Mairal et al., 2010, "Online Learning for Matrix Factorization and Sparse Coding",
Algorithm 2). The two steps alternate (20 warm-started FISTA steps per alternation) until the
objective stops decreasing; the returned codes are then solved to convergence.

Why not scikit-learn (measured, ``benchmarks/bench_dictionary.py --own``; planted dictionary of
8 unit atoms in 32 channels, 600 rows, 25% active codes, alpha 0.1, 5 seeds, 2 CPU cores):

====================================  ========  ===================  =========
fit + codes                           time (s)  worst atom cosine    objective
====================================  ========  ===================  =========
this module (FISTA + BCD)             0.30      0.9997               90.09
``DictionaryLearning(cd)``            5.2       0.9997               90.09
``DictionaryLearning(lars)``          ~50       0.9997               (same)
``MiniBatchDictionaryLearning``       2.7       0.35 (min), 0.49     128.4
====================================  ========  ===================  =========

Codes alone (4096 rows, the planted atoms): this module 0.24 s, ``sparse_encode`` lasso_cd
2.3 s, lasso_lars 4.3 s, all to the same objective (617.95). Same answers, 9-17x faster, so the
vectorized solver stays.
"""
from __future__ import annotations

import numpy as np


def lasso_codes(a: np.ndarray, atoms: np.ndarray, alpha: float, *, max_iter: int = 1000,
                tol: float = 1e-9, start: np.ndarray | None = None) -> np.ndarray:
    """``argmin_U 0.5 ||A - U W||^2 + alpha |U|_1`` for ``A (n, C)``, ``W (R, C)``: FISTA with
    adaptive restart per row (O'Donoghue & Candes, 2015), until no coefficient moves by more
    than ``tol`` times the largest one."""
    gram, target = atoms @ atoms.T, a @ atoms.T
    lipschitz = max(float(np.linalg.eigvalsh(gram)[-1]), 1e-12)
    codes = np.zeros((len(a), len(atoms))) if start is None else start.copy()
    momentum, step = codes.copy(), np.ones((len(a), 1))
    for _ in range(max_iter):
        z = momentum - (momentum @ gram - target) / lipschitz
        new = np.sign(z) * np.maximum(np.abs(z) - alpha / lipschitz, 0.0)
        restart = ((momentum - new) * (new - codes)).sum(1, keepdims=True) > 0
        step = np.where(restart, 1.0, step)
        new_step = (1 + np.sqrt(1 + 4 * step**2)) / 2
        momentum = new + (step - 1) / new_step * (new - codes)
        change = np.abs(new - codes).max() if new.size else 0.0
        codes, step = new, new_step
        if change <= tol * max(np.abs(codes).max(initial=0.0), 1e-12):
            break
    return codes


def learn_dictionary(a: np.ndarray, n_atoms: int, alpha: float, *, max_iter: int, tol: float,
                     rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Atoms ``W (n_atoms, C)`` (unit ball) and codes ``U (n, n_atoms)``, initialized with
    ``n_atoms`` distinct rows of ``A`` drawn by ``rng``."""
    atoms = _project_to_unit_ball(a[rng.choice(len(a), n_atoms, replace=False)], rng)
    atoms /= np.linalg.norm(atoms, axis=1, keepdims=True)  # unit-norm start
    codes, previous = None, np.inf
    for _ in range(max_iter):
        codes = lasso_codes(a, atoms, alpha, max_iter=20, start=codes)  # inexact, warm
        atoms = _update_atoms(a, codes, atoms, rng)
        objective = 0.5 * ((a - codes @ atoms) ** 2).sum() + alpha * np.abs(codes).sum()
        if previous - objective <= tol * objective:
            break
        previous = objective
    return atoms, lasso_codes(a, atoms, alpha, start=codes)


def _update_atoms(a, codes, atoms, rng):
    """One pass of block coordinate descent over the atoms (unused atoms re-drawn)."""
    cross, target = codes.T @ codes, codes.T @ a
    atoms = atoms.copy()
    for k in range(len(atoms)):
        if cross[k, k] < 1e-12:
            atoms[k] = a[rng.integers(len(a))]
        else:
            atoms[k] += (target[k] - cross[k] @ atoms) / cross[k, k]
        atoms[k:k + 1] = _project_to_unit_ball(atoms[k:k + 1], rng)
    return atoms


def _project_to_unit_ball(atoms, rng):
    """Rows scaled into the unit ball; a zero row (no direction) becomes a random unit row."""
    atoms = atoms.copy()
    norms = np.linalg.norm(atoms, axis=1, keepdims=True)
    dead = norms[:, 0] < 1e-12
    if dead.any():
        fresh = rng.normal(size=(int(dead.sum()), atoms.shape[1]))
        atoms[dead] = fresh / np.linalg.norm(fresh, axis=1, keepdims=True)
        norms[dead] = 1.0
    return atoms / np.maximum(norms, 1.0)
