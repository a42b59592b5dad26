"""pellucid's former FISTA + block-coordinate-descent dictionary learning against scikit-learn's
``DictionaryLearning`` / ``MiniBatchDictionaryLearning`` + ``sparse_encode`` on a planted sparse
dictionary: time, worst atom-recovery cosine, objective. Run: python benchmarks/bench_dictionary.py
(``--own`` needs the former ``_sparse_coding`` module; without it only scikit-learn is run)."""
import argparse
import time

import numpy as np
from scipy.optimize import linear_sum_assignment
from sklearn.decomposition import DictionaryLearning, MiniBatchDictionaryLearning, sparse_encode


def planted(n=600, channels=32, atoms=8, seed=0, noise=0.01):
    rng = np.random.default_rng(seed)
    w = rng.normal(size=(atoms, channels))
    w /= np.linalg.norm(w, axis=1, keepdims=True)
    u = rng.normal(size=(n, atoms)) * (rng.random((n, atoms)) < 0.25)
    return u @ w + noise * rng.normal(size=(n, channels)), w


def worst_cosine(fit, true):
    unit = lambda m: m / np.maximum(np.linalg.norm(m, axis=1, keepdims=True), 1e-12)  # noqa
    cos = np.abs(unit(true) @ unit(fit).T)
    rows, cols = linear_sum_assignment(-cos)
    return cos[rows, cols].min()


def objective(a, u, w, alpha):
    return 0.5 * ((a - u @ w) ** 2).sum() + alpha * np.abs(u).sum()


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--own", action="store_true")
    args = parser.parse_args()
    alpha = 0.1
    methods = {
        "sklearn DictionaryLearning(cd)": lambda a, k, s: _sk(DictionaryLearning(
            k, alpha=alpha, fit_algorithm="cd", transform_algorithm="lasso_cd",
            transform_alpha=alpha, random_state=s, max_iter=100, tol=1e-6), a, alpha),
        "sklearn MiniBatchDictionaryLearning": lambda a, k, s: _sk(MiniBatchDictionaryLearning(
            k, alpha=alpha, batch_size=64, max_iter=50, transform_algorithm="lasso_cd",
            transform_alpha=alpha, random_state=s), a, alpha),
    }
    if args.own:
        from pellucid.explain.concepts._sparse_coding import lasso_codes, learn_dictionary

        def own(a, k, s):
            w, _ = learn_dictionary(a, k, alpha, max_iter=100, tol=1e-6,
                                    rng=np.random.default_rng(s))
            return w, lasso_codes(a, w, alpha)
        methods = {"pellucid FISTA + BCD": own, **methods}
    for name, method in methods.items():
        times, cosines, objectives = [], [], []
        for seed in range(5):
            a, w_true = planted(seed=seed)
            start = time.perf_counter()
            w, u = method(a, len(w_true), seed)
            times.append(time.perf_counter() - start)
            cosines.append(worst_cosine(w, w_true))
            objectives.append(objective(a, u, w, alpha))
        print(f"{name:38s} time {np.mean(times):6.3f} s  worst cosine min/mean "
              f"{np.min(cosines):.4f}/{np.mean(cosines):.4f}  objective {np.mean(objectives):.2f}")


def _sk(estimator, a, alpha):
    estimator.fit(a)
    w = estimator.components_
    return w, sparse_encode(a, w, algorithm="lasso_cd", alpha=alpha, max_iter=1000)


if __name__ == "__main__":
    main()
