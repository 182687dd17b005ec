"""A frontier's points in one process (`generate --frontier`, `evaluate` of a folder) are
byte for byte the files one run per point writes: the same samples at a later temperature
and adapter scale (nothing carries over from the points before), the same metrics and
scores; the protocol's stages rely on it."""

import json

import pytest
import yaml

from tests.helpers import run_module, save_random_adapter, tiny_qa_run_params

TEMPERATURES = [0.5, 0.7, 0.9, 1.1, 1.3]  # the fewest frontier.temperatures allows
SCALES = [0.0, 0.5]


@pytest.fixture(scope="module")
def project(tmp_path_factory, tiny_model_dir):
    root = tmp_path_factory.mktemp("points")
    params = tiny_qa_run_params()
    params["frontier"].update(temperatures=TEMPERATURES, adapter_scales=SCALES)
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    run_module(root, "prepare", "--domain", "qa", "--out", "data/qa")
    save_random_adapter(tiny_model_dir, root / "adapter")
    return root, str(tiny_model_dir)


@pytest.mark.slow
def test_one_process_writes_what_one_run_per_point_writes(project):
    root, base = project

    def run(stage, *args):
        common = ["--domain", "qa", "--system", "baseline", "--seed", "3", "--data", "data/qa"]
        extra = ["--base", base, "--adapter", "adapter"] if stage == "generate" else []
        run_module(root, stage, *common, *extra, *args)

    run("generate", "--frontier", "temperature", "--out", "together/temperatures")
    run("generate", "--frontier", "adapter_scale", "--out", "together/adapter_scales")
    assert sorted(p.name for p in (root / "together/temperatures").iterdir()) == sorted(
        f"temperature-{t}.jsonl" for t in TEMPERATURES)
    assert sorted(p.name for p in (root / "together/adapter_scales").iterdir()) == [
        "adapter_scale-0.0.jsonl", "adapter_scale-0.5.jsonl"]
    # the last temperature and the second scale, each in a process of its own
    run("generate", "--temperature", "1.3", "--out", "apart/temperature-1.3.jsonl")
    run("generate", "--adapter-scale", "0.5", "--out", "apart/adapter_scale-0.5.jsonl")
    for folder, name in [("temperatures", "temperature-1.3"),
                         ("adapter_scales", "adapter_scale-0.5")]:
        assert (root / "together" / folder / f"{name}.jsonl").read_bytes() == (
            root / "apart" / f"{name}.jsonl").read_bytes(), name
    rows = [json.loads(line) for line in (root / "apart/temperature-1.3.jsonl").open()]
    assert {(r["temperature"], r["adapter_scale"]) for r in rows} == {(1.3, 1.0)}
    scale_zero = (root / "together/adapter_scales/adapter_scale-0.0.jsonl").read_bytes()
    assert scale_zero != (root / "apart/adapter_scale-0.5.jsonl").read_bytes()

    run("evaluate", "--generations", "together/temperatures", "--metrics", "metrics",
        "--scores", "scores")
    run("evaluate", "--generations", "apart/temperature-1.3.jsonl",
        "--metrics", "apart/metrics.json", "--scores", "apart/scores.jsonl")
    assert sorted(p.name for p in (root / "metrics").iterdir()) == sorted(
        f"temperature-{t}.json" for t in TEMPERATURES)
    assert (root / "metrics/temperature-1.3.json").read_bytes() == (
        root / "apart/metrics.json").read_bytes()
    assert (root / "scores/temperature-1.3.jsonl").read_bytes() == (
        root / "apart/scores.jsonl").read_bytes()
