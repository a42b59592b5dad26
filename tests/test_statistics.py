"""Statistics for comparing attribution methods: bootstrap coverage, size and power of the
Holm-corrected paired tests, Demšar's (2006) worked Friedman/Nemenyi example, sample size."""
from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
from scipy import stats

from pellucid.benchmark.statistics import (
    PAIRWISE_COLUMNS,
    bootstrap_ci,
    friedman,
    friedman_from_ranks,
    holm,
    inputs_needed,
    nemenyi_cd,
    paired_test,
    pairwise_tests,
)

N_SIMULATIONS = 500


@pytest.fixture
def no_warnings():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        yield


# --- bootstrap_ci --------------------------------------------------------------------------------

@pytest.mark.parametrize("method", ["BCa", "percentile"])
def test_bootstrap_ci_covers_the_true_mean_95_percent_of_the_time(method):
    """500 simulated benchmarks of 200 skewed per-input scores (gamma, shape 2, mean 2).

    n = 200 rather than 30: bootstrap intervals use the plug-in variance and normal quantiles,
    so their coverage is about P(|t_{n-1}| < 1.96 sqrt((n-1)/n)): 0.936 at n = 30 (too near the
    0.93 bound for 500 simulations, whose standard error is 0.01), 0.948 at n = 200.
    """
    rng = np.random.default_rng(0)
    true_mean = 2.0
    scores = rng.gamma(shape=true_mean, scale=1.0, size=(N_SIMULATIONS, 200))
    low, high = bootstrap_ci(scores, method=method, seed=1)
    assert low.shape == high.shape == (N_SIMULATIONS,)
    coverage = np.mean((low <= true_mean) & (true_mean <= high))
    assert 0.93 <= coverage <= 0.97


def test_bootstrap_ci_level_sets_the_width():
    scores = np.random.default_rng(1).normal(size=(N_SIMULATIONS, 200))
    low, high = bootstrap_ci(scores, level=0.5)
    assert 0.45 <= np.mean((low <= 0) & (0 <= high)) <= 0.55


@pytest.mark.parametrize("scores", [[], [1.0], [np.nan, 2.0, np.inf], [np.nan, np.nan]])
def test_bootstrap_ci_needs_two_finite_values(scores, no_warnings):
    assert np.isnan(bootstrap_ci(scores)).all()


@pytest.mark.parametrize("method", ["BCa", "percentile"])
def test_bootstrap_ci_constant_scores_give_a_point(method, no_warnings):
    assert bootstrap_ci([0.25, 0.25, np.nan, 0.25], method=method) == (0.25, 0.25)


def test_bootstrap_ci_drops_nans_and_is_seeded():
    scores = np.random.default_rng(2).normal(size=40)
    with_nans = np.concatenate([scores[:20], [np.nan, np.nan], scores[20:]])
    assert bootstrap_ci(with_nans, seed=3) == bootstrap_ci(scores, seed=3)
    assert bootstrap_ci(scores, seed=3) != bootstrap_ci(scores, seed=4)
    low, high = bootstrap_ci(scores)
    assert low < scores.mean() < high


def test_bootstrap_ci_rows_match_one_dimensional_calls(no_warnings):
    """Regular rows go through one vectorized scipy call, NaN and constant rows one by one."""
    rng = np.random.default_rng(3)
    rows = rng.normal(size=(4, 30))
    rows[1, :5] = np.nan
    rows[2] = 0.5
    low, high = bootstrap_ci(rows, seed=7)
    for row, lo, hi in zip(rows, low, high):
        np.testing.assert_allclose((lo, hi), bootstrap_ci(row, seed=7), rtol=1e-12)
    assert low[2] == high[2] == 0.5


def test_bootstrap_ci_rejects_unknown_method():
    with pytest.raises(ValueError, match="method"):
        bootstrap_ci([1.0, 2.0, 3.0], method="basic")


# --- holm, paired_test, pairwise_tests ------------------------------------------------------------

def test_holm_hand_computed():
    # sorted 0.005, 0.01, 0.03, 0.04 -> 4*0.005, 3*0.01, 2*0.03, max(0.06, 1*0.04)
    adjusted = holm([0.01, np.nan, 0.04, 0.03, 0.005])
    np.testing.assert_allclose(adjusted, [0.03, np.nan, 0.06, 0.06, 0.02])
    np.testing.assert_allclose(holm([0.6, 0.9]), [1.0, 1.0])   # 1.2 capped, then monotone
    np.testing.assert_allclose(holm([0.04]), [0.04])
    assert holm([]).shape == (0,)


@pytest.mark.parametrize("test", ["wilcoxon", "ttest"])
def test_paired_test_all_zero_differences(test, no_warnings):
    scores = np.array([0.1, 0.5, 0.9, np.nan])
    assert paired_test(scores, scores.copy(), test=test) == (0.0, 1.0)


@pytest.mark.parametrize("test, scipy_test", [("wilcoxon", lambda a, b: stats.wilcoxon(a - b)),
                                              ("ttest", stats.ttest_rel)])
def test_paired_test_uses_only_inputs_where_both_are_finite(test, scipy_test):
    rng = np.random.default_rng(4)
    a, b = rng.normal(size=25), rng.normal(size=25)
    a_gaps, b_gaps = a.copy(), b.copy()
    a_gaps[3], b_gaps[10] = np.nan, np.inf
    keep = np.ones(25, bool)
    keep[[3, 10]] = False
    expected = scipy_test(a[keep], b[keep])
    assert paired_test(a_gaps, b_gaps, test=test) == pytest.approx(
        (expected.statistic, expected.pvalue))


def test_pairwise_tests_table():
    rng = np.random.default_rng(5)
    base = rng.normal(size=40)
    scores = {"IG": base + 1.0 + 0.1 * rng.normal(size=40), "Saliency": base,
              "Random": base + 0.1 * rng.normal(size=40)}
    table = pairwise_tests(scores, seed=2)
    assert list(table.columns) == PAIRWISE_COLUMNS
    assert list(zip(table.method_a, table.method_b)) == [("IG", "Saliency"), ("IG", "Random"),
                                                          ("Saliency", "Random")]
    assert (table.n == 40).all()
    np.testing.assert_allclose(table.p_holm, holm(table.p_value))
    assert table.significant.tolist() == [True, True, False]
    assert table.median_difference[0] == pytest.approx(
        np.median(scores["IG"] - scores["Saliency"]))
    assert (table.difference_ci_low < table.median_difference).all()
    assert (table.median_difference < table.difference_ci_high).all()
    assert 0.9 < table.difference_ci_low[0] and table.difference_ci_high[0] < 1.1
    assert table.equals(pairwise_tests(scores, seed=2))
    alone = pairwise_tests({"IG": scores["IG"], "Saliency": scores["Saliency"]}, seed=2)
    assert alone.difference_ci_low[0] == table.difference_ci_low[0]   # same seed for each pair
    assert alone.difference_ci_high[0] == table.difference_ci_high[0]


def test_pairwise_tests_with_missing_scores_and_a_single_method(no_warnings):
    rng = np.random.default_rng(12)
    scores = {"A": rng.normal(size=20), "B": rng.normal(size=20), "C": np.full(20, np.nan)}
    scores["A"][:4] = np.nan
    table = pairwise_tests(scores)
    assert table.n.tolist() == [16, 0, 0]
    assert table.difference_ci_low[0] < table.median_difference[0] < table.difference_ci_high[0]
    assert table.iloc[1:][["p_value", "p_holm", "difference_ci_low"]].isna().all().all()
    assert not table.significant.any()
    single = pairwise_tests({"A": scores["A"]})
    assert single.empty and list(single.columns) == PAIRWISE_COLUMNS


def test_holm_keeps_the_false_positive_rate_at_alpha():
    """Size: 3 methods = one shared base score + independent noise each, 20 inputs, so all
    differ only by noise; a simulation counts as a false positive when any of the 3 pairs is
    significant (family-wise error). The true rate is about 0.041 (20000 simulations), so the
    5% bound is about one Monte Carlo standard error (0.009) away; the seed is fixed.
    Uncorrected p-values give about 0.12 on the same data, which the bound rejects."""
    rng = np.random.default_rng(6)
    any_significant = any_raw = 0
    for _ in range(N_SIMULATIONS):
        base = rng.normal(size=20)
        table = pairwise_tests({name: base + rng.normal(size=20) for name in "ABC"})
        any_significant += table.significant.any()
        any_raw += (table.p_value < 0.05).any()
    assert any_significant / N_SIMULATIONS <= 0.05
    assert any_raw / N_SIMULATIONS > 0.05


def test_wilcoxon_detects_a_half_standard_deviation_shift():
    """Power: a = b + noise + 0.5, noise sd 1 (the sd of the paired difference), 50 inputs;
    the Wilcoxon test's power there is about 0.925 (normal differences)."""
    rng = np.random.default_rng(7)
    detected = 0
    for _ in range(N_SIMULATIONS):
        b = rng.normal(size=50)
        a = b + rng.normal(size=50) + 0.5
        detected += paired_test(a, b, test="wilcoxon")[1] < 0.05
    assert detected / N_SIMULATIONS > 0.90


# --- Friedman and Nemenyi -----------------------------------------------------------------------

def test_demsar_worked_example():
    """Demšar (2006), Sec. 3.2.2: four methods on N = 14 data sets, average ranks 3.143, 2.000,
    2.893, 1.964 give chi^2_F = 9.28, F_F = 3.69 and CD = 1.25 at alpha = 0.05. The printed
    ranks are tested, not the paper's Table 6 scores, which do not reproduce them exactly."""
    result = friedman_from_ranks([3.143, 2.000, 2.893, 1.964], 14)
    assert round(result.chi2, 2) == 9.28
    assert round(result.f_statistic, 2) == 3.69
    assert (result.n_blocks, result.k) == (14, 4)
    # F_F(3, 39) critical value at 0.05 is 2.85 < 3.69: the null hypothesis is rejected
    assert result.p_value == pytest.approx(stats.f.sf(result.f_statistic, 3, 39))
    assert 0.01 < result.p_value < 0.05
    assert round(nemenyi_cd(4, 14), 2) == 1.25
    assert round(nemenyi_cd(4, 14) / math.sqrt(4 * 5 / (6 * 14)), 3) == 2.569


def test_friedman_matches_scipy_without_ties():
    scores = np.random.default_rng(8).normal(size=(10, 4))   # continuous: no ties
    result = friedman(scores)
    assert result.chi2 == pytest.approx(stats.friedmanchisquare(*scores.T).statistic)
    assert (result.n_blocks, result.k) == (10, 4)
    ranks = stats.rankdata(-scores, axis=1)
    np.testing.assert_allclose(result.average_ranks, ranks.mean(axis=0))
    from_ranks = friedman_from_ranks(ranks.mean(axis=0), 10)
    assert (result.chi2, result.f_statistic, result.p_value) == pytest.approx(
        (from_ranks.chi2, from_ranks.f_statistic, from_ranks.p_value))


def test_friedman_rank_one_is_best_and_direction_reverses():
    scores = np.array([[0.9, 0.5, 0.1], [0.8, 0.6, 0.2], [0.7, 0.4, 0.3], [0.9, 0.2, 0.5]])
    higher = friedman(scores)
    lower = friedman(scores, higher_is_better=False)
    np.testing.assert_allclose(higher.average_ranks, [1.0, 2.25, 2.75])
    np.testing.assert_allclose(lower.average_ranks, 4 - higher.average_ranks)
    assert lower.chi2 == pytest.approx(higher.chi2)


def test_friedman_ties_are_averaged_and_identical_rankings_are_handled(no_warnings):
    tied = friedman([[1.0, 1.0, 0.0], [2.0, 2.0, 0.0]])
    np.testing.assert_allclose(tied.average_ranks, [1.5, 1.5, 3.0])
    agree = friedman(np.tile([3.0, 2.0, 1.0], (5, 1)))
    assert agree.chi2 == pytest.approx(5 * 2) and agree.f_statistic == math.inf
    assert agree.p_value == 0.0
    none = friedman_from_ranks([2.0, 2.0, 2.0], 5)
    assert none.chi2 == 0.0 and none.p_value == pytest.approx(1.0)


def test_friedman_rejects_missing_scores():
    with pytest.raises(ValueError, match="NaN"):
        friedman([[1.0, np.nan], [1.0, 2.0]])


def test_nemenyi_cd_shrinks_with_blocks_and_grows_with_stricter_alpha():
    assert nemenyi_cd(4, 56) == pytest.approx(nemenyi_cd(4, 14) / 2)
    assert nemenyi_cd(4, 14, alpha=0.10) < nemenyi_cd(4, 14) < nemenyi_cd(4, 14, alpha=0.01)


# --- inputs_needed ------------------------------------------------------------------------------

def pilot_with_effect_size(d: float, n: int = 200, seed: int = 9):
    """Pilot scores whose paired difference has mean d and sd 1 exactly."""
    rng = np.random.default_rng(seed)
    b = rng.normal(size=n)
    noise = rng.normal(size=n)
    return b + (noise - noise.mean()) / noise.std(ddof=1) + d, b


def test_inputs_needed_matches_the_textbook_and_the_simulated_power():
    """d = 0.5, power 0.8, two-sided alpha 0.05 paired t-test: n = 34 (Cohen, 1988; G*Power).
    At that n, 4000 simulated paired t-tests reject in about 80% of cases."""
    n = inputs_needed(*pilot_with_effect_size(0.5))
    assert 32 <= n <= 36
    differences = np.random.default_rng(10).normal(0.5, 1.0, size=(4000, n))
    rejected = stats.ttest_1samp(differences, 0.0, axis=1).pvalue < 0.05
    assert abs(rejected.mean() - 0.8) < 0.03
    fewer = stats.ttest_1samp(differences[:, : n - 4], 0.0, axis=1).pvalue < 0.05
    assert fewer.mean() < 0.8


def test_inputs_needed_wilcoxon_reaches_the_power():
    n = inputs_needed(*pilot_with_effect_size(0.5), test="wilcoxon")
    assert n == math.ceil(34 * math.pi / 3)
    differences = np.random.default_rng(11).normal(0.5, 1.0, size=(4000, n))
    assert abs(np.mean(stats.wilcoxon(differences, axis=1).pvalue < 0.05) - 0.8) < 0.03


def test_inputs_needed_edge_cases(no_warnings):
    a, b = pilot_with_effect_size(0.5)
    assert inputs_needed(b, a) == inputs_needed(a, b)             # sign does not matter
    assert inputs_needed(a, b, power=0.9) > inputs_needed(a, b)
    assert inputs_needed(b, b) is None                           # no difference
    assert inputs_needed(*pilot_with_effect_size(0.0)) is None
    assert inputs_needed(*pilot_with_effect_size(1e-4)) is None  # beyond 10**6 inputs
    assert inputs_needed([1.0, 2.0, 3.0], [0.0, 1.0, 2.0]) == 2  # constant difference
    assert inputs_needed([1.0, np.nan], [0.0, 1.0]) is None      # one usable pair


def test_the_direction_of_a_significant_pair_is_the_test_s_own():
    """55 differences of -0.01 and 45 of +0.3: the median difference is -0.01, but the mean
    (+0.13) and the signed-rank test favour a; ``shift`` follows the test."""
    b = np.zeros(100)
    a = np.r_[np.full(55, -0.01), np.full(45, 0.3)]
    for test, expected in (("wilcoxon", 0.145), ("ttest", 0.1295)):
        table = pairwise_tests({"A": a, "Random": b}, test=test)
        assert table.significant[0] and table.median_difference[0] == pytest.approx(-0.01)
        assert table["shift"][0] == pytest.approx(expected, abs=5e-3)
