"""End to end, on the tiny model, qa only, one seed (averaging over seeds is compare's, run
with a second seed in tests/e2e/test_pipeline.py), the three studies in the order they are
meant to run, in one repository so that each tiny adapter is trained once:

1. the protocol run (studies/protocol): LoRA matched on val, the power plan, every system
   on dev with the matched comparison in the primary family, and Figure 3's frontiers;
2. the objectives' selection on val (studies/selection): LoRA and two candidates, each
   trained in its own arm folder, scored on val, the rule applied;
3. the one confirmation run (studies/confirmation) on a sealed split: it refuses to unseal
   before the protocol, the power plan and the selection are committed, then runs every
   system of the protocol and the selected objective against LoRA at its own matched
   temperature, reusing the protocol's and the selection's adapters.

Every stage declares the params it reads; the root pipeline is left as it was."""

import json

import pytest
import yaml

from tests.e2e.conftest import STUDY_TEMPERATURES as TEMPERATURES
from tests.helpers import REPO, repro_study, sh, study_repository, undeclared_params

TINY_TERM = {"max_new_tokens": 4, "eval_prompts": 2, "eval_samples": 2, "generate_every": 1,
             "n_generations": 3}
SPEC = {"common": {"domains": ["qa"], "seeds": [42]},
        "arms": {"lora": {"method": "baseline"},
                 "qd": {"method": "quality_diversity",
                        "quality_diversity": {**TINY_TERM, "weight": 1.0}},
                 "pk": {"method": "passk", "passk": {**TINY_TERM, "weight": 1.0, "k": 2}}}}


@pytest.mark.slow
@pytest.mark.e2e
def test_the_protocol_the_selection_then_the_one_confirmation_run(tmp_path, qa_root):
    protocol = yaml.safe_load((REPO / "studies/protocol/protocol.yaml").read_text())
    protocol["seeds"] = [42]  # frontier.seed: the frontiers and val read its adapters
    repo = study_repository(tmp_path, qa_root, {
        name: (REPO / name).read_text() for name in (
            "studies/selection/dvc.yaml", "studies/protocol/dvc.yaml",
            "studies/confirmation/dvc.yaml", "docs/protocol.md", "docs/objectives.md")} | {
        "studies/selection/selection.yaml": yaml.safe_dump(SPEC, sort_keys=False),
        "studies/protocol/protocol.yaml": yaml.safe_dump(protocol),
        "studies/confirmation/confirmation.yaml": "common: {}\nprompts: {qa: 3}\n"})

    # every study's params first: DVC reads every dvc.yaml of the repository
    sh(repo, "python", "-m", "polychromic.commands.protocol")
    sh(repo, "python", "-m", "polychromic.commands.study", "selection")
    out = sh(repo, "python", "-m", "polychromic.commands.study", "confirmation")
    assert "1 params files written" in out  # before the selection: a pipeline of no stages

    # -- the protocol run
    study = repro_study(repo, "protocol", tmp_path / "protocol-read.jsonl")
    matched = json.loads((study / "metrics/qa/matched.json").read_text())
    assert matched["metric"] == "distinct_classes" and matched["split"] == "val"
    assert [t for t, _ in matched["curve"]] == TEMPERATURES
    assert min(TEMPERATURES) <= matched["temperature"] <= max(TEMPERATURES)
    rows = [json.loads(line) for line in
            (study / "data/generations/qa/baseline_matched/seed42.jsonl").open()]
    assert {r["temperature"] for r in rows} == {matched["temperature"]}

    comparison = json.loads((study / "metrics/qa/comparison.json").read_text())
    assert comparison["seeds"] == [42]
    assert [(h["metric"], h["against"]) for h in comparison["primary"]["family"]] == [
        ("distinct_classes", "baseline"), ("pass@4", "baseline_matched"),
        ("pass@1", "baseline_matched")]
    assert set(comparison["systems"]) == {"zero_shot", "few_shot", "baseline",
                                          "baseline_matched", "polychromic"}

    plan = json.loads((study / "metrics/qa/power.json").read_text())
    assert [h["against"] for h in plan["hypotheses"]] == ["lora", "matched", "matched"]
    assert set(plan["hypotheses"][2]["prompts_needed"]) == {"10", "20", "40"}

    frontier = json.loads((study / "metrics/qa/frontier.json").read_text())
    knobs = [(p["system"], p["knob"]) for p in frontier["points"]]
    assert knobs.count(("zero_shot", "temperature")) == 5
    assert knobs.count(("baseline", "temperature")) == 5
    assert knobs.count(("polychromic", "adapter_scale")) == 1
    assert knobs.count(("baseline_matched", "evaluated")) == 1
    assert set(frontier["reference_vs_frontier"]) == {"baseline temperature",
                                                      "baseline adapter_scale"}
    assert (study / "plots/qa/frontier/figure3.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    page = (repo / "docs/protocol-results.md").read_text()
    for section in ("## qa", "### Primary family", "vs baseline_matched", "### Figure 3",
                    "### Power plan"):
        assert section in page, section
    assert sh(repo, "dvc", "status", "studies/protocol/dvc.yaml").strip().endswith(
        "Data and pipelines are up to date.")

    # -- the selection on val
    study = repro_study(repo, "selection", tmp_path / "selection-read.jsonl")
    for arm in SPEC["arms"]:
        rows = [json.loads(line) for line in
                (study / f"arms/{arm}/data/val_scores/qa/seed42.jsonl").open()]
        assert len(rows) == 6  # every val question (2 per family)
    result = json.loads((study / "metrics/qa/selection.json").read_text())
    assert result["split"] == "val" and result["lora"] == "lora"
    assert [p["arm"] for p in result["points"]] == ["lora", "qd", "pk"]
    assert [r["arm"] for r in result["rows"]] == ["qd", "pk"]
    eligible = [r["arm"] for r in result["rows"] if r["eligible"]]
    assert result["chosen"] in (eligible or [None])
    assert "## Selection on val: qa" in (study / "metrics/qa/selection.md").read_text()
    assert "up to date" in sh(repo, "dvc", "status", "studies/selection/dvc.yaml")
    # the rule's choice on tiny random models is whatever it is; the confirmation run is
    # tested with an objective selected (pk), as the selection table would say
    result["chosen"] = "pk"
    (study / "metrics/qa/selection.json").write_text(json.dumps(result))

    # -- a seal of this tiny qa's confirmation split
    (repo / "protocol/sealed/qa.sha256").unlink()
    sh(repo, "python", "-m", "polychromic.commands.seal", "--write", "qa")
    sh(repo, "python", "-m", "polychromic.commands.study", "confirmation")
    refused = sh(repo, "dvc", "repro", "studies/confirmation/dvc.yaml:unseal@qa", check=False)
    assert "stays sealed until the protocol is committed" in refused
    assert "studies/protocol/metrics/qa/power.json: not committed" in refused
    assert not (repo / "studies/confirmation/qa/data").exists()
    sh(repo, "git", "add", "-A")
    sh(repo, "git", "commit", "-qm", "the protocol, the power plan, the selection")

    # -- the confirmation run
    trace = tmp_path / "confirmation-read.jsonl"
    confirmation = repro_study(repo, "confirmation", trace)
    assert undeclared_params(repo, trace, ("studies/confirmation",)) == []
    records = [json.loads(line) for line in
               (confirmation / "qa/data/confirmation.jsonl").open()]
    assert len(records) == 3
    generations = [json.loads(line) for line in
                   (confirmation / "qa/data/generations/passk/seed42.jsonl").open()]
    assert [g["id"] for g in generations] == [r["id"] for r in records]
    matched = json.loads((confirmation / "metrics/qa/matched_passk.json").read_text())
    assert matched["split"] == "val"
    protocol_match = json.loads((repo / "studies/protocol/metrics/qa/matched.json").read_text())
    assert json.loads((confirmation / "metrics/qa/matched_polychromic.json").read_text()) == \
        protocol_match  # the protocol's matched temperature, derived again from its val runs
    rows = [json.loads(line) for line in
            (confirmation / "qa/data/generations/baseline_matched_passk/seed42.jsonl").open()]
    assert {r["temperature"] for r in rows} == {matched["temperature"]}
    for reference, against in (("polychromic", "baseline_matched"),
                               ("passk", "baseline_matched_passk")):
        comparison = json.loads(
            (confirmation / f"metrics/qa/{reference}/comparison.json").read_text())
        assert comparison["reference"] == reference and comparison["n_prompts"] == 3
        assert [h["against"] for h in comparison["primary"]["family"]] == [
            "baseline", against, against]
        frontier = json.loads(
            (confirmation / f"metrics/qa/{reference}/frontier.json").read_text())
        assert frontier["split"] == "confirmation" and frontier["reference"] == reference
        assert (confirmation / f"metrics/qa/report/{reference}/table1.md").is_file()
    page = (repo / "docs/confirmation-results.md").read_text()
    for section in ("## qa", "### polychromic", "### passk", "3 confirmation prompts",
                    "`baseline_matched_passk`"):
        assert section in page, section
    assert "up to date" in sh(repo, "dvc", "status", "studies/confirmation/dvc.yaml")
