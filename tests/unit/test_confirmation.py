"""The confirmation run's plumbing (studies/confirmation; docs/protocol.md): its params per
domain from the protocol and the selection's choice, the stage that reads the sealed split
only once the protocol is committed, and generate and evaluate answering it only from that
stage's file."""

import json
import subprocess

import pytest
import yaml

from polychromic.config import UserError
from polychromic.domains import load_domain
from polychromic.protocol import SEALED, seal_text, split_path, uncommitted
from tests.helpers import (
    REPO,
    assert_one_line_error,
    default_params,
    run_stage,
    selection_outputs,
    sh,
)


@pytest.fixture
def study_root(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(default_params(), sort_keys=False))
    for name in ("protocol/protocol.yaml", "confirmation/confirmation.yaml"):
        (tmp_path / "studies" / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "studies" / name).write_text((REPO / "studies" / name).read_text())
    return tmp_path


def written(files: dict, path: str) -> dict:
    return yaml.safe_load(next(text for p, text in files.items() if p.as_posix() == path))


def test_each_domain_carries_the_protocol_and_its_selected_objective(study_root):
    from polychromic.studies import confirmation_files

    selection_outputs(study_root, {"replies": "qd-1", "code": None, "qa": "pk-1"})
    files = confirmation_files()
    assert sorted(p.as_posix() for p in files) == [
        "studies/confirmation/code/params.yaml", "studies/confirmation/params.yaml",
        "studies/confirmation/qa/params.yaml", "studies/confirmation/replies/params.yaml"]
    qa = written(files, "studies/confirmation/qa/params.yaml")
    protocol = yaml.safe_load((REPO / "studies/protocol/protocol.yaml").read_text())
    assert qa["domains"] == ["qa"] and qa["seeds"] == protocol["seeds"] == [42, 123, 456]
    assert qa["methods"] == ["baseline", "polychromic", "passk"]
    assert qa["systems"] == [*protocol["systems"], "passk", "baseline_matched_passk"]
    assert qa["passk"] == {"weight": 1.0} and qa["compare"] == {
        **default_params()["compare"], **protocol["compare"]}
    code = written(files, "studies/confirmation/code/params.yaml")
    assert code["methods"] == ["baseline", "polychromic"]  # none was eligible on code
    assert code["systems"] == protocol["systems"]

    study = written(files, "studies/confirmation/params.yaml")
    assert study["domains"] == ["replies", "code", "qa"]
    assert study["unseal"]["qa"] == {"domain": "qa", "prompts": 0}
    # LoRA and polychromic: the protocol run's adapters; the objective's first seed: the
    # selection's; its other seeds trained here
    assert study["trained"]["qa-baseline-123"]["adapter"] == \
        "../../protocol/models/qa/baseline/seed123"
    assert study["trained"]["qa-passk-42"]["adapter"] == \
        "../../selection/arms/pk-1/models/qa/seed42"
    assert study["trained"]["qa-passk-456"]["adapter"] == "models/passk/seed456"
    assert sorted(study["trainings"]) == ["qa-passk-123", "qa-passk-456",
                                          "replies-quality_diversity-123",
                                          "replies-quality_diversity-456"]
    assert study["matches"]["qa-polychromic"] == {
        "domain": "qa", "method": "polychromic",
        "reference": "../../protocol/metrics/val/qa/polychromic/evaluated.json"}
    assert study["matches"]["qa-passk"] == {
        "domain": "qa", "method": "passk",
        "reference": "../../selection/arms/pk-1/metrics/qa/seed42.json"}
    assert study["matched"]["qa-baseline_matched_passk-123"] == {
        "domain": "qa", "system": "baseline_matched_passk", "seed": 123,
        "adapter": "../../protocol/models/qa/baseline/seed123",
        "temperature": "../metrics/qa/matched_passk.json"}
    assert study["matched"]["code-baseline_matched-42"]["temperature"] == \
        "../metrics/code/matched_polychromic.json"
    assert study["comparisons"]["qa-passk"] == {
        "domain": "qa", "reference": "passk", "matched": "baseline_matched_passk",
        "against": "baseline,baseline_matched_passk,zero_shot,few_shot,polychromic"}
    assert study["comparisons"]["code-polychromic"]["matched"] == "baseline_matched"
    assert "code-passk" not in study["comparisons"]
    assert len(study["evaluated"]) == 3 * (7 + 5 + 7)
    assert sorted(study["frontier_trained"]) == [
        "code-baseline", "code-polychromic", "qa-baseline", "qa-passk", "qa-polychromic",
        "replies-baseline", "replies-polychromic", "replies-quality_diversity"]


def test_before_the_selection_has_chosen_the_run_has_no_stages(study_root):
    """DVC parses every dvc.yaml of a repository: the committed params must let a fresh
    clone's `dvc repro` read this one, with nothing to run."""
    from polychromic.studies import confirmation_files

    files = confirmation_files()
    assert list(files) == [next(iter(files))]
    study = written(files, "studies/confirmation/params.yaml")
    assert study["domains"] == [] and all(study[key] == {} for key in (
        "unseal", "trainings", "trained", "matched", "evaluated", "comparisons", "pages"))
    committed = yaml.safe_load((REPO / "studies/confirmation/params.yaml").read_text())
    assert committed["domains"] == [] or (
        REPO / "studies/selection/metrics/qa/selection.json").is_file()
    selection_outputs(study_root, {"qa": None})
    with pytest.raises(UserError, match="replies/selection.json: no such file"):
        confirmation_files()


def test_the_matched_system_names_are_known_systems():
    """`<method>_matched_<other>` passes the params check and evaluate's system check."""
    from polychromic.settings import matched_systems, system_method

    assert matched_systems(["baseline", "passk"]) == [
        "baseline_matched", "passk_matched", "baseline_matched_passk", "passk_matched_baseline"]
    assert system_method("baseline_matched_passk") == "baseline"
    assert system_method("baseline_matched") == system_method("baseline") == "baseline"


def test_the_writer_refuses_what_would_not_be_the_selected_training(study_root):
    from polychromic.studies import confirmation_files

    selection_outputs(study_root, {"replies": None, "code": None, "qa": "pk-1"},
                      {"pk-1": {"train": {"max_steps": 7}}})
    with pytest.raises(UserError, match="qa's objective was selected with other train"):
        confirmation_files()
    selection_outputs(study_root, {"replies": None, "code": None, "qa": "gone"})
    with pytest.raises(UserError, match="chose 'gone', which is not an arm"):
        confirmation_files()
    selection_outputs(study_root, {"replies": None, "code": None, "qa": None})
    spec = study_root / "studies/confirmation/confirmation.yaml"
    spec.write_text("prompts: {qa: -1}\n")
    with pytest.raises(UserError, match="prompts.qa: a count of sealed records"):
        confirmation_files()
    spec.write_text("prompts: {nope: 3}\n")
    with pytest.raises(UserError, match="'prompts' and 'per_domain' map each of 'domains'"):
        confirmation_files()
    spec.write_text("per_domain: {qa: {generate: {n: 0}}}\n")
    with pytest.raises(UserError, match="qa: .*generate.n"):
        confirmation_files()
    spec.write_text("per_domain: {qa: {generate: {n: 20}}}\n")
    files = confirmation_files()
    assert written(files, "studies/confirmation/qa/params.yaml")["generate"]["n"] == 20
    assert written(files, "studies/confirmation/code/params.yaml")["generate"]["n"] == 10
    spec.write_text("prompts: {}\nsizes: 1\n")
    with pytest.raises(UserError, match=r"unknown key\(s\) \['sizes'\]"):
        confirmation_files()


def test_generate_and_evaluate_answer_the_confirmation_split_only_from_its_file(tmp_path):
    assert split_path("data/qa", "dev", None).as_posix() == "data/qa/dev.jsonl"
    assert split_path("data/qa", "confirmation", "c.jsonl").as_posix() == "c.jsonl"
    with pytest.raises(UserError, match="--split confirmation: answers only the records"):
        split_path("data/qa", "confirmation", None)
    with pytest.raises(UserError, match="--unsealed: only with --split confirmation"):
        split_path("data/qa", "val", "c.jsonl")
    for stage in ("generate", "evaluate"):
        result = run_stage(tmp_path, stage, [
            "--domain", "qa", "--system", "zero_shot", "--seed", "1", "--split",
            "confirmation", "--data", "data", "--out" if stage == "generate" else "--metrics",
            "x", *(["--base", "b"] if stage == "generate" else
                   ["--generations", "g.jsonl", "--scores", "s"])], default_params())
        assert_one_line_error(result, "--split confirmation: answers only the records")


def git_repository(path):
    sh(path, "git", "init", "-q")
    sh(path, "git", "add", "-A")
    sh(path, "git", "commit", "-qm", "first")


def test_uncommitted_names_each_file_git_does_not_hold_as_committed(tmp_path):
    (tmp_path / "a.md").write_text("a")
    (tmp_path / "d").mkdir()
    (tmp_path / "d/b.json").write_text("{}")
    assert uncommitted([tmp_path / "a.md"], tmp_path)[0].endswith(
        "not in a git repository (the confirmation run needs the protocol committed)")
    git_repository(tmp_path)
    assert uncommitted(["a.md", "d"], tmp_path) == []
    (tmp_path / "a.md").write_text("changed")
    (tmp_path / "d/new.json").write_text("{}")
    (tmp_path / "c.md").write_text("c")
    assert uncommitted(["a.md", "d", "c.md", "gone.md"], tmp_path) == [
        "a.md: changed since its last commit", "d: changed since its last commit",
        "c.md: not committed", "gone.md: no such file"]


def test_unseal_writes_the_sealed_records_only_after_the_protocol_is_committed(tmp_path):
    params = default_params()
    params["qa"]["data"]["confirmation_per_family"] = 3
    domain = load_domain("qa", params)
    confirmation = domain.load_splits()["confirmation"]
    (tmp_path / SEALED).mkdir(parents=True)
    (tmp_path / SEALED / "qa.sha256").write_text(seal_text(domain, confirmation))
    (tmp_path / "protocol.md").write_text("the protocol")
    args = ["--domain", "qa", "--frozen", "protocol.md", str(SEALED / "qa.sha256"),
            "--prompts", "4", "--out", "out/confirmation.jsonl"]
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    git_repository(tmp_path)
    (tmp_path / "protocol.md").write_text("the protocol, changed after the commit")
    result = run_stage(tmp_path, "unseal", args, params)
    assert_one_line_error(result, "stays sealed until the protocol is committed: "
                          "protocol.md: changed since its last commit")
    assert not (tmp_path / "out").exists()
    subprocess.run(["git", "checkout", "-q", "protocol.md"], cwd=tmp_path, check=True)
    result = run_stage(tmp_path, "unseal", args, params)
    assert result.returncode == 0, result.stderr
    rows = [json.loads(line) for line in (tmp_path / "out/confirmation.jsonl").open()]
    assert rows == confirmation[:4] and len(confirmation) == 9
    # other data settings: not the sealed split
    changed = {**params, "qa": {**params["qa"], "data": {**params["qa"]["data"],
                                                           "confirmation_seed": 5}}}
    result = run_stage(tmp_path, "unseal", args, changed)
    assert_one_line_error(result, "sealed with other 'qa.data' settings")
    result = run_stage(tmp_path, "unseal", [*args[:-4], "--prompts", "10", *args[-2:]], params)
    assert_one_line_error(result, "--prompts 10: the qa seal holds 9 records")


def test_the_committed_confirmation_params_are_up_to_date(monkeypatch):
    from polychromic.studies import confirmation_files

    monkeypatch.chdir(REPO)
    for path, text in confirmation_files().items():
        assert (REPO / path).read_text() == text, f"{path}: run polychromic study confirmation"


def test_the_data_hash_is_the_same_when_a_stage_traces_its_params(tmp_path):
    """Under POLYCHROMIC_PARAMS_TRACE a section's mappings are a dict subclass, which
    `dataclasses.asdict` cannot rebuild: the seal's data hash must not depend on it."""
    from polychromic.config import TracedParams
    from polychromic.protocol import data_hash

    traced = TracedParams.start(default_params(), tmp_path / "read.jsonl")
    assert data_hash(load_domain("qa", traced)) == data_hash(load_domain("qa", default_params()))
