"""Training with `runtime.processes: 2` (DDP under torch.distributed.run, gloo on the CPU):
a polychromic run (each process samples for its own prompts) ends with one adapter, written
by the main process, and the loss curve of one process at the same global batch."""

import json
import os
import subprocess
import sys

import pytest
import yaml

from tests.helpers import PAIRS, curves, tiny_train_params, write_pairs

# the losses of one and two processes agree to float32 rounding of differently split sums
TOLERANCE = 1e-5
# The term's samples differ between one and two processes (each process draws its own), so
# the curves are compared with a weight small enough that its share of each update is far
# below the tolerance; the term is still sampled, scored and backpropagated on every step.
TINY_WEIGHT = 1e-6


def run(tmp_path, model_dir, name: str, method: str, processes: int, batch_size: int):
    folder = tmp_path / name
    params = tiny_train_params(max_steps=4, batch_size=batch_size, eval_every=2,
                               learning_rate=0.02, checkpoint_every=2)
    params["runtime"]["processes"] = processes
    params["train"]["lora"].update(dropout=0.0)  # dropout: per-process masks
    params["polychromic"].update(diversity_weight=TINY_WEIGHT)
    (folder / "data").mkdir(parents=True)
    (folder / "params.yaml").write_text(yaml.safe_dump(params))
    pairs = PAIRS + [(f"{p} (again)", f"{r}!") for p, r in PAIRS]  # 12: 3 steps of 4
    write_pairs(folder / "data", {"train": pairs, "val": PAIRS[:4]})
    env = {**os.environ, "OMP_NUM_THREADS": "1",
           "MLFLOW_TRACKING_URI": f"sqlite:///{folder / 'mlflow.db'}"}
    result = subprocess.run(
        [sys.executable, "-m", "polychromic.stages.train", "--domain", "replies",
         "--method", method, "--seed", "3", "--base", str(model_dir), "--data", "data",
         "--out", "adapter", "--plots", "plots"], cwd=folder, env=env, capture_output=True,
        text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    return folder, result.stdout


def losses(folder):
    return {name: [float(row[0]) for row in rows[1:]]
            for name, rows in curves(folder / "plots").items() if name.endswith("loss.tsv")}


@pytest.mark.slow
def test_two_processes_save_one_adapter_and_match_one_at_the_same_global_batch(
        tmp_path, untied_model_dir):
    one, _ = run(tmp_path, untied_model_dir, "one", "polychromic", 1, 4)
    two, stdout = run(tmp_path, untied_model_dir, "two", "polychromic", 2, 2)
    expected, got = losses(one), losses(two)
    train, val = "plots/metrics/train/loss.tsv", "plots/metrics/eval/loss.tsv"
    quality, combined = (f"plots/metrics/train/{name}_loss.tsv" for name in ("quality",
                                                                             "combined"))
    assert set(got) == set(expected) >= {train, val, quality, combined}
    # the trainer's own curves are averaged over the processes, like the Trainer's loss (the
    # term's value is of each process's own samples, which differ by design)
    for name in (train, val, quality, combined):
        assert len(got[name]) == len(expected[name]) > 0, name
        assert got[name] == pytest.approx(expected[name], rel=TOLERANCE), name
    # the updates moved the val loss: the curves agree on the steps, not just the start
    assert abs(expected[val][0] - expected[val][-1]) > 1e-3
    summary = json.loads((two / "adapter" / "train_summary.json").read_text())
    assert summary["steps"] == 4 and summary["epochs"] == 1.33  # 4 steps of 4 from 12

    assert stdout.count("replies/polychromic: ") == 1  # the main process's summary line
    assert sorted(p.name for p in (two / "adapter").iterdir()) == [
        "README.md", "adapter_config.json", "adapter_model.safetensors", "train_summary.json"]
    assert sorted(p.name for p in two.iterdir() if p.name.startswith((".", "adapter"))) == [
        "adapter"]  # no checkpoints, no half-written folder
    import mlflow

    mlflow.set_tracking_uri(f"sqlite:///{two / 'mlflow.db'}")
    runs = mlflow.search_runs(experiment_names=["polychromic-lora"], output_format="list")
    assert [(r.data.tags["stage"], r.data.tags["method"]) for r in runs] == [
        ("train", "polychromic")]
    # sampled and scored on both processes' steps (the term's value, not its weight)
    assert runs[0].data.metrics["train/diversity_score"] > 0
