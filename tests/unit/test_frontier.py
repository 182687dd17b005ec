"""Matched controls and power by design: the matched temperature by hand, the frontier
comparison by hand, and the split of a pass-rate difference's variance checked by
simulation."""

import numpy as np
import pytest

from polychromic import stats
from polychromic.frontier import above_frontier, frontier_points, matched_temperature
from polychromic.power import pass_rate_variance, prompts_for, sd_at


def test_the_matched_temperature_interpolates_between_the_bracketing_points():
    curve = [(0.5, 0.70), (0.9, 0.80), (0.7, 0.76), (1.1, 0.83), (1.3, 0.84)]
    # 0.78 lies between 0.76 (T 0.7) and 0.80 (T 0.9): halfway, T 0.8
    assert matched_temperature(curve, 0.78) == {"temperature": 0.8, "outside": None,
                                                "bracket": [0.7, 0.9]}
    assert matched_temperature(curve, 0.76)["temperature"] == 0.7
    assert matched_temperature(curve, 0.835) == {"temperature": 1.2, "outside": None,
                                                 "bracket": [1.1, 1.3]}
    assert matched_temperature(curve, 0.90) == {"temperature": 1.3, "outside": "above",
                                                "bracket": None}
    assert matched_temperature(curve, 0.60) == {"temperature": 0.5, "outside": "below",
                                                "bracket": None}


def test_a_non_monotone_curve_takes_the_first_crossing():
    curve = [(0.5, 0.70), (0.7, 0.80), (0.9, 0.75), (1.1, 0.85)]
    assert matched_temperature(curve, 0.78)["temperature"] == pytest.approx(0.66)
    with pytest.raises(ValueError):
        matched_temperature([(0.7, 0.8)], 0.8)


def point(x, y, low=None):
    return {"div": {"mean": x, "ci95": [x, x]},
            "pass": {"mean": y, "ci95": [y if low is None else low, y]}}


def test_a_point_above_the_frontier_and_whether_its_ci_clears_it():
    frontier = [point(0.70, 0.30), point(0.80, 0.20), point(0.90, 0.10)]
    # at diversity 0.85 the line is at 0.15
    assert above_frontier(point(0.85, 0.20, low=0.16), frontier, "div", "pass") == {
        "gap": pytest.approx(0.05), "clears": True}
    assert above_frontier(point(0.85, 0.20, low=0.12), frontier, "div", "pass")[
        "clears"] is False
    assert above_frontier(point(0.85, 0.10), frontier, "div", "pass")["gap"] == \
        pytest.approx(-0.05)
    assert above_frontier(point(0.95, 0.3), frontier, "div", "pass") == {"gap": None,
                                                                           "clears": None}


def test_frontier_points_are_means_with_bootstrap_cis():
    scores = [{"pass@1": 0.1, "semantic": 0.5}, {"pass@1": 0.3, "semantic": None},
              {"pass@1": 0.2, "semantic": 0.7}]
    (p,) = frontier_points([{"system": "baseline", "knob": "temperature", "value": 0.9,
                             "scores": scores}], ["pass@1", "semantic"], 2000, 0)
    assert p["system"] == "baseline" and p["value"] == 0.9
    assert p["pass@1"]["mean"] == pytest.approx(0.2)
    assert p["semantic"]["mean"] == pytest.approx(0.6)  # the undefined prompt left out
    assert list(p["pass@1"]["ci95"]) == list(stats.bootstrap_ci([0.1, 0.3, 0.2], [0, 0, 0],
                                                                2000, seed=0))


def test_the_variance_split_recovers_the_prompts_true_differences():
    """Prompts with true pass rates p_a, p_b; m draws each: the between-prompt part is the
    variance of p_a - p_b, and the SD at another m is the SD measured there."""
    rng = np.random.default_rng(0)
    prompts = 20_000
    p_a = rng.beta(1, 3, prompts)
    p_b = np.clip(p_a + rng.normal(0, 0.08, prompts), 0, 1)
    truth = np.var(p_a - p_b)
    variance = pass_rate_variance(rng.binomial(10, p_a), rng.binomial(10, p_b), 10)
    assert variance["between"] == pytest.approx(truth, rel=0.05)
    at_40 = (rng.binomial(40, p_a) - rng.binomial(40, p_b)) / 40
    assert sd_at(variance, 40) == pytest.approx(np.std(at_40, ddof=1), rel=0.03)
    assert sd_at(variance, 10) == pytest.approx(np.sqrt(variance["observed"]))


def test_prompts_for_a_raw_effect():
    assert prompts_for(0.01, 0.05, 0.05 / 3) == stats.pairs_needed(0.2, 0.05 / 3)
    assert prompts_for(0.01, 0.0, 0.05) == 2
