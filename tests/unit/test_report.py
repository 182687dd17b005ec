"""The report stage (Table 1, examples, pass@k figure and DVC plot data) and Table 2 (the
stage as dvc runs it: tests/integration/test_report.py)."""

import copy
import json

import pytest

from polychromic import ablation
from polychromic.commands import ablations
from polychromic.config import UserError
from polychromic.metrics import pass_at_k
from polychromic.settings import ReportConfig
from polychromic.stages import report
from tests.helpers import REPO, report_project
from tests.helpers import REPORT_ARGS as ARGS
from tests.helpers import REPORT_METRICS as METRICS
from tests.helpers import REPORT_SYSTEMS as SYSTEMS
from tests.helpers import report_comparison as comparison
from tests.helpers import report_generations as generations
from tests.helpers import report_scores as scores

FIXTURES = REPO / "tests" / "fixtures" / "report"


def test_bold_is_the_direction_aware_best_and_ties_are_all_bold():
    columns, cells = report.table1(comparison(), SYSTEMS)
    assert columns == ["self_bleu", "semantic", "rouge_l", "pass@4"]
    bold = {s: [c["bold"] for c in row] for s, row in cells.items()}
    # Self-BLEU: lower wins; semantic: higher wins; ROUGE-L 0.100 = 0.100 as printed: both;
    # pass@4 undefined for baseline: "–", never bold
    assert bold == {"baseline": [False, False, True, False],
                    "polychromic": [True, True, True, True]}
    assert report.cell_text(cells["baseline"][3], tex=False) == "–"
    assert report.cell_text(cells["polychromic"][0], tex=False) == "**0.200 [0.190, 0.210]**"
    data = comparison()  # columns: grouped, in comparison.json order
    data["metrics"] = {m: METRICS[m] for m in ["semantic", "rouge_l", "self_bleu", "pass@4"]}
    assert report.table1(data, SYSTEMS)[0] == ["semantic", "self_bleu", "rouge_l", "pass@4"]


@pytest.mark.parametrize("p,mark", [(0.004, "**"), (0.0099, "**"), (0.01, "*"), (0.049, "*"),
                                    (0.05, ""), (0.3, ""), (None, "")])
def test_significance_marks_follow_the_corrected_p(p, mark):
    _, cells = report.table1(comparison(semantic=p, self_bleu=0.2), SYSTEMS)
    assert [c["mark"] for c in cells["baseline"]] == ["", mark, "", ""]
    assert all(c["mark"] == "" for c in cells["polychromic"])  # the reference is unmarked
    md = report.table1_text(comparison(semantic=p), SYSTEMS, tex=False)
    baseline_row = next(line for line in md.splitlines() if line.startswith("| baseline"))
    assert baseline_row.split(" | ")[2] == "0.700 [0.690, 0.710]" + mark.replace("*", r"\*")
    tex = report.table1_text(comparison(semantic=p), SYSTEMS, tex=True)
    assert ("0.700 [0.690, 0.710]" + (f"$^{{{mark}}}$" if mark else " &")) in tex


def test_table1_text_markdown_with_verdict_and_latex():
    data = comparison(semantic=0.003)
    md = report.table1_text(data, SYSTEMS, tex=False) + report.verdict_markdown(data)
    assert "| System | *Diversity*<br>Self-BLEU ↓ | Semantic div. | *Quality*<br>ROUGE-L |" in md
    assert "over 3 dev prompts" in md and "2 seed(s) (1, 2)" in md and "(one-sided: " \
        "polychromic better), p-values Holm-corrected within their family." in md
    assert "- Minimum bar: **not met**" in md and "- Strong bar: **met**" in md
    assert "## Verdict (primary family only)" in md
    assert "| minimum | semantic higher than LoRA | 0.17 | p < 0.05 | not met |" in md
    assert r"| minimum | judge \| win rate | – | > 0.5 | not measured |" in md
    assert "| strong | pass@4 gain | 0.2 | >= 0.1 | met |" in md
    # LaTeX: booktabs, escaped
    tex = report.table1_text(comparison(), ["baseline", "polychromic"], tex=True)
    assert tex.startswith(r"\begin{tabular}{lrrrr}" + "\n" + r"\toprule")
    assert r"\midrule" in tex and r"\bottomrule" in tex and r"\end{tabular}" in tex
    assert r"\multicolumn{2}{c}{Diversity}" in tex and r"\cmidrule(lr){2-3}" in tex
    assert r"Self-BLEU $\downarrow$" in tex and r"pass@4 (\% \#\&)" in tex
    assert r"\textbf{0.200 [0.190, 0.210]}" in tex
    assert report.tex_escape("zero_shot 5% #1 & {x}") == r"zero\_shot 5\% \#1 \& \{x\}"
    data = comparison()
    data["systems"]["few_shot"] = data["systems"].pop("baseline")
    assert r"few\_shot &" in report.table1_text(data, ["few_shot", "polychromic"], tex=True)


def test_primary_columns_are_marked_and_the_primary_analysis_is_tabled():
    data = comparison(semantic=0.003)
    data["lora_system"] = "baseline"
    data["primary"] = {"family": [
        {"metric": "semantic", "test": "superiority", "n": 3, "mean_difference": 0.1,
         "margin": 0.0, "p": 0.001, "p_holm": 0.003, "cohens_dz": 1.2,
         "cohens_dz_ci95": [0.5, 2.0], "power": {"alpha": 0.025, "power": 0.8,
                                                  "minimum_detectable_dz": 3.1,
                                                  "prompts_needed": 9}},
        {"metric": "rouge_l", "test": "non-inferiority", "n": 3, "mean_difference": -0.0003,
         "margin": 0.005, "p": 0.2, "p_holm": 0.2, "cohens_dz": -0.1,
         "cohens_dz_ci95": None, "power": {"alpha": 0.025, "power": 0.8,
                                            "minimum_detectable_dz": 3.1,
                                            "power_at_zero": 0.049, "prompts_needed": 310,
                                            "prompts_needed_range": [120, None]}}]}
    md = report.table1_text(data, SYSTEMS, tex=False)
    assert "| System | *Diversity*<br>Self-BLEU ↓ | Semantic div. † | *Quality*<br>ROUGE-L |" \
        in md  # a non-inferiority test marks no column: its column's marks stay exploratory
    assert "†: a pre-registered primary hypothesis (polychromic vs baseline)" in md
    primary = report.primary_markdown(data)
    assert "| semantic | superiority | 3 | 0.100 | 1.20 [0.50, 2.00] | 0.001 | 0.003 | 3.10 " \
        "| – | 9 |" in primary
    assert "| rouge_l | non-inferiority (δ = 0.005) | 3 | -0.000 | -0.10 | 0.200 | 0.200 | " \
        "3.10 | 5% | 310 [120, ∞] |" in primary
    assert "level 0.0250" in primary and "power 80%" in primary


def test_passk_curves_are_means_of_the_unbiased_estimator():
    # one system, one seed: n = 4 samples; passed 1, 0, 4
    ks, curves, bands = report.passk_curves({"a": [scores((4, 1), (4, 0), (4, 4))]})
    assert ks == [1, 2, 3, 4]
    assert pass_at_k(4, 1, 2) == pytest.approx(0.5)  # 1 - C(3,2)/C(4,2) = 1 - 3/6
    assert curves["a"][1] == pytest.approx((0.5 + 0 + 1) / 3)
    assert curves["a"][0] == pytest.approx((0.25 + 0 + 1) / 3)
    assert curves["a"][3] == pytest.approx(2 / 3)  # k = n: the share of prompts with a pass
    # two seeds: averaged within each prompt, then over prompts
    # the 95% band at k = n: the bootstrap over the 3 prompts' 0/1 values, whose resampled
    # mean takes the values j/3; its 2.5% and 97.5% quantiles are 0 and 1 (P(all 0) = 1/27)
    low, high = bands["a"]
    assert low[3] == pytest.approx(0.0) and high[3] == pytest.approx(1.0)
    assert all(lo <= mean <= hi for lo, mean, hi in zip(low, curves["a"], high, strict=True))
    _, curves, _ = report.passk_curves({"a": [scores((4, 1), (4, 0)), scores((4, 3))]})
    assert curves["a"][0] == pytest.approx(((0.25 + 0.75) / 2 + 0) / 2)  # not 1 / 3


def chosen_ids(markdown):
    return [line.split("`")[1] for line in markdown.splitlines() if line.startswith("## Ex")]


def test_examples_are_seeded_from_common_prompts_and_escaped():
    ids = [f"t{i}" for i in range(12)]
    gens = {"baseline": generations("baseline", ids),
            "polychromic": generations("polychromic", ids[2:] + ["only_here"])}
    config = ReportConfig(examples=3, example_samples=2, seed=7)
    first = report.examples_markdown(gens, config, "replies")
    assert first == report.examples_markdown(gens, config, "replies")
    chosen = chosen_ids(first)
    assert len(chosen) == 3 and set(chosen) <= set(ids[2:])
    shuffled = {s: g[::-1] for s, g in gens.items()}  # the choice ignores the files' order
    assert set(chosen_ids(report.examples_markdown(shuffled, config, "x"))) == set(chosen)
    assert len({tuple(chosen_ids(report.examples_markdown(
        gens, ReportConfig(3, 2, seed), "replies"))) for seed in range(8)}) > 1
    assert rf"prompt {chosen[0]} \| with a pipe" in first  # escaped
    assert "| # | baseline | polychromic |\n" in first and "| 2 | baseline" in first
    assert "sample 2" not in first  # 2 samples per system


def test_multiline_samples_are_fenced_blocks_not_table_cells():
    """Code samples keep their lines: each is a fenced block whose fence is longer than any
    run of backticks inside, and the prompt and reference likewise."""
    rows = [{"id": "p", "prompt": "def f():\n    pass", "references": ["x = 1\ny = 2"],
             "samples": ["def f():\n    return 1", "print('```')\n"]}]
    text = report.examples_markdown({"baseline": rows}, ReportConfig(1, 2, 0), "code")
    assert "```\ndef f():\n    return 1\n```" in text
    assert "````\nprint('```')\n\n````" in text
    assert "```\ndef f():\n    pass\n```" in text and "```\nx = 1\ny = 2\n```" in text
    assert "| # |" not in text


@pytest.fixture
def project(tmp_path, monkeypatch):
    """2 systems x 2 seeds x 3 prompts, params.yaml and comparison.json in a working dir."""
    report_project(tmp_path)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_report_writes_tables_examples_figure_and_plot_data(project):
    report.main(ARGS)
    tables, figures = project / "out" / "tables", project / "out" / "figures"
    assert sorted(p.name for p in tables.iterdir()) == ["examples.md", "table1.md", "table1.tex"]
    assert (figures / "passk.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    lines = (figures / "passk.csv").read_text().splitlines()
    assert lines[0] == ("k,baseline,polychromic,baseline_low,baseline_high,polychromic_low,"
                        "polychromic_high") and len(lines) == 5
    # polychromic at k = 4 (= n): prompts t0, t1 pass under both seeds, t2 never: 2/3
    assert float(lines[4].split(",")[2]) == pytest.approx(2 / 3)
    assert float(lines[1].split(",")[2]) == pytest.approx(((0.25 + 0.5) / 2 + 1 + 0) / 3)
    md = (tables / "table1.md").read_text()
    assert "0.700 [0.690, 0.710]\\*" in md and "## Verdict" in md


@pytest.mark.parametrize("path,content,message", [
    ("comparison.json", comparison() | {"seeds": [1]}, "made for domain 'replies', seeds"),
    ("comparison.json", comparison() | {"reference": "judge"}, r"system\(s\) \['judge'\]"),
    ("comparison.json", comparison() | {"comparisons": None}, "'comparisons'"),
    ("scores/baseline/seed1.jsonl", scores((4, 5))[0], "seed1.jsonl: id t0: needs"),
])
def test_bad_input_is_refused_and_writes_nothing(project, path, content, message):
    (project / path).write_text(json.dumps(content))
    with pytest.raises(UserError, match=message):
        report.main(ARGS)
    assert not (project / "out").exists()


def exp_show():  # Table 2: a trimmed recording of `dvc exp show --json -A`
    return json.loads((FIXTURES / "exp_show.json").read_text())


def test_ablation_rows_from_recorded_exp_show():
    rows = ablations.exp_rows(exp_show(), "replies")
    # the workspace equals HEAD (dropped); the older commit without experiments is skipped
    assert [r["name"] for r in rows] == ["main", "0d06e7d", "osmic-ears", "muzzy-kaka",
                                         "acerb-cant", "muggy-alto"]
    assert [r["commit"] for r in rows] == ["032d025"] + ["0d06e7d"] * 5
    params, others, metrics = ablation.columns(rows)
    assert params == ["polychromic.diversity_weight", "polychromic.n_generations",
                      "polychromic.diversity_metric"]
    assert others == []
    assert metrics == ["self_bleu", "distinct_2", "semantic", "rouge_l", "pass@1", "pass@10",
                       "semantic_vs_baseline", "semantic_vs_baseline_p"]
    assert [[r["params"][k] for k in params] for r in rows] == [
        [0.3, 3, "semantic"], [0.3, 3, "semantic"], [0.3, 3, "bleu"], [0.3, 5, "semantic"],
        [1.0, 3, "semantic"], [0.1, 3, "semantic"]]
    recorded = exp_show()[3]["experiments"][0]["revs"][0]["data"]["metrics"]
    assert rows[2]["metrics"]["semantic"] == pytest.approx(
        recorded["metrics/replies/polychromic.json"]["data"]["diversity"]["semantic"])
    assert all(r["seeds"] == 1 for r in rows)
    # comparison.json as read at each revision: Δ semantic vs baseline and its corrected p
    comparisons = {rows[1]["rev"]: {"correction": "holm", "comparisons": [
        {"metric": "semantic", "a": "polychromic", "b": "baseline", "mean_difference": 0.012,
         "wilcoxon_p_holm": 0.0312}]}}
    ablation.add_comparisons(rows, comparisons.get)
    assert rows[1]["metrics"]["semantic_vs_baseline"] == 0.012
    assert rows[1]["metrics"]["semantic_vs_baseline_p"] == 0.0312
    assert "semantic_vs_baseline" not in rows[0]["metrics"]
    md = ablation.table2(rows, "replies", tex=False)
    assert "| Experiment | Commit | λ | N | diversity_metric | Seeds |" in md
    assert " | 0.012 | 0.031 |" in md
    tex = ablation.table2(rows, "replies", tex=True)
    assert r"$\lambda$ & N & diversity\_metric" in tex and r"$\Delta$ semantic" in tex


def test_ablation_rows_new_layout_queued_failed_and_changed_workspace():
    data = exp_show()
    data[0]["data"]["params"]["params.yaml"]["data"]["train"]["max_steps"] = 99
    exp = data[3]["experiments"][3]["revs"][0]["data"]
    old = exp["metrics"].pop("metrics/replies/polychromic.json")["data"]
    for seed, shift in [(1, 0.0), (2, 0.1)]:
        new = copy.deepcopy(old)
        new["diversity"]["semantic"] = 0.5 + shift
        exp["metrics"][f"metrics/replies/polychromic/seed{seed}.json"] = {"data": new}
    exp["metrics"]["metrics/other/polychromic/seed1.json"] = {"data": old}  # another domain
    queued, failed = (copy.deepcopy(data[3]["experiments"][0]) for _ in range(2))
    queued.update(name="waiting", executor={"state": "queued"})
    failed.update(name="broken", executor={"state": "failed"})
    failed["revs"][0].update(data=None, error={"type": "ReproductionError", "msg": "boom"})
    data[3]["experiments"] += [queued, failed]
    rows = {r["name"]: r for r in ablations.exp_rows(data, "replies")}
    assert "waiting" not in rows and rows["broken"]["note"] == "boom"
    assert rows["broken"]["metrics"] == {} and rows["broken"]["seeds"] == 0
    assert rows["muggy-alto"]["seeds"] == 2
    assert rows["muggy-alto"]["metrics"]["semantic"] == pytest.approx(0.55)
    assert rows["workspace"]["commit"] == "032d025"
    table = ablation.table2(list(rows.values()), "replies", tex=False)
    assert "| workspace | 032d025 | 0.3 | 3 | semantic | train.max_steps=99 |" in table
    assert "| broken (boom) |" in table and "| – |" in table


def test_ablation_metrics_read_at_each_revision_when_exp_show_has_none():
    """Evaluate's seed files are plain outputs (not DVC metrics) since the headline became
    the only metrics file: each row's polychromic means are read at its revision, for the
    seeds of its params; a failed experiment is not read."""
    data = exp_show()
    recorded = {}
    for entry in data:
        for state in [entry] + [e["revs"][0] for e in entry.get("experiments") or []]:
            metrics = (state.get("data") or {}).get("metrics") or {}
            recorded[state["rev"]] = metrics.pop("metrics/replies/polychromic.json", None)
            state.get("data", {}).get("params", {}).get("params.yaml", {}).get(
                "data", {})["seeds"] = [7]
    failed = copy.deepcopy(data[3]["experiments"][0])
    failed.update(name="broken", executor={"state": "failed"})
    failed["revs"][0].update(rev="f" * 40,
                             error={"type": "ReproductionError", "msg": "boom"})
    data[3]["experiments"].append(failed)
    rows = ablations.exp_rows(data, "replies")
    assert all(r["seeds"] == 0 for r in rows)
    asked = []

    def read(rev, path):
        asked.append((rev, path))
        return (recorded.get(rev) or {}).get("data")

    ablations.add_seed_metrics(rows, "replies", read)
    by_name = {r["name"]: r for r in rows}
    assert ("osmic-ears" in by_name and by_name["osmic-ears"]["seeds"] == 1
            and by_name["osmic-ears"]["metrics"]["semantic"] == pytest.approx(
                recorded[by_name["osmic-ears"]["rev"]]["data"]["diversity"]["semantic"]))
    assert {path for _, path in asked} == {"metrics/replies/polychromic/seed7.json"}
    assert "f" * 40 not in {rev for rev, _ in asked} and by_name["broken"]["seeds"] == 0


@pytest.mark.parametrize("data,message", [
    ({"rev": "workspace"}, "non-empty list"),
    ([], "non-empty list"),
    ([{"rev": "workspace", "data": None}, "oops"], "entry 1"),
    ([{"rev": "w", "data": None, "experiments": [{"name": "x"}]}], "'revs' list"),
    ([{"rev": "w", "data": {"params": [], "metrics": {}}}], "'params' and 'metrics'"),
])
def test_malformed_exp_show_is_an_error(data, message):
    with pytest.raises(UserError, match=message):
        ablations.exp_rows(data, "replies")


def test_ablations_cli_on_a_saved_exp_show(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    ablations.main(["--out", "out", "--domain", "replies",
                    "--exp-show", str(FIXTURES / "exp_show.json")])
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "table2.json", "table2.md", "table2.tex"]
    assert "| muggy-alto | 0d06e7d | 0.1 | 3 |" in (tmp_path / "out" / "table2.md").read_text()
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(UserError, match="bad.json"):
        ablations.main(["--out", "out2", "--domain", "replies", "--exp-show", "bad.json"])
    assert not (tmp_path / "out2").exists()


def test_ablations_never_replace_a_table_with_fewer_rows(tmp_path, monkeypatch):
    """A fresh clone without the experiments finds fewer rows: the committed table and
    figure stay as they are, unless --replace."""
    monkeypatch.chdir(tmp_path)
    args = ["--out", "out", "--domain", "replies", "--exp-show", str(FIXTURES / "exp_show.json")]
    ablations.main(args)
    rows = json.loads((tmp_path / "out" / "table2.json").read_text())
    (tmp_path / "out" / "table2.json").write_text(json.dumps(rows + rows))  # more than found
    figure = tmp_path / "plots/ablations/replies/figure2.csv"
    figure.parent.mkdir(parents=True)
    figure.write_text("label\n" + "x\n" * 11)
    before = {p: p.read_bytes() for p in [*(tmp_path / "out").iterdir(), figure]}
    with pytest.raises(UserError, match=rf"table2.json holds {2 * len(rows)} rows, this run "
                                        rf"finds {len(rows)} .*not overwritten"):
        ablations.main(args)
    assert {p: p.read_bytes() for p in before} == before
    ablations.main([*args, "--replace"])
    assert json.loads((tmp_path / "out" / "table2.json").read_text()) == rows
    assert figure.read_bytes() == before[figure]  # no points found: the figure is not drawn


def test_figure2_points_per_experiment_with_the_reference_systems(tmp_path):
    rows = ablations.exp_rows(exp_show(), "replies")

    def system(diversity, quality):
        return {"semantic": {"mean": diversity, "ci95": [diversity - 0.02, diversity + 0.03]},
                "pass@1": {"mean": quality, "ci95": [quality - 0.05, quality + 0.04]},
                "rouge_l": {"mean": 0.1, "ci95": [0.0, 0.2]}}

    head = {"primary": {"hypotheses": {"diversity": "semantic"}}, "systems": {
        "polychromic": system(0.84, 0.17), "baseline": system(0.80, 0.20),
        "zero_shot": system(0.67, 0.10), "few_shot": {"semantic": {"mean": 0.7}}}}
    swept = {"systems": {"polychromic": system(0.90, 0.12)}}
    comparisons = {rows[0]["rev"]: head, rows[5]["rev"]: swept}
    ablation.add_comparisons(rows, comparisons.get)
    points = ablation.figure2_points(rows)
    # polychromic of each row that has a comparison (main at λ 0.3, muggy-alto at λ 0.1), then
    # LoRA and zero-shot from the first such row; few-shot lacks pass@1 and is left out
    assert [(p["label"], p["system"], p["lambda"]) for p in points] == [
        ("main", "polychromic", 0.3), ("muggy-alto", "polychromic", 0.1),
        ("baseline (main)", "baseline", None), ("zero_shot (main)", "zero_shot", None)]
    assert points[1]["diversity"] == 0.90 and points[1]["diversity_low"] == pytest.approx(0.88)
    assert points[2]["pass@1_high"] == pytest.approx(0.24)
    lines = ablation.figure2_csv(points).splitlines()
    assert lines[0] == ("label,system,lambda,seeds,metric,pass@1,pass@1_low,pass@1_high,"
                        "diversity,diversity_low,diversity_high")
    assert lines[2].startswith("muggy-alto,polychromic,0.1,1,semantic,0.120000,0.070000,")
    assert lines[3].startswith("baseline (main),baseline,,1,")
    assert ablation.figure2_png(points, "replies")[:8] == b"\x89PNG\r\n\x1a\n"
