"""The MLflow store under processes that start at once (experiments run with
`dvc queue start -j 2`): every run lands, none fails on the new store's schema."""

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from polychromic import tracking

WORKER = """
import sys
from pathlib import Path
import mlflow
from polychromic import tracking
Path(f"ready-{sys.argv[1]}").touch()  # mlflow imported: about to open its first run
for run in range(2):  # the second run: on the migrated store
    with tracking.mlflow_run("train", "replies", "baseline", {"lr": 1}, seed=int(sys.argv[1]),
                             method="baseline"):
        for step in range(3):
            tracking.log_metrics({"train/loss": 1 / (step + 1)}, step=step)
"""


def waiting_for_lock(folder: Path, pids: list[int]) -> set[int]:
    """The processes among `pids` that wait for a flock on `folder` (Linux's /proc/locks:
    '-> FLOCK ... PID MAJOR:MINOR:INODE')."""
    inode, waiting = str(folder.stat().st_ino), set()
    for line in Path("/proc/locks").read_text().splitlines():
        fields = line.split()
        if fields[1:3] == ["->", "FLOCK"] and fields[6].split(":")[-1] == inode:
            waiting.add(int(fields[5]))
    return waiting & set(pids)


@pytest.mark.skipif(not Path("/proc/locks").is_file(), reason="reads Linux's /proc/locks")
def test_processes_starting_at_once_on_a_new_store_all_land(tmp_path):
    """Without tracking.first_connection, 3 of 4 processes that did this failed here ("table
    experiments already exists", "duplicate column name: step"). The workers start while this
    process holds the new store's first connection (as one that is creating its schema
    would): none may connect until it is released, and then all start at once."""
    env = {**os.environ, "DVC_ROOT": str(tmp_path), "DVC_EXP_NAME": "probe",
           "DVC_EXP_BASELINE_REV": "abc123"}
    env.pop("MLFLOW_TRACKING_URI", None)
    store = tmp_path / "mlflow.db"
    with tracking.first_connection(f"sqlite:///{store}"):
        workers = [subprocess.Popen([sys.executable, "-c", WORKER, str(seed)], cwd=tmp_path,
                                    env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                    text=True) for seed in range(3)]
        pids = [worker.pid for worker in workers]
        deadline = time.monotonic() + 240
        while waiting_for_lock(tmp_path, pids) != set(pids):
            gone = [worker.args[-1] for worker in workers if worker.poll() is not None]
            assert not gone and not store.exists(), (
                f"the store was opened (workers done: {gone}) while its first connection was held")
            assert time.monotonic() < deadline, "the workers did not all reach the store"
            time.sleep(0.05)
        assert sorted(p.name for p in tmp_path.iterdir()) == ["ready-0", "ready-1", "ready-2"]
    outputs = [worker.communicate(timeout=240)[0] for worker in workers]
    assert [worker.returncode for worker in workers] == [0] * 3, "\n".join(outputs)[-3000:]

    import mlflow

    mlflow.set_tracking_uri(f"sqlite:///{store}")
    runs = mlflow.search_runs(experiment_names=["polychromic-lora"], output_format="list")
    assert sorted(int(r.data.tags["seed"]) for r in runs) == [0, 0, 1, 1, 2, 2]
    for run in runs:
        assert {k: run.data.tags[k] for k in ("stage", "domain", "system", "method",
                                              "dvc_experiment", "dvc_baseline_rev")} == {
            "stage": "train", "domain": "replies", "system": "baseline", "method": "baseline",
            "dvc_experiment": "probe", "dvc_baseline_rev": "abc123"}
        history = mlflow.MlflowClient().get_metric_history(run.info.run_id, "train/loss")
        assert [m.step for m in sorted(history, key=lambda m: m.step)] == list(range(3))
