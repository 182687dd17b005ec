"""MLflow: one sqlite store at the repository root for every run, wherever DVC runs it.

`dvc exp run --temp` and queued experiments execute in a copy under `.dvc/tmp/exps/`; DVC
sets `DVC_ROOT` to the original repository there, so their runs land in the same store.
Experiments that run at once (`dvc queue start -j 2`) share it: sqlite takes one writer at a
time, and the one step that fails under concurrency, MLflow creating and migrating the schema
of a new store, runs under a lock. Open it with: mlflow ui --backend-store-uri sqlite:///mlflow.db
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

EXPERIMENT = "polychromic-lora"


def repository_root() -> Path:
    if os.environ.get("DVC_ROOT"):
        return Path(os.environ["DVC_ROOT"])
    return Path.cwd()


def tracking_uri() -> str:
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{repository_root() / 'mlflow.db'}"


def git_commit() -> str:
    result = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True)
    return result.stdout.strip() if result.returncode == 0 else "unknown"


def metric_name(key: str) -> str:
    """MLflow metric names allow only [\\w./ :-]: 'passk.pass@10' -> 'passk.pass_at_10'."""
    return re.sub(r"[^\w./ :-]", "_", key.replace("@", "_at_"))


def flatten(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat


@contextlib.contextmanager
def first_connection(uri: str) -> Iterator[None]:
    """Hold an exclusive lock on a sqlite store's folder while this process first connects:
    MLflow creates and migrates the schema then, and processes that do it at once fail
    ("table experiments already exists", "duplicate column name")."""
    if not uri.startswith("sqlite:///"):
        yield
        return
    folder = Path(uri.removeprefix("sqlite:///")).parent
    folder.mkdir(parents=True, exist_ok=True)
    handle = os.open(folder, os.O_RDONLY)
    try:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield
    finally:
        os.close(handle)  # releases the lock


@contextlib.contextmanager
def mlflow_run(stage: str, domain: str, system: str, params: dict[str, Any],
               seed: int | None = None, method: str = "", precision: str = "") -> Iterator[Any]:
    """Start a run tagged with stage, domain, system, method (the trained method, if any),
    seed, precision (the model's, resolved: fp32, bf16, fp16), git commit and the DVC
    experiment's name and baseline commit."""
    import mlflow

    logging.getLogger("alembic").setLevel(logging.WARNING)
    uri = tracking_uri()
    mlflow.set_tracking_uri(uri)
    with first_connection(uri):
        if mlflow.get_experiment_by_name(EXPERIMENT) is None:
            artifacts = (repository_root() / "mlartifacts").resolve().as_uri()
            mlflow.create_experiment(EXPERIMENT, artifact_location=artifacts)
        mlflow.set_experiment(EXPERIMENT)
    tags = {
        "stage": stage,
        "domain": domain,
        "system": system,
        "method": method,
        "seed": "" if seed is None else str(seed),
        "precision": precision,
        "git_commit": git_commit(),
        "dvc_experiment": os.environ.get("DVC_EXP_NAME", "workspace"),
        "dvc_baseline_rev": os.environ.get("DVC_EXP_BASELINE_REV", ""),
    }
    name = "-".join([stage, domain, system] + ([f"seed{seed}"] if seed is not None else []))
    with mlflow.start_run(run_name=name, tags=tags) as run:
        mlflow.log_params({k: str(v)[:500] for k, v in flatten(params).items()})
        yield run


def log_metrics(metrics: dict[str, Any], step: int | None = None) -> None:
    import mlflow

    numbers = {metric_name(k): float(v) for k, v in flatten(metrics).items()
               if isinstance(v, (int, float)) and not isinstance(v, bool)}
    mlflow.log_metrics(numbers, step=step)
