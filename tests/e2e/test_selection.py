"""End to end: the objectives' selection study (studies/selection/dvc.yaml) on the tiny
model, qa only: LoRA and two candidate objectives, each trained in its own arm folder,
sampled and scored on val, and the rule applied; every stage declares the params it reads;
the root pipeline is left as it was."""

import json

import pytest
import yaml

from tests.helpers import REPO, repro_study, sh, study_repository

TINY_TERM = {"max_new_tokens": 4, "eval_prompts": 2, "eval_samples": 2, "generate_every": 1,
             "n_generations": 3}


@pytest.mark.slow
@pytest.mark.e2e
def test_the_selection_study_trains_each_arm_and_applies_the_rule(tmp_path, qa_root):
    spec = {"common": {"domains": ["qa"], "seeds": [42]},
            "arms": {"lora": {"method": "baseline"},
                     "qd": {"method": "quality_diversity",
                            "quality_diversity": {**TINY_TERM, "weight": 1.0}},
                     "pk": {"method": "passk", "passk": {**TINY_TERM, "weight": 1.0, "k": 2}}}}
    repo = study_repository(tmp_path, qa_root, {
        "studies/selection/dvc.yaml": (REPO / "studies/selection/dvc.yaml").read_text(),
        "studies/selection/selection.yaml": yaml.safe_dump(spec, sort_keys=False)})
    sh(repo, "python", "-m", "polychromic.commands.study", "selection")
    study = repro_study(repo, "selection", tmp_path / "params-read.jsonl")

    for arm in spec["arms"]:
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
    status = sh(repo, "dvc", "status", "studies/selection/dvc.yaml")
    assert "up to date" in status, status
