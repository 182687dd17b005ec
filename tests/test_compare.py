"""The compare stage: seed aggregation by hand, tests against stats/scipy, corrections over
the whole family, and the verdict on crafted inputs that meet and miss each criterion."""

import json

import numpy as np
import pytest
from scipy import stats as scipy_stats

from polychromic import compare, stats
from polychromic.compare import CompareConfig, compare_domain, verdict
from polychromic.config import run_main
from polychromic.domains.replies import Replies
from polychromic.metrics import metric_table as table_of

KS = [1, 10]


def metric_table(ks, domain=Replies):
    return table_of(domain.quality_metrics, domain.domain_metrics, ks)
SYSTEMS = ["zero_shot", "few_shot", "baseline", "polychromic"]


def write_scores(root, system, seed, values_by_metric, prompts):
    path = root / system / f"seed{seed}.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = []
    for i, prompt in enumerate(prompts):
        row = {"id": prompt}
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
                            CompareConfig())
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

    tested = [c for c in result["comparisons"] if "wilcoxon_p" in c]
    assert [c["wilcoxon_p_holm"] for c in tested] == pytest.approx(
        stats.holm([c["wilcoxon_p"] for c in tested]))
    assert [c["mann_whitney_p_bonferroni"] for c in tested] == pytest.approx(
        stats.bonferroni([c["mann_whitney_p"] for c in tested]))
    assert result["systems"]["polychromic"]["semantic"]["mean"] > \
        result["systems"]["baseline"]["semantic"]["mean"]


def test_prompts_must_match_across_systems(tmp_path):
    fixture(tmp_path, seeds=(1,))
    write_scores(tmp_path, "few_shot", 1, {}, ["p0", "other"])
    with pytest.raises(compare.UserError, match="few_shot/seed1.jsonl: holds other prompts"):
        compare_domain(tmp_path, SYSTEMS, [1], metric_table(KS), None, CompareConfig())


def comparison(metric, mean_difference, p, dz, ci, mean_a=0.6, mean_b=0.5):
    return {"metric": metric, "a": "polychromic", "b": "baseline", "mean_a": mean_a,
            "mean_b": mean_b, "mean_difference": mean_difference, "bootstrap_ci95": ci,
            "cohens_dz": dz, "wilcoxon_p_holm": p}


def crafted(semantic=(0.05, 0.004, 0.6), rouge_ci=(-0.001, 0.01), passk=(0.8, 0.6)):
    difference, p, dz = semantic
    return [comparison("semantic", difference, p, dz, [0.01, 0.09]),
            comparison("rouge_l", 0.004, 0.3, 0.1, list(rouge_ci), mean_b=0.1),
            comparison("bertscore_f1", 0.0, 0.5, 0.0, [-0.01, 0.01], mean_b=0.8),
            comparison("pass@1", 0.0, 0.5, 0.0, [-0.001, 0.001], mean_b=0.2),
            comparison("pass@10", passk[0] - passk[1], 0.1, 0.3, [0.0, 0.3],
                       mean_a=passk[0], mean_b=passk[1])]


def met(result, level):
    return [c["met"] for c in result[level]["criteria"]]


def test_verdict_meets_every_criterion_on_a_strong_result():
    judge = {"overall": {"win_rate": 0.6}}
    result = verdict(crafted(), metric_table(KS), judge, CompareConfig())
    assert met(result, "minimum") == [True] * 6
    assert met(result, "strong") == [True] * 4
    assert result["minimum"]["met"] and result["strong"]["met"]
    assert result["strong"]["criteria"][2]["value"] == pytest.approx(0.2 / 0.6)


@pytest.mark.parametrize("change, level, index", [
    ({"semantic": (-0.01, 0.004, 0.6)}, "minimum", 0),   # diversity lower
    ({"semantic": (0.05, 0.06, 0.6)}, "minimum", 1),     # not significant
    ({"semantic": (0.05, 0.004, 0.2)}, "minimum", 2),    # effect too small
    ({"rouge_ci": (-0.02, 0.01)}, "minimum", 3),         # quality worse than 5% of 0.1
    ({"semantic": (0.05, 0.02, 0.6)}, "strong", 0),      # p between 0.01 and 0.05
    ({"semantic": (0.05, 0.004, 0.4)}, "strong", 1),     # d_z between 0.3 and 0.5
    ({"passk": (0.7, 0.6)}, "strong", 2),                # pass@10 gain 16.7% < 20%
])
def test_verdict_misses_exactly_the_crafted_criterion(change, level, index):
    result = verdict(crafted(**change), metric_table(KS), {"overall": {"win_rate": 0.6}},
                     CompareConfig())
    flags = met(result, level)
    assert flags[index] is False
    assert all(flags[:index] + flags[index + 1:])
    assert result[level]["met"] is False


def test_verdict_lower_is_better_diversity_metric_and_judge_not_measured():
    config = CompareConfig(diversity_metric="self_bleu")
    comparisons = crafted() + [comparison("self_bleu", -0.05, 0.001, -0.7, [-0.08, -0.02])]
    result = verdict(comparisons, metric_table(KS), None, config)
    assert met(result, "minimum")[:3] == [True, True, True]  # lower Self-BLEU is higher diversity
    judge = result["strong"]["criteria"][3]
    assert judge["met"] is None and "not measured" in judge["criterion"]
    assert result["minimum"]["met"] and not result["strong"]["met"]


def test_quality_metrics_the_domain_does_not_compute_are_not_applicable():
    """On code, ROUGE-L and BERTScore are not computed: the verdict's comparable quality
    rests on pass@1 alone, and says which criteria it left out."""
    from polychromic.domains.code import Code

    comparisons = [c for c in crafted() if c["metric"] not in ("rouge_l", "bertscore_f1")]
    result = verdict(comparisons, metric_table(KS, Code), None, CompareConfig())
    assert result["minimum"]["not_applicable"] == ["rouge_l", "bertscore_f1"]
    assert [c["criterion"].split(" (")[1].split(":")[0] for c in result["minimum"][
        "criteria"][3:]] == ["pass@1"]
    assert result["minimum"]["met"]
    failing = [comparison("pass@1", -0.05, 0.9, -0.3, [-0.08, -0.02], mean_b=0.2)]
    worse = verdict([c for c in comparisons if c["metric"] != "pass@1"] + failing,
                    metric_table(KS, Code), None, CompareConfig())
    assert not worse["minimum"]["met"]


def test_main_writes_comparison_and_rejects_too_few_resamples(tmp_path, monkeypatch, capsys):
    fixture(tmp_path / "scores", seeds=(7,))
    (tmp_path / "judge.json").write_text('{"enabled": false}')
    params = {"systems": SYSTEMS, "train": {"seeds": [7]}, "evaluate": {"ks": KS},
              "compare": {"resamples": 10000}}
    (tmp_path / "params.yaml").write_text(json.dumps(params))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    argv = ["--domain", "replies", "--scores", "scores", "--judge", "judge.json",
            "--summary", "out/headline.json", "--out", "out/comparison.json"]
    run_main(compare.main, argv)
    written = json.loads((tmp_path / "out/comparison.json").read_text())
    assert written["judge"] is None and written["verdict"]["strong"]["met"] is False
    summary = json.loads((tmp_path / "out/headline.json").read_text())
    semantic = next(c for c in written["comparisons"]
                    if c["metric"] == "semantic" and c["b"] == "baseline")
    assert summary["polychromic_vs_baseline"]["semantic"] == {
        "difference": semantic["mean_difference"], "d_z": semantic["cohens_dz"],
        "p": semantic["wilcoxon_p_holm"]}
    assert summary["verdict"] == {"minimum": written["verdict"]["minimum"]["met"],
                                  "strong": False}

    params["compare"]["resamples"] = 999
    (tmp_path / "params.yaml").write_text(json.dumps(params))
    with pytest.raises(SystemExit) as exit_info:
        run_main(compare.main, argv[:-1] + ["out/other.json"])
    assert exit_info.value.code == 2
    assert "'compare.resamples' must be >= 10000" in capsys.readouterr().err
    assert not (tmp_path / "out/other.json").exists()
