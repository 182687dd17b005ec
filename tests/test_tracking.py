"""The MLflow store under processes that start at once (experiments run with
`dvc queue start -j 2`): every run lands, none fails on the new store's schema."""

import os
import subprocess
import sys
import time

from tests.conftest import REPO

WORKER = """
import sys, time
from polychromic import tracking
start = float(sys.argv[2])
while time.time() < start:
    time.sleep(0.001)
for run in range(2):  # the second run: on the migrated store
    with tracking.mlflow_run("train", "replies", "baseline", {"lr": 1}, seed=int(sys.argv[1]),
                             method="baseline"):
        for step in range(3):
            tracking.log_metrics({"train/loss": 1 / (step + 1)}, step=step)
"""


def test_processes_starting_at_once_on_a_new_store_all_land(tmp_path):
    """Without tracking.first_connection, 3 of 4 processes that did this failed here ("table
    experiments already exists", "duplicate column name: step")."""
    env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "DVC_ROOT": str(tmp_path),
           "DVC_EXP_NAME": "probe", "DVC_EXP_BASELINE_REV": "abc123"}
    env.pop("MLFLOW_TRACKING_URI", None)
    start = str(time.time() + 8)  # after every interpreter has imported mlflow
    workers = [subprocess.Popen([sys.executable, "-c", WORKER, str(seed), start], cwd=tmp_path,
                                env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True) for seed in range(3)]
    outputs = [worker.communicate(timeout=240)[0] for worker in workers]
    assert [worker.returncode for worker in workers] == [0] * 3, "\n".join(outputs)[-3000:]

    import mlflow

    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    runs = mlflow.search_runs(experiment_names=["polychromic-lora"], output_format="list")
    assert sorted(int(r.data.tags["seed"]) for r in runs) == [0, 0, 1, 1, 2, 2]
    for run in runs:
        assert {k: run.data.tags[k] for k in ("stage", "domain", "system", "method",
                                              "dvc_experiment", "dvc_baseline_rev")} == {
            "stage": "train", "domain": "replies", "system": "baseline", "method": "baseline",
            "dvc_experiment": "probe", "dvc_baseline_rev": "abc123"}
        history = mlflow.MlflowClient().get_metric_history(run.info.run_id, "train/loss")
        assert [m.step for m in sorted(history, key=lambda m: m.step)] == list(range(3))
