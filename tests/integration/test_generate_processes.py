"""Sampling with `runtime.processes: 2` (two processes under torch.distributed.run, gloo on
the CPU) writes the file one process writes, byte for byte: the batches are planned as one
process plans them and dealt out in turn, each sampled with its own seed, and the main process
gathers the rows in record order. Only the main process writes and records an MLflow run."""

import json

import pytest
import yaml

from tests.helpers import run_module, save_random_adapter, tiny_qa_run_params

PROMPTS = 5  # batches of 2, 2 and 1: the first process gets two of them, the second one


@pytest.fixture(scope="module")
def project(tmp_path_factory, tiny_model_dir):
    root = tmp_path_factory.mktemp("processes")
    params = tiny_qa_run_params()
    params["qa"]["data"].update(dev_per_family=2)
    params["qa"]["sampling"].update(prompts=PROMPTS)
    params["generate"].update(batch_prompts=2)
    params["frontier"].update(temperatures=[0.5, 0.7, 0.9, 1.1, 1.3])
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    run_module(root, "prepare", "--domain", "qa", "--out", "data/qa")
    save_random_adapter(tiny_model_dir, root / "adapter")
    return root, str(tiny_model_dir), params


def generate(root, base, params, processes: int, out: str, *extra: str) -> None:
    params["runtime"]["processes"] = processes
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    run_module(root, "generate", "--domain", "qa", "--system", "baseline", "--seed", "3",
               "--data", "data/qa", "--base", base, "--adapter", "adapter", "--out", out,
               *extra)


@pytest.mark.slow
def test_two_processes_write_the_samples_of_one(project):
    """A frontier (one gather per point in one process group) and a single file: each as
    one process writes it (a point of the frontier is the file of a run at that point:
    tests/integration/test_frontier_points.py)."""
    root, base, params = project
    generate(root, base, params, 1, "one", "--frontier", "temperature")
    generate(root, base, params, 2, "two", "--frontier", "temperature")
    names = sorted(p.name for p in (root / "one").iterdir())
    assert names == sorted(p.name for p in (root / "two").iterdir()) and len(names) == 5
    for name in names:
        assert (root / "two" / name).read_bytes() == (root / "one" / name).read_bytes(), name
    rows = [json.loads(line) for line in (root / "one/temperature-1.3.jsonl").open()]
    assert len(rows) == PROMPTS and len({r["id"] for r in rows}) == PROMPTS
    assert len({tuple(r["samples"]) for r in rows}) == PROMPTS  # not one batch copied

    generate(root, base, params, 2, "two.jsonl", "--temperature", "1.3")
    assert (root / "two.jsonl").read_bytes() == (root / "one/temperature-1.3.jsonl").read_bytes()

    import mlflow

    mlflow.set_tracking_uri(f"sqlite:///{root / 'mlflow.db'}")
    runs = mlflow.search_runs(experiment_names=["polychromic-lora"], output_format="list")
    # one run per point and invocation (5 + 5 + 1), none from the second process
    assert len(runs) == 11
    assert sum(r.data.params.get("runtime.processes") == "2" for r in runs) == 6
