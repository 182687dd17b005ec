"""Statistics on per-prompt values (for the `compare` stage): paired and unpaired tests,
the paired effect size, a seeded bootstrap CI and multiple-comparison corrections.

Direction: `higher_is_better=False` (Self-BLEU, perplexity) flips the one-sided tests, so
"greater" always means "system A is better than system B".
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import stats


def cohens_dz(a: Sequence[float], b: Sequence[float]) -> float | None:
    """Paired Cohen's d_z: mean of the differences a - b over their sample SD (ddof=1)."""
    d = np.asarray(a, float) - np.asarray(b, float)
    if len(d) < 2:
        return None
    sd = d.std(ddof=1)
    # constant differences (e.g. 0 + a margin): the SD is rounding noise, d_z is undefined
    return None if sd <= 1e-12 * max(1.0, float(np.abs(d).max())) else float(d.mean() / sd)


def t_interval(values: Sequence[float], level: float = 0.95) -> tuple[float, float]:
    """Student's t interval of the mean of a few values (e.g. one per seed): mean ± t(n-1)
    s / sqrt(n); a point when they are all equal."""
    x = np.asarray(values, float)
    if len(x) < 2:
        raise ValueError("a t interval needs at least 2 values")
    half = stats.t.ppf(0.5 + level / 2, len(x) - 1) * x.std(ddof=1) / np.sqrt(len(x))
    return float(x.mean() - half), float(x.mean() + half)


def bootstrap_ci(a: Sequence[float], b: Sequence[float], resamples: int = 10_000,
                 level: float = 0.95, seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap CI of the mean paired difference a - b (prompts resampled)."""
    d = np.asarray(a, float) - np.asarray(b, float)
    (low,), (high,) = column_mean_cis(d[:, None], resamples, level, seed)
    return float(low), float(high)


def column_mean_cis(values, resamples: int = 10_000, level: float = 0.95,
                    seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Percentile bootstrap CIs of each column's mean of `values` (rows: prompts, resampled
    together for every column): (lows, highs)."""
    values = np.asarray(values, float)
    rng = np.random.default_rng(seed)
    means = values[rng.integers(0, len(values), (resamples, len(values)))].mean(axis=1)
    tail = (1 - level) / 2
    return np.quantile(means, tail, axis=0), np.quantile(means, 1 - tail, axis=0)


def compare(a: Sequence[float], b: Sequence[float], higher_is_better: bool = True,
            resamples: int = 10_000, seed: int = 0) -> dict:
    """Tests of "a is better than b" on paired per-prompt values."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    if a.shape != b.shape or len(a) < 2:
        raise ValueError(f"need two paired samples of equal length >= 2, got {a.shape}, {b.shape}")
    side = "greater" if higher_is_better else "less"
    differences = a - b
    wilcoxon = (stats.wilcoxon(a, b, alternative=side).pvalue
                if np.any(differences != 0) else 1.0)
    low, high = bootstrap_ci(a, b, resamples, seed=seed)
    return {
        "mean_a": float(a.mean()), "mean_b": float(b.mean()),
        "mean_difference": float(differences.mean()),
        "bootstrap_ci95": [low, high],
        "cohens_dz": cohens_dz(a, b),
        "cohens_dz_better": (None if cohens_dz(a, b) is None
                             else cohens_dz(a, b) * (1 if higher_is_better else -1)),
        "mann_whitney_p": float(stats.mannwhitneyu(a, b, alternative=side).pvalue),
        "wilcoxon_p": float(wilcoxon),
        "alternative": f"a {'>' if higher_is_better else '<'} b",
    }


def mean_above_p(differences: Sequence[float], threshold: float, resamples: int = 10_000,
                 seed: int = 0) -> float:
    """One-sided bootstrap p-value of "the mean difference is above `threshold`": the share
    of resampled means at or below it ((count + 1) / (resamples + 1)), the test that the
    percentile CI of `bootstrap_ci` inverts."""
    d = np.asarray(differences, float)
    rng = np.random.default_rng(seed)
    means = d[rng.integers(0, len(d), (resamples, len(d)))].mean(axis=1)
    return float((np.sum(means <= threshold) + 1) / (resamples + 1))


def signed_rank_p(differences: Sequence[float]) -> float:
    """One-sided Wilcoxon signed-rank p-value of "the differences are shifted above 0"
    (1.0 when every difference is 0)."""
    d = np.asarray(differences, float)
    return float(stats.wilcoxon(d, alternative="greater").pvalue) if np.any(d != 0) else 1.0


def bonferroni(pvalues: Sequence[float]) -> list[float]:
    m = len(pvalues)
    return [min(1.0, p * m) for p in pvalues]


def holm(pvalues: Sequence[float]) -> list[float]:
    """Holm's step-down adjusted p-values, in the input order."""
    m = len(pvalues)
    order = np.argsort(pvalues)
    adjusted = np.empty(m)
    running = 0.0
    for rank, index in enumerate(order):
        running = max(running, min(1.0, (m - rank) * pvalues[index]))
        adjusted[index] = running
    return adjusted.tolist()


# -- power of the paired one-sided test --------------------------------------------------
# The primary tests are Wilcoxon signed-rank tests; their power is taken as the paired
# t-test's, the usual planning approximation (the Wilcoxon test's efficiency relative to it
# is 3/π ≈ 0.955 for normal differences, and higher for heavy-tailed ones).

def paired_power(dz: float, n: int, alpha: float) -> float:
    """Power of the one-sided paired t-test at level alpha for true effect d_z with n pairs."""
    df = n - 1
    critical = stats.t.ppf(1 - alpha, df)
    return float(stats.nct.sf(critical, df, dz * np.sqrt(n)))


def minimum_detectable_dz(n: int, alpha: float, power: float = 0.8) -> float:
    """The smallest d_z the one-sided paired test detects with `power` at n pairs."""
    from scipy.optimize import brentq

    return float(brentq(lambda d: paired_power(d, n, alpha) - power, 1e-9, 50.0, xtol=1e-10))


def pairs_needed(dz: float | None, alpha: float, power: float = 0.8,
                 limit: int = 10_000_000) -> int | None:
    """The fewest pairs with which the one-sided paired test detects d_z with `power`;
    None when d_z is not in the tested direction (or needs more than `limit`)."""
    if dz is None or dz <= 0 or paired_power(dz, limit, alpha) < power:
        return None
    low, high = 2, 2
    while paired_power(dz, high, alpha) < power:
        low, high = high, high * 2
    while low < high:  # the smallest n in (low, high] with enough power
        middle = (low + high) // 2
        if paired_power(dz, middle, alpha) >= power:
            high = middle
        else:
            low = middle + 1
    return high


def sd_bootstrap_ci(differences: Sequence[float], resamples: int = 10_000, level: float = 0.95,
                    seed: int = 0) -> tuple[float, float] | None:
    """Percentile bootstrap CI of the SD of the paired differences (pairs resampled)."""
    d = np.asarray(differences, float)
    if len(d) < 3:
        return None
    rng = np.random.default_rng(seed)
    sd = d[rng.integers(0, len(d), (resamples, len(d)))].std(axis=1, ddof=1)
    tail = (1 - level) / 2
    return float(np.quantile(sd, tail)), float(np.quantile(sd, 1 - tail))


def dz_bootstrap_ci(differences: Sequence[float], resamples: int = 10_000, level: float = 0.95,
                    seed: int = 0) -> tuple[float, float] | None:
    """Percentile bootstrap CI of d_z = mean / SD of the paired differences (pairs
    resampled); None when the differences do not vary."""
    d = np.asarray(differences, float)
    if len(d) < 3 or d.std() == 0:
        return None
    rng = np.random.default_rng(seed)
    drawn = d[rng.integers(0, len(d), (resamples, len(d)))]
    sd = drawn.std(axis=1, ddof=1)
    values = np.divide(drawn.mean(axis=1), sd, out=np.zeros(resamples), where=sd > 0)
    tail = (1 - level) / 2
    return float(np.quantile(values, tail)), float(np.quantile(values, 1 - tail))
