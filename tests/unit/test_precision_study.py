"""`polychromic precision`'s table against hand-computed numbers and scipy."""

import pytest
from scipy import stats as scipy_stats

from polychromic.commands.precision import compare_precisions, markdown, primary_metrics
from polychromic.config import UserError
from polychromic.stats import t_interval

MACHINE = {"device": "AMD EPYC", "native_bf16": False}


def arm(precision, seed, val_loss, semantic, machine=MACHINE):
    return {"domain": "qa", "method": "baseline", "precision": precision, "seed": seed,
            "machine": machine, "values": {"val_loss": val_loss, "semantic": semantic}}


def test_t_interval_is_scipys():
    values = [0.1, -0.3, 0.25, 0.05]
    expected = scipy_stats.t.interval(0.95, 3, loc=0.025,
                                      scale=scipy_stats.sem(values))
    assert t_interval(values) == pytest.approx(expected)
    assert t_interval([2.0, 2.0, 2.0]) == (2.0, 2.0)
    with pytest.raises(ValueError):
        t_interval([1.0])


def test_differences_are_paired_by_seed_and_judged_against_the_seed_spread():
    arms = [arm("fp32", 1, 2.0, 0.30), arm("fp32", 2, 2.2, 0.50), arm("fp32", 3, 2.1, 0.40),
            # val loss: +0.001 on every seed (CI excludes 0, far inside the 0.1 seed SD)
            arm("bf16", 1, 2.001, 0.60), arm("bf16", 2, 2.201, 0.80), arm("bf16", 3, 2.101, 0.71)]
    rows = {r["metric"]: r for r in compare_precisions(arms)}
    loss = rows["val_loss"]
    assert loss["seeds"] == [1, 2, 3] and loss["fp32_mean"] == pytest.approx(2.1)
    assert loss["fp32_seed_sd"] == pytest.approx(0.1)  # sqrt((0.01 + 0.01 + 0) / 2)
    assert loss["difference"] == pytest.approx(0.001)
    assert loss["difference_ci95"] == pytest.approx([0.001, 0.001], abs=1e-9)
    assert loss["verdict"] == "within"
    semantic = rows["semantic"]  # +0.30, +0.30, +0.31: outside the 0.1 spread -> moves
    assert semantic["difference"] == pytest.approx(0.30333, abs=1e-5)
    low, high = semantic["difference_ci95"]
    assert low == pytest.approx(0.30333 - scipy_stats.t.ppf(0.975, 2) * 0.0057735 / 3**0.5,
                                abs=1e-5)
    assert semantic["verdict"] == "moves"
    table = markdown(list(rows.values()), MACHINE)
    assert "| qa | baseline | semantic | 3 | 0.400 ± 0.100 | 0.703 ± 0.100 | 0.3033 |" in table
    assert table.splitlines()[0].startswith("<!-- written by `polychromic precision`")


def test_a_seed_missing_one_precision_is_left_out_and_one_seed_is_too_few():
    arms = [arm("fp32", 1, 2.0, 0.3), arm("bf16", 1, 2.0, 0.3), arm("fp32", 2, 2.1, 0.4)]
    rows = compare_precisions(arms)
    assert {r["verdict"] for r in rows} == {"too few seeds"} and rows[0]["seeds"] == [1]


def test_arms_from_two_machines_are_refused():
    other = {"device": "Intel Xeon", "native_bf16": True}
    with pytest.raises(UserError, match="the arms come from 2 machines"):
        compare_precisions([arm("fp32", 1, 2.0, 0.3), arm("bf16", 1, 2.0, 0.3, other)])


def test_primary_metrics_are_the_domains_pre_registered_ones():
    params = {"evaluate": {"ks": [1, 10]},
              "replies": {"primary": {"diversity": "semantic", "passk": "pass@10",
                                      "quality": ["rouge_l", "pass@1"], "margin": 0.05}}}
    assert primary_metrics(params, "replies") == [
        ("diversity", "semantic"), ("passk", "pass@10"), ("quality", "rouge_l"),
        ("passk", "pass@1")]
    with pytest.raises(UserError, match="'qa.primary' is missing"):
        primary_metrics(params, "qa")
