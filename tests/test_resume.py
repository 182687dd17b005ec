"""Resumable training: a train run killed with SIGKILL and started again resumes from its last
complete checkpoint and ends with the adapter of an uninterrupted run on the same thread
count, bit for bit, with the same curves and summary files (io.SIGNIFICANT_DIGITS). (Across
thread counts, packed batches differ in the last bits of the adapter: not tested.)"""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import yaml

from polychromic import checkpoints
from tests.conftest import REPO

PAIRS = [("hi, how are you?", "good thanks, you?"),
         ("what did you do this weekend", "went hiking with my sister"),
         ("lol", "haha"), ("do you like pizza or pasta more?", "pizza, always"),
         ("just got home", "welcome back! long day?"), ("it's raining again", "ugh, same here")]


def test_only_complete_checkpoints_of_the_same_run_are_resumed(tmp_path):
    folder = tmp_path / "ckpt"
    assert checkpoints.resumable(folder, "run-a") is None
    for step, complete in [(2, True), (4, True), (6, False)]:  # 6: killed while saving
        (folder / f"checkpoint-{step}").mkdir()
        if complete:
            (folder / f"checkpoint-{step}" / checkpoints.COMPLETE).write_text("")
    assert checkpoints.resumable(folder, "run-a") == folder / "checkpoint-4"
    assert not (folder / "checkpoint-6").exists()
    # another configuration (params, data, code): nothing of this run is resumed
    assert checkpoints.resumable(folder, "run-b") is None
    assert sorted(p.name for p in folder.iterdir()) == [checkpoints.FINGERPRINT]
    assert (folder / checkpoints.FINGERPRINT).read_text() == "run-b"


def test_fingerprint_follows_settings_file_bytes_and_stamps(tmp_path):
    data, weights = tmp_path / "train.jsonl", tmp_path / "model.bin"
    data.write_text("a")
    weights.write_bytes(b"w")
    base = checkpoints.fingerprint({"lr": 1}, [data], [weights])
    assert base == checkpoints.fingerprint({"lr": 1}, [data], [weights])
    assert base != checkpoints.fingerprint({"lr": 2}, [data], [weights])
    data.write_text("b")
    assert base != checkpoints.fingerprint({"lr": 1}, [data], [weights])
    data.write_text("a")
    os.utime(weights, ns=(0, 0))
    assert base != checkpoints.fingerprint({"lr": 1}, [data], [weights])


def project(tmp_path, model_dir):
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["train"].update(max_steps=8, batch_size=2, eval_every=2, checkpoint_every=2,
                           eval_examples=4, logging_every=1, warmup_steps=0, max_length=128,
                           early_stopping_patience=3)
    params["train"]["lora"].update(r=2, alpha=4)
    params["polychromic"].update(n_generations=2, max_new_tokens=4, eval_prompts=2,
                                 eval_samples=2, generate_every=1, diversity_metric="distinct")
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    data = tmp_path / "data"
    data.mkdir()
    for split, pairs in (("train", PAIRS), ("val", PAIRS[:4])):
        (data / f"{split}.jsonl").write_text("".join(
            json.dumps({"id": f"{split}-{i}", "prompt": p, "references": [r], "task": {}}) + "\n"
            for i, (p, r) in enumerate(pairs)))
    return ["--domain", "replies", "--method", "polychromic", "--seed", "3",
            "--base", str(model_dir), "--data", "data"]


def curves(plots):
    """step and value of every logged curve (DVCLive's timestamps differ between runs)."""
    return {str(path.relative_to(plots)): [line.split("\t")[1:] for line in
                                           path.read_text().splitlines()]
            for path in sorted(plots.rglob("*.tsv"))}


@pytest.mark.slow
def test_a_killed_run_resumes_and_ends_with_the_uninterrupted_adapter(tmp_path,
                                                                      untied_model_dir):
    args = project(tmp_path, untied_model_dir)
    env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "OMP_NUM_THREADS": "2",
           "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}"}
    whole = subprocess.run([sys.executable, "-m", "polychromic.train", *args, "--out", "whole",
                            "--plots", "plots/whole"], cwd=tmp_path, capture_output=True,
                           text=True, timeout=300, env=env)
    assert whole.returncode == 0, whole.stderr[-3000:]

    command = [sys.executable, "-m", "polychromic.train", *args, "--out", "killed",
               "--plots", "plots/killed"]
    process = subprocess.Popen(command, cwd=tmp_path, env=env, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    folder = tmp_path / "killed.checkpoints"
    deadline = time.monotonic() + 240
    while not list(folder.glob("checkpoint-*/complete")) and process.poll() is None:
        assert time.monotonic() < deadline, "no checkpoint within 240 s"
        time.sleep(0.01)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert process.returncode == -signal.SIGKILL, "the run ended before it could be killed"
    assert not (tmp_path / "killed").exists()
    # what a kill can leave besides: a half-written checkpoint and io.atomic_path's folder
    (folder / "checkpoint-999").mkdir()
    (tmp_path / ".killed.abc123").mkdir()

    result = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "resuming from" in result.stdout
    resumed_at = int(result.stdout.split("(step ")[1].split(")")[0])
    assert 2 <= resumed_at < 8
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    for name in ("adapter_model.safetensors", "train_summary.json"):
        assert (killed / name).read_bytes() == (whole / name).read_bytes(), name
    for name in ("plots/killed/metrics.json", "plots/whole/metrics.json"):  # DVCLive's summary
        assert json.loads((tmp_path / name).read_text())["final"]["eval_loss"] == json.loads(
            (whole / "train_summary.json").read_text())["eval_loss"]
    summary = json.loads((killed / "train_summary.json").read_text())
    assert summary["steps"] == 8 and "train_seconds" not in summary
    assert summary["best_step"] is None or summary["best_step"] % 2 == 0
    assert curves(tmp_path / "plots/killed") == curves(tmp_path / "plots/whole")
    assert not folder.exists() and not (tmp_path / ".killed.abc123").exists()
