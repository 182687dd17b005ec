"""End to end: the protocol run (studies/protocol/dvc.yaml) on the tiny model, qa only, one
seed (averaging over seeds is compare's, run with a second seed in tests/e2e/test_pipeline.py):
LoRA matched on val, the power plan, every system on dev with the matched comparison in the
primary family, and Figure 3's frontiers; every stage declares the params it reads, and the
root pipeline is left as it was."""

import json

import pytest
import yaml

from tests.e2e.conftest import STUDY_TEMPERATURES as TEMPERATURES
from tests.helpers import REPO, repro_study, sh, study_repository


@pytest.mark.slow
@pytest.mark.e2e
def test_the_protocol_runs_and_compares_at_matched_diversity(tmp_path, qa_root):
    overlay = yaml.safe_load((REPO / "studies/protocol/protocol.yaml").read_text())
    overlay["seeds"] = [42]  # frontier.seed: the frontiers and val read its adapters
    repo = study_repository(tmp_path, qa_root, {
        "studies/protocol/dvc.yaml": (REPO / "studies/protocol/dvc.yaml").read_text(),
        "studies/protocol/protocol.yaml": yaml.safe_dump(overlay)})
    sh(repo, "python", "-m", "polychromic.commands.protocol")
    study = repro_study(repo, "protocol", tmp_path / "params-read.jsonl")

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
