"""End to end: the λ sweep as a committed study (studies/sweep/dvc.yaml) on the tiny model,
qa only: each arm trains and scores in its own folder with its own params, is compared
with the root run's other systems, and Table 2 and Figure 2 come out; λ = 0 is LoRA to the
last digit; every stage declares the params it reads; the root pipeline is left as it was."""

import json

import pytest
import yaml

from tests.helpers import REPO, repro_study, sh, study_repository


@pytest.mark.slow
@pytest.mark.e2e
def test_the_sweep_runs_each_arm_and_draws_table_2(tmp_path, qa_root):
    spec = {"common": {"domains": ["qa"], "seeds": [42]},
            "arms": {"lambda-0": {"polychromic": {"diversity_weight": 0.0}},
                     "lambda-1": {"polychromic": {"diversity_weight": 1.0}}}}
    repo = study_repository(tmp_path, qa_root, {
        "studies/sweep/dvc.yaml": (REPO / "studies/sweep/dvc.yaml").read_text(),
        "studies/sweep/sweep.yaml": yaml.safe_dump(spec)})
    sh(repo, "python", "-m", "polychromic.commands.study", "sweep")
    study = repro_study(repo, "sweep", tmp_path / "params-read.jsonl")

    def scores(path):
        return [{k: v for k, v in json.loads(line).items() if k != "system"}
                for line in path.open()]
    # λ = 0 runs polychromic's code path with the term off: LoRA's samples and scores
    assert scores(study / "arms/lambda-0/data/scores/qa/polychromic/seed42.jsonl") == scores(
        repo / "data/scores/qa/baseline/seed42.jsonl")
    lambda1 = study / "arms/lambda-1/data/scores/qa/polychromic/seed42.jsonl"
    assert scores(lambda1) != scores(repo / "data/scores/qa/baseline/seed42.jsonl")
    comparison = json.loads((study / "arms/lambda-1/metrics/qa/comparison.json").read_text())
    root_params = yaml.safe_load((repo / "params.yaml").read_text())
    assert set(comparison["systems"]) == set(root_params["systems"])

    rows = json.loads((study / "metrics/qa/table2.json").read_text())
    assert [(r["name"], r["params"]["polychromic.diversity_weight"], r["seeds"])
            for r in rows] == [("lambda-0", 0.0, 1), ("lambda-1", 1.0, 1)]
    csv = (study / "plots/qa/figure2.csv").read_text().splitlines()
    assert [line.split(",")[0] for line in csv[1:3]] == ["lambda-0", "lambda-1"]
    assert (study / "plots/qa/figure2.png").read_bytes()[:4] == b"\x89PNG"
    status = sh(repo, "dvc", "status", "studies/sweep/dvc.yaml")
    assert "up to date" in status, status
