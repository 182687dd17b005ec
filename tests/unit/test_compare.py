"""The compare stage: seed aggregation by hand, tests against stats/scipy, corrections within
the primary and the exploratory family, the primary analysis and its power against
statsmodels' figures, and the verdict on crafted inputs that meet and miss each criterion."""

import json

import numpy as np
import pytest
from scipy import stats as scipy_stats

from polychromic import stats
from polychromic.config import run_main
from polychromic.domains.replies import Replies
from polychromic.metrics import metric_table as table_of
from polychromic.settings import CompareConfig, PrimaryHypotheses
from polychromic.stages import compare
from polychromic.stages.compare import compare_domain, verdict

KS = [1, 10]
PRIMARY = PrimaryHypotheses(diversity="semantic", passk="pass@10",
                            quality=["rouge_l", "bertscore_f1", "pass@1"], margin=0.05)


def metric_table(ks, domain=Replies):
    return table_of(domain.quality_metrics, domain.domain_metrics, ks)
SYSTEMS = ["zero_shot", "few_shot", "baseline", "polychromic"]


def write_scores(root, system, seed, values_by_metric, prompts):
    path = root / system / f"seed{seed}.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = []
    for i, prompt in enumerate(prompts):
        row = {"id": prompt, "precision": "fp32"}
        for metric in metric_table(KS):
            row[metric] = values_by_metric.get(metric, [0.5] * len(prompts))[i]
        rows.append(row)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def fixture(tmp_path, seeds=(1, 2), n=12):
    rng = np.random.default_rng(0)
    prompts = [f"p{i}" for i in range(n)]
    for system in SYSTEMS:
        shift = 0.1 if system == "polychromic" else 0.0
        for seed in seeds:
            write_scores(tmp_path, system, seed, {
                "semantic": list(rng.uniform(0.5, 0.7, n) + shift),
                "self_bleu": list(rng.uniform(0.2, 0.4, n) - shift),
                "distinct_3": [None] + list(rng.uniform(0.5, 0.9, n - 1)),
            }, prompts)
    return prompts


def test_seed_average_and_system_summary_by_hand(tmp_path):
    prompts = ["a", "b"]
    per_seed = [{"a": {"m": 1.0}, "b": {"m": None}}, {"a": {"m": 3.0}, "b": {"m": 5.0}}]
    assert compare.seed_averaged(per_seed, prompts, "m") == [2.0, 5.0]
    summary = compare.summarise(per_seed, prompts, "m", CompareConfig())
    assert summary["mean"] == pytest.approx(3.5)
    assert summary["per_seed"] == [1.0, 4.0]  # seed means over defined prompts
    assert summary["sd_over_seeds"] == pytest.approx(np.std([1.0, 4.0], ddof=1))
    assert summary["ci95"][0] >= 2.0 and summary["ci95"][1] <= 5.0
    undefined = compare.summarise([{"a": {"m": None}}], ["a"], "m", CompareConfig())
    assert undefined["mean"] is None and undefined["undefined"] == 1


def test_compare_domain_tests_seed_averaged_prompts_and_corrects_the_family(tmp_path):
    prompts = fixture(tmp_path)
    result = compare_domain(tmp_path, SYSTEMS, [1, 2], metric_table(KS), None,
                            CompareConfig(), PRIMARY)
    assert result["n_prompts"] == len(prompts) and result["seeds"] == [1, 2]
    table = metric_table(KS)
    assert len(result["comparisons"]) == len(table) * 3

    loaded = {s: compare.load_scores(tmp_path, s, [1, 2]) for s in SYSTEMS}
    a = compare.seed_averaged(loaded["polychromic"], sorted(prompts), "self_bleu")
    b = compare.seed_averaged(loaded["baseline"], sorted(prompts), "self_bleu")
    found = next(c for c in result["comparisons"]
                 if c["metric"] == "self_bleu" and c["b"] == "baseline")
    # lower Self-BLEU is better: the one-sided test asks whether polychromic is lower
    assert found["alternative"] == "a < b"
    assert found["wilcoxon_p"] == pytest.approx(
        scipy_stats.wilcoxon(a, b, alternative="less").pvalue)
    assert found["mann_whitney_p"] == pytest.approx(
        scipy_stats.mannwhitneyu(a, b, alternative="less").pvalue)

    # distinct_3 is undefined on p0 in every file: that prompt is left out of the pair
    distinct = next(c for c in result["comparisons"]
                    if c["metric"] == "distinct_3" and c["b"] == "zero_shot")
    assert distinct["n"] == len(prompts) - 1

    # exploratory: every test but the primary superiority ones, corrected among themselves
    tested = [c for c in result["comparisons"] if "wilcoxon_p" in c]
    exploratory = [c for c in tested if c["family"] == "exploratory"]
    assert len(exploratory) == len(tested) - 2
    assert [c["wilcoxon_p_holm"] for c in exploratory] == pytest.approx(
        stats.holm([c["wilcoxon_p"] for c in exploratory]))
    assert [c["mann_whitney_p_bonferroni"] for c in exploratory] == pytest.approx(
        stats.bonferroni([c["mann_whitney_p"] for c in exploratory]))
    # primary: diversity, pass@10 and three non-inferiority tests, Holm over those five
    family = result["primary"]["family"]
    assert [(h["metric"], h["test"]) for h in family] == [
        ("semantic", "superiority"), ("pass@10", "superiority"),
        ("rouge_l", "non-inferiority"), ("bertscore_f1", "non-inferiority"),
        ("pass@1", "non-inferiority")]
    assert [h["p_holm"] for h in family] == pytest.approx(stats.holm([h["p"] for h in family]))
    assert [h["method"] for h in family] == ["wilcoxon"] * 2 + ["bootstrap"] * 3
    semantic = next(c for c in tested if c["metric"] == "semantic" and c["b"] == "baseline")
    assert semantic["family"] == "primary"
    assert semantic["wilcoxon_p"] == pytest.approx(family[0]["p"])
    assert semantic["wilcoxon_p_holm"] == family[0]["p_holm"]
    assert result["systems"]["polychromic"]["semantic"]["mean"] > \
        result["systems"]["baseline"]["semantic"]["mean"]


def test_prompts_must_match_across_systems(tmp_path):
    fixture(tmp_path, seeds=(1,))
    write_scores(tmp_path, "few_shot", 1, {}, ["p0", "other"])
    with pytest.raises(compare.UserError, match="few_shot/seed1.jsonl: holds other prompts"):
        compare_domain(tmp_path, SYSTEMS, [1], metric_table(KS), None, CompareConfig(),
                       PRIMARY)


def hypothesis(metric, test, difference, p, dz, mean_reference=0.6, mean_lora=0.5,
               margin=0.0):
    return {"metric": metric, "test": test, "n": 30, "mean_reference": mean_reference,
            "mean_lora": mean_lora, "mean_difference": difference,
            "better_oriented_difference": difference, "margin": margin,
            "p_holm": p, "cohens_dz": dz}


def crafted(semantic=(0.05, 0.004, 0.6), rouge_p=0.01, passk=(0.8, 0.6), passk_p=0.02):
    difference, p, dz = semantic
    return [hypothesis("semantic", "superiority", difference, p, dz),
            hypothesis("pass@10", "superiority", passk[0] - passk[1], passk_p, 0.4,
                       mean_reference=passk[0], mean_lora=passk[1]),
            hypothesis("rouge_l", "non-inferiority", 0.004, rouge_p, 0.5, margin=0.005),
            hypothesis("bertscore_f1", "non-inferiority", 0.0, 0.001, 0.9, margin=0.04),
            hypothesis("pass@1", "non-inferiority", 0.0, 0.001, 0.9, margin=0.01)]


def met(result, level):
    return [c["met"] for c in result[level]["criteria"]]


def test_verdict_meets_every_criterion_on_a_strong_result():
    judge = {"overall": {"win_rate": 0.6}}
    result = verdict(crafted(), judge, CompareConfig())
    assert met(result, "minimum") == [True] * 6
    assert met(result, "strong") == [True] * 5
    assert result["minimum"]["met"] and result["strong"]["met"]
    assert result["strong"]["criteria"][3]["value"] == pytest.approx(0.2 / 0.6)


@pytest.mark.parametrize("change, level, index", [
    ({"semantic": (-0.01, 0.004, 0.6)}, "minimum", 0),   # diversity lower
    ({"semantic": (0.05, 0.06, 0.6)}, "minimum", 1),     # not significant
    ({"semantic": (0.05, 0.004, 0.2)}, "minimum", 2),    # effect too small
    ({"rouge_p": 0.2}, "minimum", 3),                    # non-inferiority not shown
    ({"semantic": (0.05, 0.02, 0.6)}, "strong", 0),      # p between 0.01 and 0.05
    ({"semantic": (0.05, 0.004, 0.4)}, "strong", 1),     # d_z between 0.3 and 0.5
    ({"passk_p": 0.2}, "strong", 2),                     # pass@10 gain not significant
    ({"passk": (0.7, 0.6)}, "strong", 3),                # pass@10 gain 16.7% < 20%
])
def test_verdict_misses_exactly_the_crafted_criterion(change, level, index):
    result = verdict(crafted(**change), {"overall": {"win_rate": 0.6}}, CompareConfig())
    flags = met(result, level)
    assert flags[index] is False
    assert all(flags[:index] + flags[index + 1:])
    assert result[level]["met"] is False


def test_verdict_without_the_judge_is_not_strong():
    result = verdict(crafted(), None, CompareConfig())
    judge = result["strong"]["criteria"][4]
    assert judge["met"] is None and "not measured" in judge["criterion"]
    assert result["minimum"]["met"] and not result["strong"]["met"]


def values(rng, n, centre):
    return list(rng.normal(centre, 0.05, n))


def test_primary_analysis_by_hand_lower_is_better_and_non_inferiority():
    """Self-BLEU as the diversity metric (lower is better): the test asks for a lower value.
    Non-inferiority on ROUGE-L: the shifted difference (a - b) + 5% of the LoRA mean."""
    rng = np.random.default_rng(1)
    n = 25
    a = {"self_bleu": values(rng, n, 0.30), "pass@10": values(rng, n, 0.6),
         "rouge_l": values(rng, n, 0.098)}
    b = {"self_bleu": values(rng, n, 0.35), "pass@10": values(rng, n, 0.6),
         "rouge_l": values(rng, n, 0.100)}
    a["rouge_l"][0] = None  # undefined for one prompt: left out of that pair only
    primary = PrimaryHypotheses(diversity="self_bleu", passk="pass@10", quality=["rouge_l"],
                                margin=0.05)
    family = compare.primary_analysis(a, b, metric_table(KS), primary, CompareConfig())
    bleu, passk, rouge = family
    d = np.array(b["self_bleu"]) - np.array(a["self_bleu"])  # oriented: lower is better
    assert bleu["p"] == pytest.approx(
        scipy_stats.wilcoxon(a["self_bleu"], b["self_bleu"], alternative="less").pvalue)
    assert bleu["cohens_dz"] == pytest.approx(d.mean() / d.std(ddof=1))
    assert rouge["n"] == n - 1
    lora = np.array(b["rouge_l"][1:])
    shifted = np.array(a["rouge_l"][1:]) - lora + 0.05 * lora.mean()
    assert rouge["margin"] == pytest.approx(0.05 * lora.mean())
    assert rouge["p"] == stats.mean_above_p(shifted - rouge["margin"], -rouge["margin"],
                                            10_000, 42)
    raw = shifted - rouge["margin"]  # the quality row's d_z is the difference's own
    assert rouge["cohens_dz"] == pytest.approx(raw.mean() / raw.std(ddof=1))
    assert rouge["margin_dz"] == pytest.approx(rouge["margin"] / raw.std(ddof=1))
    # at a true difference of 0 the test must see the margin: its power, and the prompts
    # that would give it 80%, over the CI of the differences' SD
    power = rouge["power"]
    assert power["power_at_zero"] == pytest.approx(
        stats.paired_power(rouge["margin_dz"], n - 1, 0.05 / 3))
    assert power["prompts_needed"] == stats.pairs_needed(rouge["margin_dz"], 0.05 / 3)
    low_sd, high_sd = rouge["sd_difference_ci95"]
    assert low_sd < raw.std(ddof=1) < high_sd
    assert power["prompts_needed_range"] == [
        stats.pairs_needed(rouge["margin"] / low_sd, 0.05 / 3),
        stats.pairs_needed(rouge["margin"] / high_sd, 0.05 / 3)]
    low, high = bleu["cohens_dz_ci95"]
    assert low < bleu["cohens_dz"] < high
    assert [h["p_holm"] for h in family] == pytest.approx(stats.holm([h["p"] for h in family]))
    # power at α = 0.05 / 3 for n = 25 pairs (statsmodels TTestPower, alternative="larger")
    assert bleu["power"]["alpha"] == pytest.approx(0.05 / 3)
    assert bleu["power"]["minimum_detectable_dz"] == pytest.approx(
        stats.minimum_detectable_dz(25, 0.05 / 3))
    assert stats.paired_power(bleu["power"]["minimum_detectable_dz"], 25, 0.05 / 3) == \
        pytest.approx(0.8, abs=1e-6)
    # superiority: the prompts needed for the pre-registered effect (minimum_effect 0.3),
    # whatever was observed
    needed = bleu["power"]["prompts_needed"]
    assert bleu["power"]["effect_dz"] == 0.3 and "power_at_zero" not in bleu["power"]
    assert stats.paired_power(0.3, needed, 0.05 / 3) >= 0.8
    assert stats.paired_power(0.3, needed - 1, 0.05 / 3) < 0.8


def test_non_inferiority_tests_the_mean_not_the_median():
    """Zero-inflated differences (most prompts tie): the signed-rank test of d + δ calls the
    tie-heavy data non-inferior, the mean's test does not when the mean is below -δ; and for
    normal differences the bootstrap p agrees with the one-sample t-test."""
    d = np.array([0.0] * 36 + [-0.3, -0.3, -0.2, 0.1])  # mean -0.0175, margin 0.0035
    assert stats.signed_rank_p(d + 0.0035) < 0.001
    assert stats.mean_above_p(d, -0.0035, 10_000, 0) > 0.5
    rng = np.random.default_rng(3)
    normal = rng.normal(0.05, 0.4, 300)
    t_test = scipy_stats.ttest_1samp(normal + 0.02, 0.0, alternative="greater").pvalue
    assert stats.mean_above_p(normal, -0.02, 20_000, 0) == pytest.approx(t_test, abs=0.01)


@pytest.mark.parametrize("n,alpha,expected", [(30, 0.05, 0.4649472), (30, 0.01, 0.6070299)])
def test_minimum_detectable_dz_matches_statsmodels(n, alpha, expected):
    # TTestPower().solve_power(effect_size=None, nobs=n, alpha=alpha, power=0.8,
    #                          alternative="larger"), statsmodels 0.15.0
    assert stats.minimum_detectable_dz(n, alpha) == pytest.approx(expected, abs=2e-6)


def test_power_and_pairs_needed_match_statsmodels():
    assert stats.paired_power(0.3, 40, 0.05) == pytest.approx(0.5868484, abs=1e-6)
    assert stats.pairs_needed(0.5, 0.05) == 27  # statsmodels: 26.14 (G*Power: 27)
    assert stats.pairs_needed(0.22, 0.0125) == 199  # statsmodels: 198.9
    assert stats.pairs_needed(-0.1, 0.05) is None and stats.pairs_needed(None, 0.05) is None


def test_primary_hypotheses_must_be_declared_and_computed():
    table = metric_table(KS)
    declared = {"diversity": "semantic", "passk": "pass@10", "quality": ["rouge_l"],
                "margin": 0.05}
    params = {"replies": {"primary": declared}}
    assert compare.primary_hypotheses(params, "replies", table) == PrimaryHypotheses(
        diversity="semantic", passk="pass@10", quality=["rouge_l"], margin=0.05)
    with pytest.raises(compare.UserError, match="'code.primary' is missing"):
        compare.primary_hypotheses(params, "code", table)
    with pytest.raises(compare.UserError, match="'replies.primary.passk' names "
                       "'pass@20', which domain replies does not compute"):
        compare.primary_hypotheses({"replies": {"primary": declared | {"passk": "pass@20"}}},
                                   "replies", table)
    with pytest.raises(compare.UserError, match="unknown key 'replies.primary.alpha'"):
        compare.primary_hypotheses({"replies": {"primary": declared | {"alpha": 0.1}}},
                                   "replies", table)
    # every key is declared: none is left to a default
    with pytest.raises(compare.UserError, match="missing key 'replies.primary.margin'"):
        compare.primary_hypotheses({"replies": {"primary": {"diversity": "semantic",
                                                            "passk": "pass@10",
                                                            "quality": ["rouge_l"]}}},
                                   "replies", table)


def test_main_writes_comparison_and_rejects_too_few_resamples(tmp_path, monkeypatch, capsys):
    fixture(tmp_path / "scores", seeds=(7,))
    (tmp_path / "judge.json").write_text('{"enabled": false}')
    params = {"systems": SYSTEMS, "seeds": [7], "evaluate": {"ks": KS},
              "compare": {"resamples": 10000},
              "replies": {"primary": {"diversity": "semantic", "passk": "pass@10",
                                      "quality": ["rouge_l", "bertscore_f1", "pass@1"],
                                      "margin": 0.05}}}
    (tmp_path / "params.yaml").write_text(json.dumps(params))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    argv = ["--domain", "replies", "--scores", "scores", "--judge", "judge.json",
            "--summary", "out/headline.json", "--out", "out/comparison.json"]
    run_main(compare.main, argv)
    written = json.loads((tmp_path / "out/comparison.json").read_text())
    assert written["judge"] is None and written["verdict"]["strong"]["met"] is False
    summary = json.loads((tmp_path / "out/headline.json").read_text())
    family = {h["metric"]: h for h in written["primary"]["family"]}
    # the same keys in every domain, each from its hypothesis in the primary family
    assert summary == {
        "diversity": family["semantic"]["mean_difference"],
        "diversity_p": family["semantic"]["p_holm"],
        "pass@k": family["pass@10"]["mean_difference"], "pass@k_p": family["pass@10"]["p_holm"],
        "pass@1": family["pass@1"]["mean_difference"],
        "quality_p": max(family[m]["p_holm"] for m in ("rouge_l", "bertscore_f1", "pass@1")),
        "minimum": written["verdict"]["minimum"]["met"], "strong": False}
    # the precision each system was computed in, from its scores
    assert written["precision"] == dict.fromkeys(SYSTEMS, "fp32")
    scores = tmp_path / "scores/baseline/seed7.jsonl"
    rows = scores.read_text().splitlines()
    rows[1] = rows[1].replace('"fp32"', '"bf16"')
    scores.write_text("\n".join(rows) + "\n")
    with pytest.raises(SystemExit):
        run_main(compare.main, argv[:-1] + ["out/mixed.json"])
    assert ("scores/baseline/seed7.jsonl:2: precision 'bf16', but baseline was computed in "
            "'fp32' elsewhere" in capsys.readouterr().err)
    assert not (tmp_path / "out/mixed.json").exists()
    scores.write_text("\n".join(rows).replace('"bf16"', '"fp32"') + "\n")

    params["compare"]["resamples"] = 999
    (tmp_path / "params.yaml").write_text(json.dumps(params))
    with pytest.raises(SystemExit) as exit_info:
        run_main(compare.main, argv[:-1] + ["out/other.json"])
    assert exit_info.value.code == 2
    assert "'compare.resamples' must be >= 10000" in capsys.readouterr().err
    assert not (tmp_path / "out/other.json").exists()


def test_pass_at_k_and_quality_are_tested_against_the_matched_system():
    """With `matched_system`, diversity is still tested against LoRA at the same temperature,
    pass@k and quality against LoRA at the temperature that matches the diversity."""
    rng = np.random.default_rng(4)
    n = 20
    a = {"semantic": values(rng, n, 0.85), "pass@10": values(rng, n, 0.6),
         "rouge_l": values(rng, n, 0.10)}
    lora = {"semantic": values(rng, n, 0.80), "pass@10": values(rng, n, 0.5),
            "rouge_l": values(rng, n, 0.11)}
    hot = {"semantic": values(rng, n, 0.85), "pass@10": values(rng, n, 0.65),
           "rouge_l": values(rng, n, 0.09)}
    primary = PrimaryHypotheses(diversity="semantic", passk="pass@10", quality=["rouge_l"],
                                margin=0.05)
    config = CompareConfig(matched_system="baseline_matched")
    diversity, passk, rouge = compare.primary_analysis(a, lora, metric_table(KS), primary,
                                                       config, hot)
    assert (diversity["against"], passk["against"], rouge["against"]) == (
        "baseline", "baseline_matched", "baseline_matched")
    assert diversity["mean_lora"] == pytest.approx(np.mean(lora["semantic"]))
    assert passk["mean_lora"] == pytest.approx(np.mean(hot["pass@10"]))
    assert rouge["margin"] == pytest.approx(0.05 * np.mean(hot["rouge_l"]))
    assert passk["p"] == pytest.approx(scipy_stats.wilcoxon(
        a["pass@10"], hot["pass@10"], alternative="greater").pvalue)
    # without it, everything is against LoRA
    plain = compare.primary_analysis(a, lora, metric_table(KS), primary, CompareConfig())
    assert {h["against"] for h in plain} == {"baseline"}


def test_several_score_folders_take_each_system_from_the_first_that_holds_it(tmp_path):
    """A sweep arm compares its own polychromic with the default run's other systems:
    the result is the one for a single folder holding the same files."""
    prompts = fixture(tmp_path / "run")
    arm = tmp_path / "arm"
    write_scores(arm, "polychromic", 1, {"semantic": [0.9] * len(prompts)}, prompts)
    write_scores(arm, "polychromic", 2, {"semantic": [0.8] * len(prompts)}, prompts)
    both = compare_domain([arm, tmp_path / "run"], SYSTEMS, [1, 2], metric_table(KS), None,
                          CompareConfig(), PRIMARY)
    merged = tmp_path / "merged"
    for system in SYSTEMS:
        source = (arm if system == "polychromic" else tmp_path / "run") / system
        (merged / system).mkdir(parents=True)
        for path in source.iterdir():
            (merged / system / path.name).write_bytes(path.read_bytes())
    single = compare_domain(merged, SYSTEMS, [1, 2], metric_table(KS), None,
                            CompareConfig(), PRIMARY)
    assert both == single
    assert both["systems"]["polychromic"]["semantic"]["mean"] == pytest.approx(0.85)
    assert compare.scores_path([arm, tmp_path / "run"], "baseline", 1) == (
        tmp_path / "run" / "baseline" / "seed1.jsonl")
    assert compare.scores_path([arm, tmp_path / "run"], "nobody", 1) == (
        arm / "nobody" / "seed1.jsonl")  # named in the error: the first folder
