"""The studies' end-to-end tests (protocol, sweep, selection and confirmation) start from one
tiny qa root pipeline, reproduced once per test session and copied by each test: its
outputs are the same for all of them, and reproducing it once per study cost minutes of the
suite."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from filelock import FileLock

from tests.helpers import pipeline_repository, sh, tiny_pipeline_params

STUDY_TEMPERATURES = [0.5, 0.7, 0.9, 1.1, 1.3]


def tiny_study_params(model_dir: Path) -> dict:
    """params.yaml of the studies' tests: qa only (12 training, 6 val and 3 dev questions),
    4 samples a prompt and pass@4 as the primary pass@k; the protocol's frontier at five
    temperatures (the fewest its check allows) and one adapter scale."""
    params = tiny_pipeline_params(model_dir, ["qa"])
    params["qa"]["data"].update(train_per_family=4, val_per_family=2, dev_per_family=1)
    params["generate"].update(n=4, batch_prompts=3)
    params["evaluate"]["ks"] = [1, 4]
    params["qa"]["primary"]["passk"] = "pass@4"
    params["frontier"].update(temperatures=STUDY_TEMPERATURES, adapter_scales=[0.5])
    return params


@pytest.fixture(scope="session")
def qa_root(tmp_path_factory, tiny_model_dir) -> Path:
    """A repository with `tiny_study_params` whose root pipeline is reproduced; built by the
    first pytest-xdist worker that asks (the others wait for it), never to be changed: a
    test copies it (tests.helpers.study_repository)."""
    base = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        base = base.parent  # this session's folder, shared by its workers
    folder = base / "qa-root"
    with FileLock(str(folder) + ".lock"):
        done = folder / "reproduced"
        if not done.exists():
            repo, _ = pipeline_repository(folder, tiny_study_params(tiny_model_dir))
            sh(repo, "dvc", "repro", timeout=1800)
            done.touch()
    return folder / "repo"
