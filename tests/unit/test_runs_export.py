"""`polychromic runs export`: a consistent copy of the MLflow store whose artifact paths are
relative to the folder it lands in, so that a collaborator who pulls it reads every run and
artifact from wherever the folder is."""

import json
import os
import shutil

import pytest

from polychromic import tracking
from polychromic.commands import runs
from polychromic.config import UserError


def test_an_exported_store_reads_the_same_runs_and_artifacts_elsewhere(tmp_path, monkeypatch):
    import mlflow

    project = tmp_path / "project"
    project.mkdir()
    monkeypatch.chdir(project)
    monkeypatch.setenv("DVC_ROOT", str(project))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    with tracking.mlflow_run("train", "qa", "polychromic", {"train": {"lr": 1e-4}}, seed=1):
        tracking.log_metrics({"train/loss": 0.5}, step=1)
        mlflow.log_dict({"sample": "hello"}, "samples/step_1.json")
    runs.main(["export", "--no-dvc"])
    moved = tmp_path / "elsewhere"
    shutil.move(project / "runs", moved)  # the collaborator's clone: another path
    shutil.rmtree(project)  # nothing of the original left to read from
    os.chdir(moved)
    mlflow.set_tracking_uri(f"sqlite:///{moved / 'mlflow.db'}")
    (run,) = mlflow.search_runs(experiment_names=[tracking.EXPERIMENT], output_format="list")
    assert run.data.params["train.lr"] == "0.0001" and run.data.metrics["train/loss"] == 0.5
    assert run.info.artifact_uri.startswith("mlartifacts/")
    local = mlflow.artifacts.download_artifacts(run_id=run.info.run_id,
                                                artifact_path="samples/step_1.json",
                                                dst_path=str(tmp_path / "dl"))
    assert json.loads(open(local).read()) == {"sample": "hello"}


def test_no_store_is_one_line(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(UserError, match="mlflow.db: no MLflow store here"):
        runs.main(["export", "--no-dvc"])
    assert not (tmp_path / "runs").exists()
