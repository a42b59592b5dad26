"""Tabular sets: two synthetic tasks with known true attributions, two classic scikit-learn sets."""
from __future__ import annotations

import numpy as np

from .._validation import check_non_negative
from .base import Dataset, check_count, standardize, stratified_split

# Odd shape functions: g(0) = 0 and E[g(x)] = 0 for x symmetric around 0.
SHAPES = {
    "linear": lambda x: x,
    "sine": lambda x: np.sin(1.5 * x),
    "tanh": lambda x: np.tanh(2.0 * x),
    "cubic": lambda x: x**3 / 4.0,
}


def load_suppressor(n_train: int = 800, n_test: int = 400, *, signal: float = 1.0,
                    distractor: float = 1.0, noise: float = 0.1, n_irrelevant: int = 0,
                    seed: int = 0) -> Dataset:
    """The suppressor-variable task (Haufe et al., 2014; Wilming, Haufe et al., 2023).

    ``y`` in {0, 1}; ``z = signal * (2y - 1)``; a distractor ``d ~ N(0, distractor^2)``;
    ``x1 = z + d + noise * e``, ``x2 = d`` (the suppressor), plus ``n_irrelevant`` features
    ``N(0, 1)``. ``x2`` has no statistical relation to ``y``, yet the optimal linear rule
    ``x1 - x2`` needs it. ``true_attributions_*`` is 1 for ``x1`` (the only feature associated
    with the label) and 0 for every other feature: a method that marks ``x2`` important fails.
    """
    rng = np.random.default_rng(seed)
    n_irrelevant = check_count("n_irrelevant", n_irrelevant, minimum=0)
    noise, distractor = check_non_negative("noise", noise), check_non_negative("distractor",
                                                                              distractor)

    def draw(n):
        y = rng.permutation(np.arange(n) % 2)
        d = distractor * rng.standard_normal(n)
        x1 = signal * (2 * y - 1) + d + noise * rng.standard_normal(n)
        x = np.column_stack([x1, d, rng.standard_normal((n, n_irrelevant))])
        truth = np.zeros_like(x)
        truth[:, 0] = 1.0
        return x, y, truth

    (x_train, y_train, t_train), (x_test, y_test, t_test) = (
        draw(check_count("n_train", n_train)), draw(check_count("n_test", n_test)))
    names = ["x1 (signal + distractor)", "x2 (suppressor)"] + [
        f"x{i + 3} (irrelevant)" for i in range(n_irrelevant)]
    return Dataset(
        name="suppressor", x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test,
        class_names=["0", "1"], feature_names=names, true_attributions_train=t_train,
        true_attributions_test=t_test,
        description="x1 = z + d, x2 = d (suppressor), y = [z > 0]; only x1 relates to y.",
        extras={"signal": signal, "distractor": distractor, "noise": noise, "seed": seed},
    )


def load_additive(n_train: int = 800, n_test: int = 400, n_features: int = 8, *,
                  noise: float = 0.05, seed: int = 0) -> Dataset:
    """Regression ``y = sum_i w_i g_i(x_i) + noise * e`` with ``x ~ U(-2, 2)^F``.

    The shape functions ``g_i`` cycle through linear, sine, tanh, cubic; all are odd, so
    ``g_i(0) = 0 = E[g_i(x_i)]`` and the true attribution of feature ``i`` is ``w_i g_i(x_i)``
    for a zero baseline and for the population-mean baseline alike (the exact Shapley value of
    an additive model). The weights are drawn with the seed (|w| in [0.5, 2], random sign); the
    last quarter of the features (at least one when F >= 4) get weight 0: irrelevant.
    ``extras`` holds ``weights`` and ``shapes``.
    """
    n_features = check_count("n_features", n_features)
    noise = check_non_negative("noise", noise)
    rng = np.random.default_rng(seed)
    weights = rng.uniform(0.5, 2.0, n_features) * rng.choice([-1.0, 1.0], n_features)
    weights[n_features - n_features // 4:] = 0.0
    shapes = [list(SHAPES)[i % len(SHAPES)] for i in range(n_features)]

    def draw(n):
        x = rng.uniform(-2.0, 2.0, (n, n_features))
        contributions = np.column_stack([w * SHAPES[s](x[:, i])
                                         for i, (w, s) in enumerate(zip(weights, shapes))])
        y = contributions.sum(1) + noise * rng.standard_normal(n)
        return x, y, contributions

    (x_train, y_train, t_train), (x_test, y_test, t_test) = (
        draw(check_count("n_train", n_train)), draw(check_count("n_test", n_test)))
    return Dataset(
        name="additive", x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test,
        feature_names=[f"x{i} ({s})" for i, s in enumerate(shapes)],
        true_attributions_train=t_train, true_attributions_test=t_test, task="regression",
        description="y = sum_i w_i g_i(x_i) + noise; true attributions w_i g_i(x_i).",
        extras={"weights": weights.tolist(), "shapes": shapes, "noise": noise, "seed": seed},
    )


def _sklearn_tabular(name: str, bunch, test_fraction: float, seed: int) -> Dataset:
    x, y = np.asarray(bunch.data, dtype=np.float64), np.asarray(bunch.target)
    train, test = stratified_split(y, test_fraction, seed)
    x_train, x_test, stats = standardize(x[train], x[test])
    return Dataset(
        name=name, x_train=x_train, y_train=y[train], x_test=x_test, y_test=y[test],
        class_names=[str(c) for c in bunch.target_names],
        feature_names=[str(f) for f in bunch.feature_names],
        description=f"scikit-learn {name}, standardized with the training split's statistics.",
        extras={"standardization": stats, "seed": seed},
    )


def load_breast_cancer(*, test_fraction: float = 0.25, seed: int = 0) -> Dataset:
    """scikit-learn's Wisconsin breast cancer (569 x 30, 2 classes), stratified split,
    standardized with the training statistics (kept in ``extras['standardization']``)."""
    from sklearn.datasets import load_breast_cancer as sklearn_loader
    return _sklearn_tabular("breast_cancer", sklearn_loader(), test_fraction, seed)


def load_wine(*, test_fraction: float = 0.25, seed: int = 0) -> Dataset:
    """scikit-learn's wine (178 x 13, 3 classes), stratified split, standardized with the
    training statistics."""
    from sklearn.datasets import load_wine as sklearn_loader
    return _sklearn_tabular("wine", sklearn_loader(), test_fraction, seed)
