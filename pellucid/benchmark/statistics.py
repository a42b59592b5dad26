"""Statistics for comparing attribution methods over a benchmark.

Bootstrap confidence intervals, paired tests with Holm's correction, Friedman's test with the
Iman-Davenport F and the Nemenyi critical difference, following Demšar (2006), "Statistical
Comparisons of Classifiers over Multiple Data Sets", JMLR 7:1-30; and a sample-size estimate
for a paired t-test.

    from pellucid.benchmark.statistics import bootstrap_ci, pairwise_tests, friedman
    low, high = bootstrap_ci(per_input_scores)                 # 95% BCa CI of the mean
    table = pairwise_tests({"Saliency": s1, "IG": s2, "Random": s3})
    result = friedman(score_matrix)                            # (blocks, methods)
"""
from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Mapping
from itertools import combinations
from typing import NamedTuple

import numpy as np
import pandas as pd
from scipy import stats

__all__ = [
    "PAIRWISE_COLUMNS",
    "FriedmanResult",
    "bootstrap_ci",
    "friedman",
    "friedman_from_ranks",
    "holm",
    "inputs_needed",
    "nemenyi_cd",
    "paired_test",
    "pairwise_tests",
]

PAIRWISE_COLUMNS = ["method_a", "method_b", "n", "statistic", "p_value", "p_holm",
                    "significant", "shift", "median_difference", "difference_ci_low",
                    "difference_ci_high"]

# scipy >= 1.15 names the seed argument `rng`; older ones (setup.cfg allows 1.10) `random_state`.
_RNG_KEYWORD = "rng" if "rng" in inspect.signature(stats.bootstrap).parameters else "random_state"
_BATCH_ELEMENTS = 2**22   # resampled values held in memory at once (32 MiB of float64)
_MAX_INPUTS = 10**6       # inputs_needed gives up beyond this


# --- bootstrap confidence intervals -----------------------------------------------------------

def bootstrap_ci(scores, *, level: float = 0.95, method: str = "BCa", n_resamples: int = 2000,
                 seed: int = 0):
    """Bootstrap confidence interval of the mean score (Efron & Tibshirani, 1993).

    ``scores`` is 1-D (one score per input) -> ``(low, high)`` floats, or 2-D (rows are
    independent samples, e.g. simulated benchmarks) -> two arrays, vectorized along the last
    axis. NaNs are dropped; fewer than two finite values give (nan, nan) and constant values v
    give (v, v), where scipy's BCa is undefined. ``method`` is "BCa" or "percentile".
    """
    return _bootstrap_interval(scores, _mean, level=level, method=method,
                               n_resamples=n_resamples, seed=seed)


def _mean(x, axis):
    return np.mean(x, axis=axis)


def _median(x, axis):
    return np.median(x, axis=axis)


def _bootstrap_interval(values, statistic: Callable, *, level: float, method: str,
                        n_resamples: int, seed: int):
    """``statistic``'s CI for a 1-D sample (two floats) or each row of a 2-D array (two arrays)."""
    if method.lower() not in ("bca", "percentile"):
        raise ValueError(f"method must be 'BCa' or 'percentile', got {method!r}")
    if not 0 < level < 1:
        raise ValueError(f"level must lie in (0, 1), got {level}")
    values = np.asarray(values, dtype=float)
    if values.ndim == 1:
        low, high = _interval_per_row(values[None], statistic, level, method, n_resamples, seed)
        return float(low[0]), float(high[0])
    if values.ndim == 2:
        return _interval_per_row(values, statistic, level, method, n_resamples, seed)
    raise ValueError(f"scores must be 1-D or 2-D, got shape {values.shape}")


def _interval_per_row(rows: np.ndarray, statistic, level, method, n_resamples, seed):
    """Rows without NaNs and not constant in one vectorized scipy call; the others one by one."""
    low, high = np.full(len(rows), np.nan), np.full(len(rows), np.nan)
    finite = np.isfinite(rows)
    regular = finite.all(axis=1) & (rows.shape[1] >= 2)
    if regular.any():
        regular[regular] = np.ptp(rows[regular], axis=1) > 0
    if regular.any():
        low[regular], high[regular] = _scipy_interval(rows[regular], statistic, level, method,
                                                      n_resamples, seed)
    for i in np.flatnonzero(~regular):
        sample = rows[i][finite[i]]
        if sample.size >= 2 and np.ptp(sample) == 0:
            low[i] = high[i] = sample[0]
        elif sample.size >= 2:
            (low[i],), (high[i],) = _scipy_interval(sample[None], statistic, level, method,
                                                    n_resamples, seed)
    return low, high


def _scipy_interval(rows: np.ndarray, statistic, level, method, n_resamples, seed):
    batch = max(1, min(n_resamples, _BATCH_ELEMENTS // rows.size))
    result = stats.bootstrap((rows,), statistic, n_resamples=n_resamples, batch=batch,
                             vectorized=True, axis=-1, confidence_level=level, method=method,
                             **{_RNG_KEYWORD: np.random.default_rng(seed)})
    return result.confidence_interval.low, result.confidence_interval.high


# --- paired tests and Holm's correction -------------------------------------------------------

def holm(p_values) -> np.ndarray:
    """Holm-Bonferroni adjusted p-values (Holm, 1979; Demšar, 2006, Sec. 3.2.2).

    With the m non-NaN p-values sorted ascending, p_(i) becomes
    max_{j<=i} min(1, (m - j + 1) p_(j)); NaNs stay NaN. Written here because scipy's
    ``false_discovery_control`` offers only the Benjamini-Hochberg/-Yekutieli corrections.
    """
    p = np.asarray(p_values, dtype=float)
    adjusted = np.full(p.shape, np.nan)
    present = ~np.isnan(p)
    m = int(present.sum())
    order = np.argsort(p[present], kind="stable")
    stepped = np.maximum.accumulate((m - np.arange(m)) * p[present][order])
    in_place = np.empty(m)
    in_place[order] = np.minimum(stepped, 1.0)
    adjusted[present] = in_place
    return adjusted


def _finite_pairs(a, b) -> tuple[np.ndarray, np.ndarray]:
    """``a`` and ``b`` (same shape, one score per input) where both are finite."""
    a, b = np.asarray(a, dtype=float).ravel(), np.asarray(b, dtype=float).ravel()
    if a.shape != b.shape:
        raise ValueError(f"paired scores need the same number of inputs: {a.size} != {b.size}")
    both = np.isfinite(a) & np.isfinite(b)
    return a[both], b[both]


def paired_test(a, b, *, test: str = "wilcoxon") -> tuple[float, float]:
    """Two-sided paired test of ``a`` against ``b`` over inputs where both are finite.

    "wilcoxon": signed-rank test on d_i = a_i - b_i, zero differences dropped (Wilcoxon, 1945;
    Demšar, 2006, Sec. 3.1.3); "ttest": t = mean(d) / (sd(d) / sqrt(n)). Returns
    ``(statistic, p_value)``; all differences zero -> (0.0, 1.0), no pairs -> (nan, nan).
    """
    if test not in ("wilcoxon", "ttest"):
        raise ValueError(f"test must be 'wilcoxon' or 'ttest', got {test!r}")
    a, b = _finite_pairs(a, b)
    if a.size == 0 or (test == "ttest" and a.size < 2 and np.any(a != b)):
        return math.nan, math.nan
    if np.all(a == b):
        return 0.0, 1.0
    result = stats.wilcoxon(a - b) if test == "wilcoxon" else stats.ttest_rel(a, b)
    return float(result.statistic), float(result.pvalue)


def location_shift(a, b, *, test: str = "wilcoxon") -> float:
    """The estimate of ``a - b`` that the test itself decides on, so that its sign says which
    method a significant test favours: the mean difference for the t-test, the Hodges-Lehmann
    estimate (median of the Walsh averages (d_i + d_j) / 2, i <= j) for the signed-rank test.
    (The median of the differences can disagree with both: 55 differences of -0.01 and 45 of
    +0.3 have median -0.01, mean +0.13 and a signed-rank test favouring a.)"""
    a, b = _finite_pairs(a, b)
    d = a - b
    if d.size == 0:
        return math.nan
    if test == "ttest":
        return float(d.mean())
    i, j = np.triu_indices(d.size)
    return float(np.median((d[i] + d[j]) / 2))


def pairwise_tests(scores: Mapping[str, np.ndarray], *, test: str = "wilcoxon",
                   level: float = 0.95, alpha: float = 0.05, seed: int = 0) -> pd.DataFrame:
    """Paired test of every unordered pair of methods, Holm-corrected over the pairs.

    One row per pair in the mapping's order with the columns of ``PAIRWISE_COLUMNS``:
    ``p_holm`` is Holm's adjustment over all pairs of this call, ``significant`` is
    p_holm < alpha, ``shift`` is the test's own estimate of a - b (:func:`location_shift`: its
    sign tells which method a significant test favours), and the difference CI is a
    percentile bootstrap of the median of a - b at ``level``, seeded with ``seed`` for every
    pair (Demšar, 2006, Sec. 3.2.2).
    """
    pairs = list(combinations(scores, 2))
    differences, rows = [], []
    for name_a, name_b in pairs:
        a, b = _finite_pairs(scores[name_a], scores[name_b])
        statistic, p_value = paired_test(a, b, test=test)
        differences.append(a - b)
        rows.append({"method_a": name_a, "method_b": name_b, "n": a.size,
                     "statistic": statistic, "p_value": p_value,
                     "shift": location_shift(a, b, test=test),
                     "median_difference": float(np.median(a - b)) if a.size else math.nan})
    # one vectorized bootstrap for all pairs: rows padded with NaN, which the bootstrap drops
    padded = np.full((len(pairs), max((d.size for d in differences), default=0)), np.nan)
    for row, difference in zip(padded, differences):
        row[: difference.size] = difference
    low, high = _bootstrap_interval(padded, _median, level=level, method="percentile",
                                    n_resamples=2000, seed=seed)
    table = pd.DataFrame(rows, columns=PAIRWISE_COLUMNS)
    table["difference_ci_low"], table["difference_ci_high"] = low, high
    table["p_holm"] = holm(table["p_value"].to_numpy(dtype=float))
    table["significant"] = table["p_holm"] < alpha
    return table


# --- Friedman test and Nemenyi critical difference --------------------------------------------

class FriedmanResult(NamedTuple):
    """Friedman's test over ``n_blocks`` blocks and ``k`` methods (Demšar, 2006, Sec. 3.2.2)."""
    average_ranks: np.ndarray   # (k,), rank 1 = best
    chi2: float                 # Friedman's chi^2_F
    f_statistic: float          # Iman-Davenport F_F
    p_value: float              # of F_F with (k-1, (k-1)(N-1)) degrees of freedom
    n_blocks: int
    k: int


def friedman(score_matrix, *, higher_is_better: bool = True) -> FriedmanResult:
    """Friedman's test on a (n_blocks, k) score matrix (Friedman, 1937; Demšar, 2006, Sec. 3.2.2).

    A block is one (dataset, metric) or one input, a column one method. Methods are ranked
    within each block (rank 1 = best, ties averaged), then ``friedman_from_ranks`` applies.
    Unlike ``scipy.stats.friedmanchisquare`` no tie correction is applied, as in Demšar's paper.
    """
    scores = np.asarray(score_matrix, dtype=float)
    if scores.ndim != 2:
        raise ValueError(f"score_matrix must be 2-D (n_blocks, k), got shape {scores.shape}")
    if not np.isfinite(scores).all():
        raise ValueError("score_matrix has NaN or infinite scores: drop those blocks first")
    ranks = stats.rankdata(-scores if higher_is_better else scores, axis=1)
    return friedman_from_ranks(ranks.mean(axis=0), scores.shape[0])


def friedman_from_ranks(average_ranks, n_blocks: int) -> FriedmanResult:
    """Friedman's statistics from the average ranks R_j of k methods over N blocks.

    chi^2_F = 12N / (k(k+1)) [sum_j R_j^2 - k(k+1)^2 / 4];
    F_F = (N-1) chi^2_F / (N(k-1) - chi^2_F) (Iman & Davenport, 1980), whose p-value comes
    from the F distribution with (k-1, (k-1)(N-1)) degrees of freedom (Demšar, 2006, Sec. 3.2.2).
    """
    ranks = np.asarray(average_ranks, dtype=float).ravel()
    k, n = ranks.size, int(n_blocks)
    if k < 2 or n < 2:
        raise ValueError(f"Friedman's test needs k >= 2 methods and N >= 2 blocks, got {k}, {n}")
    chi2 = 12 * n / (k * (k + 1)) * (np.sum(ranks**2) - k * (k + 1) ** 2 / 4)
    chi2 = max(float(chi2), 0.0)
    denominator = n * (k - 1) - chi2
    if denominator <= 1e-12 * n * (k - 1):   # every block ranks the methods identically
        f_statistic = math.inf
    else:
        f_statistic = (n - 1) * chi2 / denominator
    p_value = float(stats.f.sf(f_statistic, k - 1, (k - 1) * (n - 1)))
    return FriedmanResult(ranks, chi2, float(f_statistic), p_value, n, k)


def nemenyi_cd(k: int, n_blocks: int, *, alpha: float = 0.05) -> float:
    """Nemenyi critical difference of average ranks (Nemenyi, 1963; Demšar, 2006, Sec. 3.2.2).

    CD = q_alpha sqrt(k(k+1) / (6N)) with q_alpha the studentized range quantile
    ``studentized_range.ppf(1 - alpha, k, inf) / sqrt(2)`` (k = 4, alpha = 0.05: 2.569).
    """
    if k < 2 or n_blocks < 1:
        raise ValueError(f"need k >= 2 methods and N >= 1 blocks, got {k}, {n_blocks}")
    q_alpha = stats.studentized_range.ppf(1 - alpha, k, np.inf) / math.sqrt(2)
    return float(q_alpha * math.sqrt(k * (k + 1) / (6 * n_blocks)))


# --- sample size --------------------------------------------------------------------------------

def inputs_needed(a, b, *, power: float = 0.8, alpha: float = 0.05,
                  test: str = "ttest") -> int | None:
    """Inputs a paired comparison needs to detect the pilot's mean difference with ``power``.

    From pilot scores, d = mean(a - b) / sd(a - b); the smallest n whose two-sided paired
    t-test at ``alpha`` has power P(|T| > t_{1-alpha/2, n-1}) >= ``power``, with T noncentral t
    of n - 1 degrees of freedom and noncentrality d sqrt(n) (Cohen, 1988, ch. 2). "wilcoxon"
    scales that n by 1 / ARE = pi / 3 (Lehmann, 1975; normal differences). A constant nonzero
    difference gives 2; None with fewer than two finite pairs, a mean difference of 0 or not
    finite, or more than 10**6 inputs needed.
    """
    if test not in ("ttest", "wilcoxon"):
        raise ValueError(f"test must be 'ttest' or 'wilcoxon', got {test!r}")
    if not (0 < power < 1 and 0 < alpha < 1):
        raise ValueError(f"power and alpha must lie in (0, 1), got {power}, {alpha}")
    a, b = _finite_pairs(a, b)
    if a.size < 2:
        return None
    difference = a - b
    mean = float(np.mean(difference))
    if mean == 0 or not math.isfinite(mean):
        return None
    sd = float(np.std(difference, ddof=1))
    n = 2 if sd == 0 else _smallest_n(lambda m: _t_test_power(m, abs(mean) / sd, alpha) >= power)
    if n is not None and test == "wilcoxon":
        n = math.ceil(n * math.pi / 3)
    return n if n is not None and n <= _MAX_INPUTS else None


def _t_test_power(n: int, effect_size: float, alpha: float) -> float:
    """Power of a two-sided one-sample (paired) t-test with n inputs and effect size d."""
    df, noncentrality = n - 1, effect_size * math.sqrt(n)
    critical = stats.t.ppf(1 - alpha / 2, df)
    return float(stats.nct.sf(critical, df, noncentrality)
                 + stats.nct.cdf(-critical, df, noncentrality))


def _smallest_n(enough: Callable[[int], bool]) -> int | None:
    """Smallest n in [2, 10**6] with ``enough(n)``, for ``enough`` monotone in n; else None."""
    high = 2
    while not enough(high):
        if high >= _MAX_INPUTS:
            return None
        high = min(2 * high, _MAX_INPUTS)
    low = high // 2   # enough(low) is False, or low < 2
    while high - low > 1:
        middle = (low + high) // 2
        low, high = (low, middle) if enough(middle) else (middle, high)
    return max(high, 2)
