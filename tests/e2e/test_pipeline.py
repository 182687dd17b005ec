"""End to end: `dvc repro` of a tiny configuration in a temporary copy of the repository, one
domain per test (so that pytest-xdist runs them side by side), checking the metrics files
and the MLflow runs they produced; then `dvc exp run --temp` and a new seed."""

import json
import re
import subprocess
import time

import numpy as np
import pytest
import yaml

from tests.helpers import pipeline_repository, sh, tiny_pipeline_params, traced_repro

SYSTEMS = ["zero_shot", "few_shot", "baseline", "polychromic"]


def mlflow_runs(repo, with_method=False):
    import mlflow

    mlflow.set_tracking_uri(f"sqlite:///{repo / 'mlflow.db'}")
    runs = mlflow.search_runs(experiment_names=["polychromic-lora"], output_format="list")
    return [(r.data.tags["stage"], r.data.tags["system"], r.data.tags["dvc_experiment"],
             r.data.tags["git_commit"], r.data.metrics)
            + ((r.data.tags["method"], r.data.tags["dvc_baseline_rev"]) if with_method else ())
            for r in runs]


def tiny_repository(tmp_path, model_dir, domain):
    """A git repository in `tmp_path` with the project's files and tiny params; its HEAD."""
    return pipeline_repository(tmp_path, tiny_pipeline_params(model_dir, [domain]))


def use_endpoint(repo, endpoint):
    """Point the committed remote at the test's server, as a user does (not committed)."""
    sh(repo, "dvc", "remote", "modify", "--local", "storage", "endpointurl", endpoint)


def outputs(repo) -> dict[str, bytes]:
    """Every file of the pipeline's outputs (DVC-cached and git-tracked), by path."""
    files = {}
    for top in ("models", "data/processed", "data/generations", "data/scores", "metrics",
                "plots"):
        for path in sorted((repo / top).rglob("*")):
            if path.is_file() and not any(p.endswith(".checkpoints") for p in path.parts):
                files[str(path.relative_to(repo))] = path.read_bytes()
    return files


def check_push_and_pull(tmp_path, repo, endpoint):
    """`dvc push` to the S3 server; a fresh clone's `dvc pull` brings every output back byte
    for byte, and the clone has nothing to rerun."""
    sh(repo, "git", "add", "-A")
    sh(repo, "git", "commit", "-qm", "results")
    use_endpoint(repo, endpoint)
    sh(repo, "dvc", "push")
    clone = tmp_path / "clone"
    sh(tmp_path, "git", "clone", "-q", str(repo), str(clone))
    use_endpoint(clone, endpoint)
    sh(clone, "dvc", "pull")
    assert "up to date" in sh(clone, "dvc", "status")
    assert "Running stage" not in sh(clone, "dvc", "repro")
    assert outputs(clone) == outputs(repo)
    assert any(path.endswith("adapter_model.safetensors") for path in outputs(clone))


def run_ids(store) -> list[str]:
    import mlflow

    mlflow.set_tracking_uri(f"sqlite:///{store}")
    runs = mlflow.search_runs(experiment_names=["polychromic-lora"], output_format="list")
    return sorted(run.info.run_id for run in runs)


def check_run_records(repo, head, domain):
    """What a collaborator needs to read a run without the repository at hand: the params
    the stage read (base model, runtime, sampling included), where and from what it ran."""
    import mlflow

    mlflow.set_tracking_uri(f"sqlite:///{repo / 'mlflow.db'}")
    runs = mlflow.search_runs(experiment_names=["polychromic-lora"], output_format="list")
    for run in runs:
        tags, params = run.data.tags, run.data.params
        assert tags["git_dirty"] in ("true", "false") and tags["dvc_baseline_rev"] == head
        assert tags["dvc_stage"].startswith(tags["stage"]), tags["dvc_stage"]  # generate_trained@…
        assert len(tags["dvc_lock_sha256"]) == 64 or tags["dvc_lock_sha256"] == "none"
        if tags["stage"] in ("train", "generate"):
            assert "runtime.precision" in params, (tags["stage"], sorted(params))
        if tags["stage"] == "evaluate":  # the one runtime key it reads (it runs no LLM)
            assert "runtime.metric_device" in params and tags["precision"], sorted(params)
        if tags["stage"] in ("train", "generate"):
            assert tags["base_model"] and f"{domain}.sampling.temperature" in params
    # each stage saw dvc.lock as the stages before it left it
    assert len({run.data.tags["dvc_lock_sha256"] for run in runs}) > 1
    generated = [r for r in runs if r.data.tags["stage"] == "generate"]
    assert sorted(r.data.tags["system"] for r in generated) == sorted(SYSTEMS)
    assert all(r.data.params["point.split"] == "dev" and r.data.metrics["samples"] > 0
               for r in generated)


def check_mlflow_runs(repo, head):
    runs = [run for run in mlflow_runs(repo) if run[0] != "generate"]
    assert sorted((stage, system) for stage, system, *_ in runs) == sorted(
        [("train", "baseline"), ("train", "polychromic"), ("compare", "polychromic")]
        + [("evaluate", s) for s in SYSTEMS])
    assert all(exp == "workspace" and commit == head for _, _, exp, commit, _ in runs)
    train_metrics = next(m for stage, system, _, _, m in runs
                         if (stage, system) == ("train", "polychromic"))
    for name in ("train/loss", "eval/loss", "train/diversity_score", "eval/diversity",
                 "flags.diversity_collapse"):
        assert name in train_metrics, name
    evaluate_metrics = next(m for stage, _, _, _, m in runs if stage == "evaluate")
    assert "passk.pass_at_10" in evaluate_metrics


@pytest.mark.slow
@pytest.mark.e2e
def test_dvc_repro_replies_push_pull_and_a_new_seed(tmp_path, tiny_model_dir, s3_endpoint):
    repo, head = tiny_repository(tmp_path, tiny_model_dir, "replies")
    trace = tmp_path / "params-read.jsonl"
    traced_repro(repo, trace)  # every stage declares each params key it reads
    assert len(trace.read_text().splitlines()) >= 14  # every stage of the run recorded

    check_domain_outputs(repo, "replies", SYSTEMS)
    replies = json.loads((repo / "metrics/replies/polychromic/seed42.json").read_text())
    assert {"rouge_1", "rouge_2", "rouge_l", "bertscore_f1", "log_perplexity"} <= set(
        replies["quality"])
    assert set(replies["domain"]) == {"well_formed"}
    assert replies["checker"]["kind"] == "semantic" and replies["checker"]["threshold"] > 0
    assert replies["checker"]["class_threshold"] > replies["checker"]["threshold"]
    shown = json.loads(sh(repo, "dvc", "metrics", "show", "--json"))
    assert shown, "dvc metrics show found nothing"
    check_mlflow_runs(repo, head)
    check_run_records(repo, head, "replies")
    sh(repo, "python", "-m", "polychromic.commands.runs", "export")  # runs/, DVC-tracked
    check_push_and_pull(tmp_path, repo, s3_endpoint)
    # the collaborator's `dvc pull` brought every run, readable where it landed
    assert run_ids(tmp_path / "clone" / "runs" / "mlflow.db") == run_ids(repo / "mlflow.db")

    # A second seed adds its own train/generate/evaluate runs and leaves seed 42 cached.
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["seeds"] = [42, 7]
    (repo / "params.yaml").write_text(yaml.safe_dump(params))
    status = sh(repo, "dvc", "status")
    for stage in ("train@replies-baseline-7", "generate_prompted@replies-zero_shot-7",
                  "evaluate@replies-polychromic-7", "compare@replies"):
        assert stage in status, stage
    for stage in ("train@replies-baseline-42", "generate_trained@replies-polychromic-42",
                  "evaluate@replies-zero_shot-42"):
        assert stage not in status, stage


@pytest.mark.slow
@pytest.mark.e2e
def test_dvc_repro_code_and_an_experiment_pushed_and_pulled(tmp_path, tiny_model_dir,
                                                            s3_endpoint):
    repo, head = tiny_repository(tmp_path, tiny_model_dir, "code")
    trace = tmp_path / "params-read.jsonl"
    traced_repro(repo, trace)  # every stage declares each params key it reads

    check_domain_outputs(repo, "code", SYSTEMS)
    code = json.loads((repo / "metrics/code/polychromic/seed42.json").read_text())
    assert set(code["quality"]) == {"log_perplexity", "perplexity"}  # no ROUGE on code
    assert set(code["domain"]) == {"parses", "tests_passed"}
    assert code["checker"]["sandbox"] == "namespaces"
    assert json.loads((repo / "metrics/code/judge.json").read_text())["reason"] == (
        "the domain has no judge rubric")
    comparison = json.loads((repo / "metrics/code/comparison.json").read_text())
    assert [(h["metric"], h["test"]) for h in comparison["primary"]["family"]] == [
        ("distinct_classes", "superiority"), ("pass@10", "superiority"),
        ("pass@1", "non-inferiority")]
    assert len(comparison["verdict"]["minimum"]["criteria"]) == 4
    check_mlflow_runs(repo, head)

    # A λ change invalidates the polychromic adapter and leaves the baseline cached
    sh(repo, "git", "add", "-A")
    sh(repo, "git", "commit", "-qm", "results")
    results = sh(repo, "git", "rev-parse", "HEAD").strip()
    params_file = (repo / "params.yaml").read_text()
    params = yaml.safe_load(params_file)
    params["polychromic"]["diversity_weight"] = 0.5
    (repo / "params.yaml").write_text(yaml.safe_dump(params))
    status = sh(repo, "dvc", "status")
    assert "train@code-polychromic-42" in status  # and what depends on its adapter
    for stage in ("train@code-baseline-42", "generate_prompted", "evaluate@code-baseline-42"):
        assert stage not in status, stage
    (repo / "params.yaml").write_text(params_file)

    # Two experiments queued and run at once (`dvc queue start -j 2`; compare settings, so
    # that they are quick here): the runs of both land in the one MLflow store, tagged with
    # their experiment and its baseline commit (tests/integration/test_tracking.py starts
    # processes on one new store at once)
    queued = {"bootstrap-7": "compare.seed=7", "bootstrap-8": "compare.seed=8"}
    for name, setting in queued.items():
        sh(repo, "dvc", "exp", "run", "--queue", "-n", name, "-S", setting)
    try:
        sh(repo, "dvc", "queue", "start", "-j", "2")
        deadline = time.monotonic() + 900
        while any(word in sh(repo, "dvc", "queue", "status") for word in ("Queued", "Running")):
            assert time.monotonic() < deadline, "the queued experiments did not finish"
            time.sleep(5)  # each status call is a DVC start-up, on the cores the queue uses
    finally:
        subprocess.run(["dvc", "queue", "stop"], cwd=repo, capture_output=True)
    status = sh(repo, "dvc", "queue", "status")
    runs = mlflow_runs(repo, with_method=True)
    for name in queued:
        assert re.search(rf"{name}\s.*Success", status), status
        stages = re.findall(r"Running stage '([^']+)'", sh(repo, "dvc", "queue", "logs", name))
        # report reruns when the new bootstrap seed moved an interval in comparison.json
        assert stages in (["compare@code"], ["compare@code", "report@code"]), stages
        assert [(stage, system, method, baseline)
                for stage, system, exp, _, _, method, baseline in runs if exp == name] == [
            ("compare", "polychromic", "", results)]

    # The experiment travels: `dvc exp push` (its git ref to a git remote, its outputs to the
    # S3 server), `dvc exp pull` into a fresh clone, where applying it needs no rerun
    origin = tmp_path / "origin.git"
    sh(tmp_path, "git", "init", "-q", "--bare", str(origin))
    sh(repo, "git", "remote", "add", "origin", str(origin))
    sh(repo, "git", "push", "-q", "origin", "HEAD")
    use_endpoint(repo, s3_endpoint)
    sh(repo, "dvc", "exp", "push", "origin", "bootstrap-7")
    clone = tmp_path / "clone"
    sh(tmp_path, "git", "clone", "-q", str(origin), str(clone))
    use_endpoint(clone, s3_endpoint)
    sh(clone, "dvc", "exp", "pull", "origin", "bootstrap-7")
    for where in (clone, repo):
        sh(where, "dvc", "exp", "apply", "bootstrap-7")
    assert "up to date" in sh(clone, "dvc", "status")
    assert outputs(clone) == outputs(repo)
    lock = yaml.safe_load((clone / "dvc.lock").read_text())["stages"]
    assert lock["compare@code"]["params"]["params.yaml"]["compare"]["seed"] == 7


def check_system_metrics(repo, domain, systems):
    for system in systems:
        result = json.loads((repo / f"metrics/{domain}/{system}/seed42.json").read_text())
        assert result["system"] == system and result["n_prompts"] == 3
        assert result["seed"] == 42 and result["n_samples"] == 10
        assert set(result["passk"]) == {"pass@1", "pass@3", "pass@5", "pass@10"}
        ordered = [result["passk"][f"pass@{k}"] for k in (1, 3, 5, 10)]
        assert ordered == sorted(ordered) and all(0 <= p <= 1 for p in ordered)
        assert {"self_bleu", "distinct_1", "distinct_2", "distinct_3", "semantic",
                "semantic_independent", "distinct_classes", "correct_classes"} <= set(
            result["diversity"])
        diversity = result["diversity"]
        assert 0 <= diversity["correct_classes"] <= diversity["distinct_classes"] <= 10
        for name in ("rouge_1", "rouge_2", "rouge_l", "bertscore_f1"):
            assert name not in result["quality"] or 0 <= result["quality"][name] <= 1, name
        assert result["quality"]["log_perplexity"] > 0
        # both written at 6 significant digits: a log of ~10 is off by up to 5e-5, and so is
        # its exp, relatively
        assert result["quality"]["perplexity"] == pytest.approx(
            np.exp(result["quality"]["log_perplexity"]), rel=1e-4)
        scores = (repo / f"data/scores/{domain}/{system}/seed42.jsonl").read_text().splitlines()
        assert len(scores) == 3


def check_domain_outputs(repo, domain, systems):
    check_system_metrics(repo, domain, systems)
    comparison = json.loads((repo / f"metrics/{domain}/comparison.json").read_text())
    assert comparison["seeds"] == [42] and comparison["n_prompts"] == 3
    assert {c["b"] for c in comparison["comparisons"]} == {"baseline", "zero_shot", "few_shot"}
    assert comparison["judge"] is None
    headline = json.loads((repo / f"metrics/{domain}/headline.json").read_text())
    assert set(headline) == {"diversity", "diversity_p", "pass@k", "pass@k_p", "pass@1",
                             "quality_p", "minimum", "strong"}
    # the headline is the only DVC metrics file: `dvc metrics show` is a row per domain
    shown = json.loads(sh(repo, "dvc", "metrics", "show", "--json"))
    assert set(shown[""]["data"]) == {f"metrics/{domain}/headline.json"}, shown
    assert json.loads((repo / f"metrics/{domain}/judge.json").read_text())["enabled"] is False
    table = (repo / f"metrics/report/{domain}/table1.md").read_text()
    assert all(system in table for system in systems)
    assert (repo / f"metrics/report/{domain}/table1.tex").is_file()
    assert (repo / f"metrics/report/{domain}/examples.md").is_file()
    assert (repo / f"plots/report/{domain}/passk.png").stat().st_size > 0
    header = (repo / f"plots/report/{domain}/passk.csv").read_text().splitlines()[0]
    assert header.split(",") == ["k", *systems] + [f"{s}_{end}" for s in systems
                                                   for end in ("low", "high")]
    curves = repo / f"plots/{domain}/train"
    for name in ("train/loss", "eval/loss"):
        assert (curves / f"baseline/seed42/plots/metrics/{name}.tsv").is_file()
    for name in ("train/quality_loss", "train/diversity_score", "train/diversity_loss",
                 "train/combined_loss", "train/learning_rate", "eval/loss", "eval/diversity"):
        assert (curves / f"polychromic/seed42/plots/metrics/{name}.tsv").is_file(), name
    summary = json.loads((curves / "polychromic/seed42/metrics.json").read_text())
    assert set(summary["flags"]) == {"diversity_collapse", "overfitting"}
