"""Statistics for reports: bootstrap intervals, paired tests, scaling exponents, Pareto frontiers.

Every random procedure takes a `seed` and uses its own `numpy.random.Generator`, so a report built
twice from the same store has the same numbers.
"""

from __future__ import annotations

from itertools import product

import numpy as np

LEVEL = 0.95
N_BOOT = 2000
N_PERM = 10000
EXACT_PERM_MAX_N = 14  # 2**14 sign patterns: enumerate exactly below this, sample above


def _quantiles(stats: np.ndarray, level: float) -> tuple[float, float]:
    tail = (1.0 - level) / 2.0
    low, high = np.quantile(stats, [tail, 1.0 - tail])
    return float(low), float(high)


def bootstrap_mean_ci(values, n_boot: int = N_BOOT, seed: int = 0, level: float = LEVEL) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean; `(nan, nan)` for fewer than 2 values.

    Args:
        values: `[n]` per-sample values.
        n_boot: bootstrap resamples.
        seed: seed of the resampling.
        level: coverage of the interval.

    """
    values = np.asarray(values, dtype=float)
    if len(values) < 2:
        return float("nan"), float("nan")
    index = np.random.default_rng(seed).integers(0, len(values), size=(n_boot, len(values)))
    return _quantiles(values[index].mean(axis=1), level)


def bootstrap_ratio_ci(
    numerator, denominator, n_boot: int = N_BOOT, seed: int = 0, level: float = LEVEL, transform=None
) -> tuple[float, float]:
    """Interval of `transform(sum(numerator) / sum(denominator))`, resampling whole items.

    This is the right interval for a token-weighted perplexity: resample documents, then
    `exp(sum NLL / sum tokens)` (`transform=np.exp`), so the point value lies inside its interval.
    """
    numerator = np.asarray(numerator, dtype=float)
    denominator = np.asarray(denominator, dtype=float)
    if len(numerator) < 2:
        return float("nan"), float("nan")
    index = np.random.default_rng(seed).integers(0, len(numerator), size=(n_boot, len(numerator)))
    with np.errstate(divide="ignore", invalid="ignore"):
        ratios = numerator[index].sum(axis=1) / denominator[index].sum(axis=1)
    ratios = transform(ratios) if transform is not None else ratios
    return _quantiles(ratios[np.isfinite(ratios)], level)


def stratified_bootstrap_ci(
    values, groups, n_boot: int = N_BOOT, seed: int = 0, level: float = LEVEL
) -> tuple[float, float]:
    """Interval of the unweighted mean of per-group means (LongBench's macro average), resampling within groups."""
    values = np.asarray(values, dtype=float)
    groups = np.asarray(groups)
    if len(values) < 2:
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    means = []
    for group in sorted(set(groups.tolist())):
        member = values[groups == group]
        means.append(member[rng.integers(0, len(member), size=(n_boot, len(member)))].mean(axis=1))
    return _quantiles(np.mean(means, axis=0), level)


def paired_bootstrap(a, b, n_boot: int = N_BOOT, seed: int = 0, level: float = LEVEL) -> tuple[float, float, float]:
    """Mean of `a - b` over paired items and its bootstrap interval (pairs resampled together).

    Args:
        a: `[n]` values of the method.
        b: `[n]` values of the baseline on the same items, same order.
        n_boot: bootstrap resamples.
        seed: seed of the resampling.
        level: coverage of the interval.

    """
    diff = np.asarray(a, dtype=float) - np.asarray(b, dtype=float)
    if len(diff) == 0:
        return float("nan"), float("nan"), float("nan")
    low, high = bootstrap_mean_ci(diff, n_boot=n_boot, seed=seed, level=level)
    return float(diff.mean()), low, high


def sign_flip_pvalue(diff, n_perm: int = N_PERM, seed: int = 0) -> float:
    """Two-sided p-value of mean(diff) = 0 under random sign flips of the paired differences.

    Exact (all 2**n sign patterns) for n <= EXACT_PERM_MAX_N; otherwise Monte Carlo with the
    `(hits + 1) / (n_perm + 1)` correction so p is never 0. All-zero differences give p = 1.
    """
    diff = np.asarray(diff, dtype=float)
    if len(diff) == 0:
        return float("nan")
    observed = abs(diff.mean())
    tolerance = 1e-12 * max(1.0, float(np.abs(diff).max()))  # ties count as extreme, whatever the rounding
    if len(diff) <= EXACT_PERM_MAX_N:
        signs = np.array(list(product((1.0, -1.0), repeat=len(diff))))
        return float(np.mean(np.abs(signs @ diff / len(diff)) >= observed - tolerance))
    signs = np.random.default_rng(seed).choice((1.0, -1.0), size=(n_perm, len(diff)))
    hits = int(np.sum(np.abs(signs @ diff / len(diff)) >= observed - tolerance))
    return (hits + 1) / (n_perm + 1)


def scaling_exponent(x, y) -> dict[str, float]:
    """Least-squares fit of `log y = log c + k log x`: the exponent k (1 linear, 2 quadratic).

    Non-positive or missing points are dropped (they have no logarithm). Returns `exponent`,
    `coefficient` (c), `r2` and `points`; the fit is NaN with fewer than two distinct x.
    """
    x = np.asarray(x, dtype=float)
    y = np.asarray(y, dtype=float)
    keep = np.isfinite(x) & np.isfinite(y) & (x > 0) & (y > 0)
    x, y = np.log(x[keep]), np.log(y[keep])
    out = {"exponent": float("nan"), "coefficient": float("nan"), "r2": float("nan"), "points": int(keep.sum())}
    if len(np.unique(x)) < 2:
        return out
    slope, intercept = np.polyfit(x, y, 1)
    residual = y - (slope * x + intercept)
    total = np.sum((y - y.mean()) ** 2)
    out.update(exponent=float(slope), coefficient=float(np.exp(intercept)))
    out["r2"] = float(1.0 - residual @ residual / total) if total > 0 else 1.0
    return out


def pareto_front(cost, score, higher_is_better: bool = True, chance: float | None = None) -> np.ndarray:
    """Boolean mask of the points no other point dominates (no more cost and a better or equal score, one strictly).

    Points with a missing cost or score are never on the front, nor, when `chance` is given, points that
    score no better than chance (a method that finds nothing is not a trade-off, however cheap).
    """
    cost = np.asarray(cost, dtype=float)
    score = np.asarray(score, dtype=float)
    above = (
        np.ones(score.shape, dtype=bool) if chance is None else (score > chance if higher_is_better else score < chance)
    )
    if not higher_is_better:
        score = -score
    valid = np.isfinite(cost) & np.isfinite(score) & above
    front = valid.copy()
    for i in np.flatnonzero(valid):
        others = valid & (cost <= cost[i]) & (score >= score[i]) & ((cost < cost[i]) | (score > score[i]))
        front[i] = not others.any()
    return front
