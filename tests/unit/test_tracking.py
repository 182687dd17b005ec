"""What an MLflow run records about itself: the params a stage declares, the dvc.lock of its
pipeline, the base checkpoint, whether the tree differed from the commit."""

import hashlib
import json
import subprocess

from polychromic import tracking


def test_declared_keys_come_out_nested_and_a_missing_one_is_left_out():
    params = {"runtime": {"device": "cpu"}, "qa": {"sampling": {"temperature": 0.7}},
              "evaluate": {"ks": [1, 10]}}
    assert tracking.declared(params, ["runtime", "qa.sampling", "evaluate.ks", "qa.nope",
                                      "nope"]) == {
        "runtime": {"device": "cpu"}, "qa.sampling": {"temperature": 0.7},
        "evaluate.ks": [1, 10]}
    assert tracking.flatten(tracking.declared(params, ["qa.sampling"])) == {
        "qa.sampling.temperature": 0.7}


def test_the_lock_digest_is_the_stages_own_pipelines(tmp_path, monkeypatch):
    (tmp_path / ".dvc").mkdir()
    (tmp_path / "dvc.lock").write_text("root\n")
    study = tmp_path / "studies/protocol"
    study.mkdir(parents=True)
    (study / "dvc.lock").write_text("study\n")
    monkeypatch.chdir(study)  # a study's stage runs in its folder
    digest = {name: hashlib.sha256(text.encode()).hexdigest()
              for name, text in (("root", "root\n"), ("study", "study\n"))}
    assert tracking.lock_digest("train@qa-baseline-42") == digest["root"]
    assert tracking.lock_digest("studies/protocol/dvc.yaml:train@qa-baseline-42") == (
        digest["study"])
    assert tracking.lock_digest("studies/sweep/dvc.yaml:sweep@qa") == "none"


def test_base_model_tags_name_the_checkpoint_and_its_dtype(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"_name_or_path": "Qwen/Qwen3-8B",
                                                      "torch_dtype": "bfloat16"}))
    assert tracking.base_model_tags(tmp_path) == {"base_model": "Qwen/Qwen3-8B",
                                                  "base_model_dtype": "bfloat16"}
    assert tracking.base_model_tags(tmp_path / "missing") == {
        "base_model": str(tmp_path / "missing")}
    # a hub id's pointer (base_model.revision): the repo at its pinned commit
    (tmp_path / "hub.json").write_text(json.dumps({"repo": "Qwen/Qwen3-8B", "revision": "f" * 40,
                                                   "dtype": "bfloat16"}))
    assert tracking.base_model_tags(tmp_path) == {"base_model": f"Qwen/Qwen3-8B@{'f' * 40}",
                                                  "base_model_dtype": "bfloat16"}


def test_a_changed_tracked_file_makes_the_tree_dirty(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert tracking.git_dirty() == "unknown"  # not a repository
    env = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@e", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@e", "PATH": "/usr/bin:/bin"}
    subprocess.run(["git", "init", "-q"], check=True)
    (tmp_path / "params.yaml").write_text("a: 1\n")
    subprocess.run(["git", "add", "params.yaml"], check=True)
    subprocess.run(["git", "commit", "-qm", "x"], check=True, env=env)
    (tmp_path / "untracked.txt").write_text("not the run's code\n")
    assert tracking.git_dirty() == "false"
    (tmp_path / "params.yaml").write_text("a: 2\n")
    assert tracking.git_dirty() == "true"
