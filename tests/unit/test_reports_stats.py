"""Report statistics on cases with known answers."""

from __future__ import annotations

import numpy as np
import pytest

from reports import stats


def test_bootstrap_mean_ci_brackets_mean_and_is_seeded():
    values = np.random.default_rng(1).normal(5.0, 1.0, size=200)
    low, high = stats.bootstrap_mean_ci(values, seed=3)
    assert low < values.mean() < high
    # The standard error is ~1/sqrt(200) = 0.07, so a 95% interval is about 0.28 wide.
    assert 0.15 < high - low < 0.45
    assert stats.bootstrap_mean_ci(values, seed=3) == (low, high)
    assert np.isnan(stats.bootstrap_mean_ci([1.0])[0])


def test_constant_values_give_a_degenerate_interval():
    assert stats.bootstrap_mean_ci([0.5] * 7) == (0.5, 0.5)


def test_ratio_ci_contains_token_weighted_perplexity():
    nll = np.array([10.0, 40.0, 25.0, 33.0])
    tokens = np.array([10, 20, 20, 30])
    low, high = stats.bootstrap_ratio_ci(nll, tokens, transform=np.exp)
    point = np.exp(nll.sum() / tokens.sum())
    assert low <= point <= high
    assert low >= np.exp(1.0) - 1e-9 and high <= np.exp(2.0) + 1e-9  # per-document NLL/token lies in [1, 2]


def test_stratified_ci_is_macro_average():
    values = np.array([1.0] * 5 + [0.0] * 50)  # micro mean 0.09, macro mean 0.5
    groups = np.array(["a"] * 5 + ["b"] * 50)
    assert stats.stratified_bootstrap_ci(values, groups) == (0.5, 0.5)


def test_paired_zero_difference_has_p_one():
    a = np.array([0.3, 0.7, 1.0, 0.0, 0.5])
    assert stats.sign_flip_pvalue(a - a) == 1.0
    mean, low, high = stats.paired_bootstrap(a, a)
    assert (mean, low, high) == (0.0, 0.0, 0.0)


def test_paired_constant_shift_gives_the_shift():
    b = np.random.default_rng(0).random(30)
    mean, low, high = stats.paired_bootstrap(b + 0.25, b)
    assert mean == pytest.approx(0.25) and low == pytest.approx(0.25) and high == pytest.approx(0.25)
    # 30 positive differences: only the all-positive and all-negative patterns are as extreme.
    assert stats.sign_flip_pvalue(np.full(30, 0.25), n_perm=2000) == pytest.approx(1 / 2001)


def test_exact_sign_flip_pvalue():
    # n = 4, all differences +1: 2 of the 16 sign patterns reach |mean| = 1.
    assert stats.sign_flip_pvalue([1.0, 1.0, 1.0, 1.0]) == pytest.approx(2 / 16)
    # Differences (3, -1): patterns give |mean| in {1, 2, 2, 1}; observed 1 -> p = 1.
    assert stats.sign_flip_pvalue([3.0, -1.0]) == 1.0


def test_scaling_exponent_recovers_power_laws():
    x = np.array([256, 512, 1024, 2048, 4096])
    assert stats.scaling_exponent(x, 3e-6 * x**2.0)["exponent"] == pytest.approx(2.0)
    fit = stats.scaling_exponent(x, 0.5 * x)
    assert fit["exponent"] == pytest.approx(1.0) and fit["coefficient"] == pytest.approx(0.5) and fit["r2"] == 1.0
    noisy = stats.scaling_exponent(np.repeat(x, 3), np.repeat(x, 3) ** 1.5 * np.tile([0.9, 1.0, 1.1], 5))
    assert noisy["exponent"] == pytest.approx(1.5, abs=1e-9) and noisy["points"] == 15
    # Zeros (no memory measured) have no logarithm and are dropped; one distinct x cannot be fitted.
    assert stats.scaling_exponent([100, 200, 400], [0, 2, 4])["points"] == 2
    assert np.isnan(stats.scaling_exponent([100, 100], [1, 2])["exponent"])


def test_pareto_front_respects_direction():
    cost = [1.0, 2.0, 3.0, 4.0, np.nan]
    score = [0.2, 0.5, 0.4, 0.9, 1.0]
    assert stats.pareto_front(cost, score, higher_is_better=True).tolist() == [True, True, False, True, False]
    perplexity = [30.0, 20.0, 25.0, 10.0, 5.0]
    assert stats.pareto_front(cost, perplexity, higher_is_better=False).tolist() == [True, True, False, True, False]
    assert stats.pareto_front([1.0, 1.0], [0.5, 0.5]).tolist() == [True, True]  # ties do not dominate
