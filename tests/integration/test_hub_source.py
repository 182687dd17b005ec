"""A hub base model, pinned by `base_model.revision`, read from the Hugging Face cache and not
copied: the base_model stage writes the tokenizer, config.json and hub.json (repo, commit
sha, dtype) and no weights, and generation from that directory samples exactly what the
same checkpoint saved as a directory samples. The hub here is a cache folder laid out as
huggingface_hub lays it out, read with HF_HUB_OFFLINE (no network): two commits of one
repository, `main` on the second, the params pinning the first."""

import json
import os
import shutil
import subprocess
import sys

import pytest
import yaml

from tests.helpers import assert_one_line_error, tiny_qa_run_params

REPO = "tiny-org/tiny-llama"
PINNED, LATER = "a" * 40, "b" * 40  # commit shas


@pytest.fixture(scope="module")
def hub(tmp_path_factory, tiny_model_dir):
    """A hub cache holding REPO at PINNED (the tiny model) and LATER (other weights), with
    refs/main at LATER."""
    import torch
    from transformers import AutoModelForCausalLM

    cache = tmp_path_factory.mktemp("hub-cache")
    repo = cache / f"models--{REPO.replace('/', '--')}"
    shutil.copytree(tiny_model_dir, repo / "snapshots" / PINNED)
    later = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    with torch.no_grad():
        for parameter in later.parameters():
            parameter.mul_(3.0)
    later.save_pretrained(repo / "snapshots" / LATER)
    for name in os.listdir(tiny_model_dir):  # the tokenizer's files
        if not (repo / "snapshots" / LATER / name).exists():
            shutil.copy(tiny_model_dir / name, repo / "snapshots" / LATER / name)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(LATER)
    return cache


def stage(cwd, hub, module: str, *args: str, revision: str = PINNED):
    params = tiny_qa_run_params()
    params["base_model"].update(source=REPO, revision=revision)
    (cwd / "params.yaml").write_text(yaml.safe_dump(params))
    env = {**os.environ, "HF_HUB_CACHE": str(hub), "HF_HUB_OFFLINE": "1",
           "MLFLOW_TRACKING_URI": f"sqlite:///{cwd / 'mlflow.db'}"}
    return subprocess.run([sys.executable, "-m", f"polychromic.stages.{module}", *args],
                          cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


@pytest.mark.slow
def test_a_pinned_hub_commit_is_read_from_the_cache_and_samples_as_its_checkpoint(
        tmp_path, hub, tiny_model_dir):
    result = stage(tmp_path, hub, "base_model", "--out", "models/base")
    assert result.returncode == 0, result.stderr[-3000:]
    base = tmp_path / "models/base"
    assert json.loads((base / "hub.json").read_text()) == {
        "repo": REPO, "revision": PINNED, "dtype": "float32"}
    assert (base / "config.json").is_file() and (base / "tokenizer_config.json").is_file()
    assert not list(base.glob("*.safetensors")) and not list(base.glob("*.bin"))

    assert stage(tmp_path, hub, "prepare", "--domain", "qa", "--out", "data/qa").returncode == 0
    common = ["--domain", "qa", "--system", "zero_shot", "--seed", "3", "--data", "data/qa"]
    for base_dir, out in [("models/base", "from-hub.jsonl"), (str(tiny_model_dir),
                                                              "from-checkpoint.jsonl")]:
        result = stage(tmp_path, hub, "generate", *common, "--base", base_dir, "--out", out)
        assert result.returncode == 0, result.stderr[-3000:]
    assert (tmp_path / "from-hub.jsonl").read_bytes() == (
        tmp_path / "from-checkpoint.jsonl").read_bytes()


@pytest.mark.slow
def test_a_branch_is_recorded_as_its_commit(tmp_path, hub):
    result = stage(tmp_path, hub, "base_model", "--out", "base", revision="main")
    assert result.returncode == 0, result.stderr[-3000:]
    assert json.loads((tmp_path / "base/hub.json").read_text())["revision"] == LATER


@pytest.mark.parametrize(("revision", "expected"), [
    ("", "'base_model.revision' is empty: a hub id (tiny-org/tiny-llama) must be pinned"),
    ("c" * 40, f"'base_model.revision' {'c' * 40!r} of 'tiny-org/tiny-llama' could not be"),
])
def test_an_unpinned_or_absent_revision_is_refused(tmp_path, hub, revision, expected):
    result = stage(tmp_path, hub, "base_model", "--out", "base", revision=revision)
    assert_one_line_error(result, expected)
    assert not (tmp_path / "base").exists()
