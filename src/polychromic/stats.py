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
    return None if sd == 0 else float(d.mean() / sd)


def bootstrap_ci(a: Sequence[float], b: Sequence[float], resamples: int = 10_000,
                 level: float = 0.95, seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap CI of the mean paired difference a - b (prompts resampled)."""
    d = np.asarray(a, float) - np.asarray(b, float)
    rng = np.random.default_rng(seed)
    means = d[rng.integers(0, len(d), (resamples, len(d)))].mean(axis=1)
    tail = (1 - level) / 2
    return float(np.quantile(means, tail)), float(np.quantile(means, 1 - tail))


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
        "mann_whitney_p": float(stats.mannwhitneyu(a, b, alternative=side).pvalue),
        "wilcoxon_p": float(wilcoxon),
        "alternative": f"a {'>' if higher_is_better else '<'} b",
    }


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
