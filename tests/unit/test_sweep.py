"""The λ sweep as a committed study (studies/sweep): its params files are params.yaml with
sweep.yaml laid over, bad specs stop with one line naming the arm, and the sweep stage
builds Table 2 and Figure 2 from the arms' folders."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import yaml

from polychromic.commands import study as study_command
from polychromic.config import UserError
from polychromic.stages import sweep
from polychromic.studies import sweep_files
from tests.helpers import REPO, default_params


def test_the_committed_sweep_params_are_up_to_date(monkeypatch):
    """A change to params.yaml or sweep.yaml that `polychromic study sweep` has not seen fails
    here, as does an arm's folder left from an arm sweep.yaml no longer has."""
    monkeypatch.chdir(REPO)
    for path, text in sweep_files().items():
        assert (REPO / path).read_text() == text, f"{path}: out of date: polychromic study sweep"
    done = subprocess.run([sys.executable, "-m", "polychromic.commands.study", "sweep", "--check"],
                          cwd=REPO, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


@pytest.fixture
def project(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(default_params()))
    (tmp_path / "studies/sweep").mkdir(parents=True)
    return tmp_path


def spec(project, text):
    (project / "studies/sweep/sweep.yaml").write_text(text)


def test_each_arm_is_params_yaml_with_common_and_the_arm_laid_over(project):
    spec(project, "common: {domains: [replies], seeds: [42]}\n"
                  "arms:\n  low: {polychromic: {diversity_weight: 0.1}}\n"
                  "  high: {polychromic: {diversity_weight: 3.0}}\n")
    study_command.main(["sweep"])
    base = default_params()
    for arm, weight in (("low", 0.1), ("high", 3.0)):
        params = yaml.safe_load((project / f"studies/sweep/arms/{arm}/params.yaml").read_text())
        assert params["polychromic"] == {**base["polychromic"], "diversity_weight": weight}
        assert params["domains"] == ["replies"] and params["seeds"] == [42]
        assert {k: v for k, v in params.items() if k not in ("polychromic", "domains",
                                                             "seeds")} == {
            k: v for k, v in base.items() if k not in ("polychromic", "domains", "seeds")}
    study = yaml.safe_load((project / "studies/sweep/params.yaml").read_text())
    assert study["arms"] == ["low", "high"] and study["domains"] == ["replies"]
    study_command.main(["sweep", "--check"])
    (project / "studies/sweep/arms/old").mkdir()
    (project / "studies/sweep/arms/old/params.yaml").write_text("seeds: [1]\n")
    with pytest.raises(SystemExit) as stop:
        study_command.main(["sweep", "--check"])
    assert stop.value.code == 1


@pytest.mark.parametrize("text,message", [
    ("arms: {}\n", "'arms' must map each arm's name to its params"),
    ("arms: {a: {polychromic: {diversity_weight: -1}}}\n",
     "arms.a: .*polychromic.diversity_weight"),
    ("arms: {'../x': {}}\n", r"arms\.\.\./x: a name of letters"),
    ("arms: {a: {}}\nextra: 1\n", r"unknown key\(s\) \['extra'\]"),
    ("common: [1]\narms: {a: {}}\n", "'common' must be a mapping"),
])
def test_a_bad_sweep_spec_stops_naming_the_key_and_writes_nothing(project, text, message):
    spec(project, text)
    with pytest.raises(UserError, match=message):
        study_command.main(["sweep"])
    assert not (project / "studies/sweep/params.yaml").exists()
    assert not (project / "studies/sweep/arms").exists()


def arm(project, name, weight, semantic, pass1, seeds=(42,)):
    folder = project / "arms" / name
    folder.mkdir(parents=True)
    params = {**default_params(), "seeds": list(seeds)}
    params["polychromic"] = {**params["polychromic"], "diversity_weight": weight}
    (folder / "params.yaml").write_text(yaml.safe_dump(params))
    metrics = folder / "metrics/replies"
    for offset, seed in enumerate(seeds):
        (metrics / "polychromic").mkdir(parents=True, exist_ok=True)
        (metrics / "polychromic" / f"seed{seed}.json").write_text(json.dumps({
            "diversity": {"semantic": semantic + offset / 10, "self_bleu": 0.2},
            "quality": {"rouge_l": 0.1}, "passk": {"pass@1": pass1, "pass@10": 0.7}}))
    system = {"semantic_independent": {"mean": semantic, "ci95": [semantic - 0.1,
                                                                   semantic + 0.1]},
              "pass@1": {"mean": pass1, "ci95": [pass1 - 0.05, pass1 + 0.05]}}
    lora = {"semantic_independent": {"mean": 0.5, "ci95": [0.4, 0.6]},
            "pass@1": {"mean": 0.3, "ci95": [0.2, 0.4]}}
    (metrics / "comparison.json").write_text(json.dumps({
        "primary": {"hypotheses": {"diversity": "semantic_independent"}}, "correction": "holm",
        "systems": {"polychromic": system, "baseline": lora},
        "comparisons": [{"metric": "semantic", "a": "polychromic", "b": "baseline",
                         "mean_difference": semantic - 0.5, "wilcoxon_p_holm": 0.01}]}))


def test_the_sweep_stage_tables_and_draws_each_arm(project):
    arm(project, "lambda-0", 0.0, 0.5, 0.3)
    arm(project, "lambda-1", 1.0, 0.7, 0.2, seeds=(42, 7))
    (project / "params.yaml").write_text(yaml.safe_dump({"arms": ["lambda-0", "lambda-1"]}))
    sweep.main(["--domain", "replies", "--arms", "arms", "--out", "out", "--figures", "fig"])
    rows = json.loads((project / "out/table2.json").read_text())
    assert [r["name"] for r in rows] == ["lambda-0", "lambda-1"]
    assert rows[1]["seeds"] == 2 and rows[1]["metrics"]["semantic"] == pytest.approx(0.75)
    assert rows[1]["metrics"]["semantic_vs_baseline"] == pytest.approx(0.2)
    md = (project / "out/table2.md").read_text()
    assert "Table 2: the λ sweep (replies)" in md and "Commit" not in md
    header, _, first, second = md.splitlines()[2:6]
    assert header.startswith("| Experiment | λ | N | Other params | Seeds |")  # seeds vary
    assert first.startswith("| lambda-0 | 0.0 | 8 |  | 1 |")
    assert second.startswith("| lambda-1 | 1.0 | 8 | seeds=[42, 7] | 2 |")
    csv = (project / "fig/figure2.csv").read_text().splitlines()
    assert len(csv) == 1 + 2 + 1  # the header, each arm, LoRA (the prompted systems: absent)
    assert csv[1].startswith("lambda-0,polychromic,0.0,1,semantic_independent,0.300000")
    assert (project / "fig/figure2.png").read_bytes()[:4] == b"\x89PNG"


def test_an_arm_without_its_results_stops_and_writes_nothing(project):
    arm(project, "lambda-0", 0.0, 0.5, 0.3)
    arm(project, "lambda-1", 1.0, 0.7, 0.2)
    (project / "arms/lambda-1/metrics/replies/comparison.json").unlink()
    (project / "params.yaml").write_text(yaml.safe_dump({"arms": ["lambda-0", "lambda-1"]}))
    with pytest.raises(UserError, match="lambda-1/metrics/replies/comparison.json: missing"):
        sweep.main(["--domain", "replies", "--arms", "arms", "--out", "out", "--figures",
                    "fig"])
    assert not (project / "out").exists() and not (project / "fig").exists()
