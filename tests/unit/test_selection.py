"""The selection rule of docs/objectives.md on crafted arms."""

import pytest

from polychromic.selection import select


def arm(name, weight, pass1, pass10, diversity):
    return {"arm": name, "weight": weight, "pass@1": {"mean": pass1},
            "pass@10": {"mean": pass10}, "distinct_classes": {"mean": diversity}}


def test_the_best_eligible_pass_at_10_wins():
    arms = [arm("lora", None, 0.50, 0.70, 3.0),
            arm("qd-0.1", 0.1, 0.49, 0.72, 3.1),   # within the margin (0.475), more diverse
            arm("qd-1", 1.0, 0.40, 0.90, 5.0),     # pass@1 too low
            arm("set-0.3", 0.3, 0.55, 0.80, 2.9),  # less diverse than LoRA
            arm("pk-0.3", 0.3, 0.50, 0.75, 3.0)]   # eligible, best pass@10
    result = select(arms, "lora", "distinct_classes", 0.05)
    assert result["quality_floor"] == pytest.approx(0.475)
    assert result["chosen"] == "pk-0.3"
    why = {r["arm"]: r["why_not"] for r in result["rows"]}
    assert why == {"qd-0.1": [], "qd-1": ["pass@1 below LoRA's minus the margin"],
                   "set-0.3": ["distinct_classes below LoRA's"], "pk-0.3": []}


def test_ties_go_to_the_smaller_weight_then_the_earlier_arm():
    arms = [arm("lora", None, 0.5, 0.7, 3.0), arm("a-1", 1.0, 0.5, 0.8, 3.0),
            arm("b-0.3", 0.3, 0.5, 0.8 + 1e-12, 3.0), arm("c-0.3", 0.3, 0.5, 0.8, 3.0)]
    assert select(arms, "lora", "distinct_classes", 0.05)["chosen"] == "b-0.3"


def test_none_eligible_chooses_nothing():
    arms = [arm("lora", None, 0.5, 0.7, 3.0), arm("a", 0.1, 0.1, 0.9, 9.0)]
    assert select(arms, "lora", "distinct_classes", 0.05)["chosen"] is None
    with pytest.raises(ValueError, match="no LoRA arm"):
        select(arms[1:], "lora", "distinct_classes", 0.05)


def test_the_committed_selection_params_are_up_to_date(monkeypatch):
    from polychromic.studies import selection_files
    from tests.helpers import REPO

    monkeypatch.chdir(REPO)
    for path, text in selection_files().items():
        assert (REPO / path).read_text() == text, f"{path}: run polychromic study selection"


def test_selection_arms_name_their_method_and_domains(tmp_path, monkeypatch):
    import yaml

    from polychromic.config import UserError
    from polychromic.studies import selection_files
    from tests.helpers import default_params

    monkeypatch.chdir(tmp_path)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(default_params()))
    (tmp_path / "studies/selection").mkdir(parents=True)
    spec = tmp_path / "studies/selection/selection.yaml"
    spec.write_text("common: {domains: [code, qa], seeds: [42, 7]}\narms:\n"
                    "  lora: {method: baseline}\n"
                    "  pk: {method: passk, domains: [qa], passk: {weight: 1.0, k: 2}}\n")
    files = selection_files()
    study = yaml.safe_load(files[next(p for p in files if p.name == "params.yaml"
                                      and p.parent.name == "selection")])
    assert list(study["runs"]) == ["lora-code-42", "lora-code-7", "lora-qa-42", "lora-qa-7",
                                   "pk-qa-42", "pk-qa-7"]
    assert study["runs"]["pk-qa-7"] == {"arm": "pk", "method": "passk", "domain": "qa",
                                        "seed": 7}
    pk = yaml.safe_load(files[next(p for p in files if p.parent.name == "pk")])
    assert pk["methods"] == ["baseline", "polychromic", "passk"] and pk["domains"] == ["qa"]
    assert pk["passk"] == {"weight": 1.0, "k": 2}
    spec.write_text("arms:\n  x: {passk: {weight: 1}}\n")
    with pytest.raises(UserError, match="arms.x: needs 'method: <a method>'"):
        selection_files()
    spec.write_text("common: {domains: [qa]}\narms:\n  x: {method: baseline, domains: [code]}\n")
    with pytest.raises(UserError, match=r"arms.x.domains: \['code'\] not in common"):
        selection_files()


def test_the_select_stage_applies_the_rule_to_the_arms_val_scores(tmp_path, monkeypatch):
    import json

    import yaml

    from polychromic.stages import select as stage
    from tests.helpers import default_params

    monkeypatch.chdir(tmp_path)
    params = default_params()
    arms = {"lora": {"method": "baseline", "domains": ["qa"]},
            "qd-0.3": {"method": "quality_diversity", "domains": ["qa"]},
            "qd-1": {"method": "quality_diversity", "domains": ["qa"]}}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({**params, "arms": arms,
                                                          "seeds": [42]}))
    values = {"lora": (0.5, 0.7, 3.0), "qd-0.3": (0.49, 0.8, 3.5), "qd-1": (0.3, 0.9, 5.0)}
    for arm, (p1, p10, div) in values.items():
        folder = tmp_path / "arms" / arm
        (folder / "data/val_scores/qa").mkdir(parents=True)
        weight = None if arm == "lora" else float(arm.split("-")[1])
        arm_params = {**params, "quality_diversity": {"weight": weight}} if weight else params
        (folder / "params.yaml").write_text(yaml.safe_dump(arm_params))
        rows = [{"id": f"q{i}", "pass@1": p1, "pass@10": p10, "distinct_classes": div}
                for i in range(4)]
        (folder / "data/val_scores/qa/seed42.jsonl").write_text(
            "".join(json.dumps(r) + "\n" for r in rows))
    stage.main(["--domain", "qa", "--arms", "arms", "--out", "out"])
    result = json.loads((tmp_path / "out/selection.json").read_text())
    assert result["chosen"] == "qd-0.3" and result["split"] == "val"
    md = (tmp_path / "out/selection.md").read_text()
    assert "| qd-0.3 | quality_diversity | 0.3 | 0.490 [0.490, 0.490] |" in md
    assert "**chosen**" in md and "pass@1 below LoRA's minus the margin" in md
