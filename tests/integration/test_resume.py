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

from tests.helpers import PAIRS, curves, tiny_train_params, write_pairs


def project(tmp_path, model_dir):
    params = tiny_train_params(max_steps=8, batch_size=2, eval_every=2, checkpoint_every=2,
                               early_stopping_patience=3)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    write_pairs(tmp_path / "data", {"train": PAIRS, "val": PAIRS[:4]})
    return ["--domain", "replies", "--method", "polychromic", "--seed", "3",
            "--base", str(model_dir), "--data", "data"]


@pytest.mark.slow
def test_a_killed_run_resumes_and_ends_with_the_uninterrupted_adapter(tmp_path,
                                                                      untied_model_dir):
    args = project(tmp_path, untied_model_dir)
    env = {**os.environ, "OMP_NUM_THREADS": "2",
           "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}"}
    whole = subprocess.run([sys.executable, "-m", "polychromic.stages.train", *args,
                            "--out", "whole", "--plots", "plots/whole"], cwd=tmp_path,
                           capture_output=True, text=True, timeout=300, env=env)
    assert whole.returncode == 0, whole.stderr[-3000:]

    command = [sys.executable, "-m", "polychromic.stages.train", *args, "--out", "killed",
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
