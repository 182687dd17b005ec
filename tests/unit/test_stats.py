"""Statistics against scipy, textbook values and hand-computed families."""

import numpy as np
import pytest
from scipy import stats as scipy_stats

from polychromic import stats


def test_holm_and_bonferroni_on_a_hand_family():
    p = [0.01, 0.04, 0.03, 0.005]
    # sorted: 0.005*4=0.02, 0.01*3=0.03, 0.03*2=0.06, 0.04*1=0.04 -> step-down max -> 0.06
    assert stats.holm(p) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert stats.bonferroni(p) == pytest.approx([0.04, 0.16, 0.12, 0.02])
    assert stats.bonferroni([0.5, 0.6]) == [1.0, 1.0]


def test_cohens_dz_by_hand():
    a, b = [3.0, 5.0, 4.0, 6.0], [1.0, 2.0, 2.0, 3.0]  # differences 2, 3, 2, 3
    assert stats.cohens_dz(a, b) == pytest.approx(2.5 / np.std([2, 3, 2, 3], ddof=1))
    assert stats.cohens_dz([1.0, 2.0], [0.0, 1.0]) is None  # constant difference


def test_compare_matches_scipy_and_respects_direction():
    rng = np.random.default_rng(0)
    b = rng.normal(0.5, 0.1, 40)
    a = b + rng.normal(0.03, 0.05, 40)
    result = stats.compare(a, b)
    assert result["wilcoxon_p"] == pytest.approx(
        scipy_stats.wilcoxon(a, b, alternative="greater").pvalue)
    assert result["mann_whitney_p"] == pytest.approx(
        scipy_stats.mannwhitneyu(a, b, alternative="greater").pvalue)
    low, high = result["bootstrap_ci95"]
    assert low < result["mean_difference"] < high
    # lower is better (e.g. Self-BLEU): "a better" now means a smaller
    lower = stats.compare(a, b, higher_is_better=False)
    assert lower["wilcoxon_p"] == pytest.approx(
        scipy_stats.wilcoxon(a, b, alternative="less").pvalue)
    assert lower["wilcoxon_p"] > 0.5 > result["wilcoxon_p"]


def test_bootstrap_ci_is_seeded_and_covers_a_constant_shift():
    a, b = [1.0, 2.0, 3.0, 4.0], [0.5, 1.5, 2.5, 3.5]
    assert stats.bootstrap_ci(a, b) == pytest.approx((0.5, 0.5))
    x = np.arange(20.0)
    assert stats.bootstrap_ci(x, x[::-1], seed=3) == stats.bootstrap_ci(x, x[::-1], seed=3)


def test_compare_rejects_unpaired_input():
    with pytest.raises(ValueError):
        stats.compare([1.0, 2.0], [1.0])


def test_column_mean_cis_are_each_columns_bootstrap_ci():
    rng = np.random.default_rng(3)
    values = rng.normal(size=(25, 3))
    lows, highs = stats.column_mean_cis(values, resamples=2000, seed=5)
    for j in range(3):  # the same draws as the paired bootstrap of that column against zero
        assert (lows[j], highs[j]) == pytest.approx(
            stats.bootstrap_ci(values[:, j], np.zeros(25), resamples=2000, seed=5))


def test_cohens_dz_of_constant_differences_is_undefined():
    """Identical systems compared with a margin: every shifted difference is the same float,
    whose SD is rounding noise (it gave d_z 4e15 in a real run)."""
    shifted = np.zeros(30) + 0.0037143243793770447
    assert stats.cohens_dz(shifted, np.zeros(30)) is None
    assert stats.cohens_dz([0.1, 0.1, 0.1], [0.0, 0.0, 0.0]) is None
    assert stats.cohens_dz([0.1, 0.2, 0.4], [0.0, 0.0, 0.0]) == pytest.approx(
        np.mean([0.1, 0.2, 0.4]) / np.std([0.1, 0.2, 0.4], ddof=1))
