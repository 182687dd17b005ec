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
import hashlib
import json
import logging
import os
import re
import subprocess
from collections.abc import Iterable, Iterator
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


def git_dirty() -> str:
    """"true" when a tracked file differs from the commit (the run's code or params may not
    be the commit's), "false" when not, "unknown" outside git."""
    result = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                            capture_output=True, text=True)
    if result.returncode != 0:
        return "unknown"
    return "true" if result.stdout.strip() else "false"


def lock_digest(stage: str) -> str:
    """SHA-256 of the dvc.lock of the pipeline that runs `stage` (DVC's address of it,
    `[<dir>/dvc.yaml:]<name>`), as it was when the stage started: which recorded state of
    every other stage this run saw. "none" where there is none yet."""
    pipeline = stage.rpartition(":")[0] if ":" in stage else "dvc.yaml"
    # the repository the stage runs in (an experiment's temporary copy has its own)
    root = next((d for d in (Path.cwd(), *Path.cwd().parents) if (d / ".dvc").is_dir()),
                Path.cwd())
    lock = root / Path(pipeline).with_name("dvc.lock")
    return hashlib.sha256(lock.read_bytes()).hexdigest() if lock.is_file() else "none"


def declared(params: dict[str, Any], keys: Iterable[str]) -> dict[str, Any]:
    """params.yaml's values of the dotted `keys` (a stage's `params:` in dvc.yaml) as one
    nested mapping, for a run's params; a key params.yaml lacks is left out."""
    out: dict[str, Any] = {}
    for key in keys:
        value: Any = params
        for part in key.split("."):
            if not isinstance(value, dict) or part not in value:
                break
            value = value[part]
        else:
            out[key] = value
    return out


def base_model_tags(base: str | Path) -> dict[str, str]:
    """The base checkpoint a run used: its name (config.json's `_name_or_path`, where the
    checkpoint came from; a hub id's repo@commit) and stored dtype."""
    try:  # a hub id's pinned commit (hub.HUB_POINTER)
        hub = json.loads((Path(base) / "hub.json").read_text(encoding="utf-8"))
        return {"base_model": f"{hub['repo']}@{hub['revision']}", "base_model_dtype": hub["dtype"]}
    except (OSError, ValueError, KeyError, TypeError):
        pass
    try:
        config = json.loads((Path(base) / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {"base_model": str(base)}
    name = config.get("_name_or_path") or config.get("_model_name_or_path") or str(base)
    return {"base_model": str(name),
            "base_model_dtype": str(config.get("torch_dtype") or config.get("dtype") or "")}


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
               seed: int | None = None, method: str = "", precision: str = "",
               tags: dict[str, str] | None = None) -> Iterator[Any]:
    """Start a run with `params` (every params.yaml section the stage read) and tagged with
    stage, domain, system, method (the trained method, if any), seed, precision (the
    model's, resolved: fp32, bf16, fp16), the git commit and whether the tree differed from
    it, the DVC stage and the digest of its dvc.lock, the DVC experiment's name
    ("workspace" for a plain `dvc repro`) and the commit it ran from, and `tags`."""
    import mlflow

    logging.getLogger("alembic").setLevel(logging.WARNING)
    uri = tracking_uri()
    mlflow.set_tracking_uri(uri)
    with first_connection(uri):
        if mlflow.get_experiment_by_name(EXPERIMENT) is None:
            artifacts = (repository_root() / "mlartifacts").resolve().as_uri()
            mlflow.create_experiment(EXPERIMENT, artifact_location=artifacts)
        mlflow.set_experiment(EXPERIMENT)
    commit, dvc_stage = git_commit(), os.environ.get("DVC_STAGE", "")
    tags = {
        "stage": stage,
        "domain": domain,
        "system": system,
        "method": method,
        "seed": "" if seed is None else str(seed),
        "precision": precision,
        "git_commit": commit,
        "git_dirty": git_dirty(),
        "dvc_stage": dvc_stage,
        "dvc_lock_sha256": lock_digest(dvc_stage) if dvc_stage else "",
        "dvc_experiment": os.environ.get("DVC_EXP_NAME", "workspace"),
        # a plain `dvc repro` runs from the workspace's commit
        "dvc_baseline_rev": os.environ.get("DVC_EXP_BASELINE_REV", commit),
    } | (tags or {})
    name = "-".join([stage, domain, system] + ([f"seed{seed}"] if seed is not None else []))
    with mlflow.start_run(run_name=name, tags=tags) as run:
        mlflow.log_params({k: str(v)[:500] for k, v in flatten(params).items()})
        yield run


def log_metrics(metrics: dict[str, Any], step: int | None = None) -> None:
    import mlflow

    numbers = {metric_name(k): float(v) for k, v in flatten(metrics).items()
               if isinstance(v, (int, float)) and not isinstance(v, bool)}
    mlflow.log_metrics(numbers, step=step)
