"""Does bf16 move the answer? LoRA and polychromic trained and sampled in fp32 and in bf16,
on validation prompts only (never test), several seeds each (a command, not a stage).

Each arm (domain, method, precision, seed) runs the pipeline's own stages one after another
(`python -m polychromic.stages.train`, then `generate` and `evaluate` with `--split val`)
with params.yaml as it is but `runtime.precision`, in its own folder under --work:

    <work>/<domain>/<method>/<precision>/seed<S>/{adapter, plots, val.jsonl, metrics.json,
                                                  scores.jsonl, arm.json}

An arm with its arm.json is done and is not run again, so the study resumes where it was
stopped. arm.json holds the val loss, the domain's primary metrics (`<domain>.primary`) on
as many val prompts as dev holds, the seconds of each stage and the
machine (its name and whether it has native bf16): arms from different machines are refused
in one table, because their numbers are different draws.

The table (--out JSON, --table markdown): per domain, method and metric, the mean over seeds
in each precision, the seed-to-seed standard deviation, the paired difference bf16 - fp32
(per seed, then its mean) with a t interval over seeds, and the verdict: `moves` when that
interval excludes 0 and the difference is larger than the seed-to-seed SD, else `within`.

    polychromic precision --domains replies qa --seeds 42 123 456
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import yaml

from polychromic.config import UserError, load_section, read_params, require, run_main
from polychromic.domains import domain_class
from polychromic.io import atomic_path, write_json
from polychromic.metrics import metric_table
from polychromic.runtime import machine_description, native_bf16, runtime_config
from polychromic.settings import EvaluateConfig, PrimaryHypotheses, listed
from polychromic.stats import t_interval
from polychromic.tables import fmt, md_table

PRECISIONS = ("fp32", "bf16")


def primary_metrics(params: dict, domain: str) -> list[tuple[str, str]]:
    """(group in evaluate's metrics, name) of the domain's pre-registered primary metrics,
    the groups as evaluate's metric table has them."""
    if not isinstance((params.get(domain) or {}).get("primary"), dict):
        raise UserError(f"params.yaml: '{domain}.primary' is missing (the metrics to compare)")
    primary = load_section(PrimaryHypotheses, params, f"{domain}.primary")
    cls = domain_class(domain)
    ks = load_section(EvaluateConfig, params, "evaluate", only=("ks",)).ks
    table = metric_table(cls.quality_metrics, cls.domain_metrics, ks)
    names = [primary.diversity, primary.passk, *primary.quality]
    for name in names:
        require(name in table, f"{domain}.primary", f"names {name!r}, which domain {domain} "
                "does not compute")
    return [(table[name][0], name) for name in names]


def run_stage(stage: str, args: list[str], cwd: Path, log: Path) -> float:
    """`python -m polychromic.stages.<stage> args` in `cwd`; its seconds, or an error that
    names the log."""
    started = time.perf_counter()
    with log.open("a") as out:
        out.write(f"$ {stage} {' '.join(args)}\n")
        out.flush()
        env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{cwd / 'mlflow.db'}"}
        code = subprocess.run([sys.executable, "-m", f"polychromic.stages.{stage}", *args],
                              cwd=cwd, stdout=out, stderr=subprocess.STDOUT, env=env).returncode
    if code != 0:
        raise UserError(f"{log}: stage {stage} failed (exit {code}); see the log")
    return time.perf_counter() - started


def params_folder(work: Path, params: dict, precision: str, prompts: dict[str, int]) -> Path:
    """A folder whose params.yaml is the repository's with `runtime.precision` set, and each
    domain's `sampling.prompts` at `prompts` (as many val prompts as dev has)."""
    folder = work / "params" / precision
    folder.mkdir(parents=True, exist_ok=True)
    changed = {**params, "runtime": {**(params.get("runtime") or {}), "precision": precision}}
    for domain, count in prompts.items():
        section = changed[domain]
        changed[domain] = {**section, "sampling": {**section["sampling"], "prompts": count}}
    (folder / "params.yaml").write_text(yaml.safe_dump(changed, sort_keys=False))
    return folder


def run_arm(arm: Path, cwd: Path, domain: str, method: str, precision: str, seed: int,
            base: Path, data: Path, params: dict) -> dict:
    """Train, sample the val prompts and score them; the arm's record (arm.json)."""
    with atomic_path(arm) as tmp:
        tmp.mkdir()
        log, common = tmp / "log.txt", ["--domain", domain, "--seed", str(seed)]
        seconds = {
            "train": run_stage("train", [*common, "--method", method, "--base", str(base),
                                         "--data", str(data), "--out", str(tmp / "adapter"),
                                         "--plots", str(tmp / "plots")], cwd, log),
            "generate": run_stage("generate", [*common, "--system", method, "--base", str(base),
                                               "--adapter", str(tmp / "adapter"), "--data",
                                               str(data), "--split", "val",
                                               "--out", str(tmp / "val.jsonl")], cwd, log),
            "evaluate": run_stage("evaluate", [*common, "--system", method, "--generations",
                                               str(tmp / "val.jsonl"), "--data", str(data),
                                               "--split", "val", "--metrics",
                                               str(tmp / "metrics.json"), "--scores",
                                               str(tmp / "scores.jsonl")], cwd, log)}
        summary = json.loads((tmp / "adapter" / "train_summary.json").read_text())
        metrics = json.loads((tmp / "metrics.json").read_text())
        if summary["precision"] != precision or metrics["precision"] != precision:
            raise UserError(f"{arm}: ran in {summary['precision']}/{metrics['precision']}, "
                            f"not {precision}")
        device = runtime_config(params).model_device()
        record = {"domain": domain, "method": method, "precision": precision, "seed": seed,
                  "machine": {"device": machine_description(device),
                              "native_bf16": native_bf16(device)},
                  "values": {"val_loss": summary["eval_loss"],
                             **{name: metrics[group][name]
                                for group, name in primary_metrics(params, domain)}},
                  "seconds": {k: round(v, 1) for k, v in seconds.items()}}
        write_json(tmp / "arm.json", record)
    return record


def compare_precisions(arms: list[dict]) -> list[dict]:
    """Per (domain, method, metric): each precision's seed values, mean and SD, and the
    paired bf16 - fp32 difference over the seeds both have, with its t interval."""
    machines = {json.dumps(a["machine"], sort_keys=True) for a in arms}
    if len(machines) > 1:
        raise UserError(f"the arms come from {len(machines)} machines ({', '.join(machines)}):"
                        " compare precisions on one (move the others' folders away)")
    rows = []
    keys = sorted({(a["domain"], a["method"]) for a in arms})
    for domain, method in keys:
        mine = [a for a in arms if (a["domain"], a["method"]) == (domain, method)]
        by = {(a["precision"], a["seed"]): a["values"] for a in mine}
        seeds = sorted({a["seed"] for a in mine if all((p, a["seed"]) in by for p in PRECISIONS)})
        for metric in mine[0]["values"]:
            values = {p: [by[p, s][metric] for s in seeds] for p in PRECISIONS}
            if any(v is None for p in PRECISIONS for v in values[p]) or len(seeds) < 2:
                rows.append({"domain": domain, "method": method, "metric": metric,
                             "seeds": seeds, "values": values, "verdict": "too few seeds"})
                continue
            differences = [b - a for a, b in zip(values["fp32"], values["bf16"], strict=True)]
            low, high = t_interval(differences)
            spread = max(statistics.stdev(values["fp32"]), statistics.stdev(values["bf16"]))
            mean = sum(differences) / len(differences)
            moves = (low > 0 or high < 0) and abs(mean) > spread
            rows.append({"domain": domain, "method": method, "metric": metric, "seeds": seeds,
                         "values": values,
                         **{f"{p}_mean": sum(values[p]) / len(seeds) for p in PRECISIONS},
                         **{f"{p}_seed_sd": statistics.stdev(values[p]) for p in PRECISIONS},
                         "difference": mean, "difference_ci95": [low, high],
                         "verdict": "moves" if moves else "within"})
    return rows


def markdown(rows: list[dict], machine: dict) -> str:
    lines = ["<!-- written by `polychromic precision`; do not edit by hand -->",
             f"Machine: {machine['device']} (native bf16: {machine['native_bf16']}). "
             "Validation prompts; per seed, bf16 - fp32; t interval over seeds.", ""]
    table = [[r["domain"], r["method"], r["metric"], str(len(r["seeds"])),
              *(f"{fmt(r.get(f'{p}_mean'))} ± {fmt(r.get(f'{p}_seed_sd'))}" for p in PRECISIONS),
              fmt(r.get("difference"), 4),
              " to ".join(fmt(v, 4) for v in r.get("difference_ci95") or ()), r["verdict"]]
             for r in rows]
    header = ["domain", "method", "metric", "seeds", "fp32 mean ± seed SD",
              "bf16 mean ± seed SD", "bf16 - fp32", "95% CI", "verdict"]
    return "\n".join(lines + [md_table(header, table, "lllrrrrrl")]) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--domains", nargs="+", default=["replies", "qa"])
    parser.add_argument("--methods", nargs="+", help="default: params.yaml's methods")
    parser.add_argument("--seeds", nargs="+", type=int, default=[42, 123, 456])
    parser.add_argument("--base", default="models/base", help="the base model (dvc repro)")
    parser.add_argument("--data", default="data/processed",
                        help="the prepared splits, one folder per domain (dvc repro)")
    parser.add_argument("--work", default="studies/precision", help="the arms' folders")
    parser.add_argument("--out", default="metrics/studies/precision.json")
    parser.add_argument("--table", default="docs/precision-results.md")
    args = parser.parse_args(argv)
    params = read_params()
    methods = args.methods or listed(params, "methods")
    base, work = Path(args.base).resolve(), Path(args.work).resolve()
    for domain in args.domains:
        if not Path(args.data, domain, "val.jsonl").is_file():
            raise UserError(f"{Path(args.data, domain)}: no prepared splits "
                            f"(run: dvc repro prepare@{domain})")
        primary_metrics(params, domain)
    if not (base / "config.json").is_file():
        raise UserError(f"{base}: no base model (run: dvc repro base_model)")
    prompts = {domain: sum(1 for _ in Path(args.data, domain, "dev.jsonl").open())
               for domain in args.domains}
    arms = []
    for domain in args.domains:
        data = Path(args.data, domain).resolve()
        for method in methods:
            for precision in PRECISIONS:
                cwd = params_folder(work, params, precision, prompts)
                for seed in args.seeds:
                    arm = work / domain / method / precision / f"seed{seed}"
                    if (arm / "arm.json").is_file():
                        arms.append(json.loads((arm / "arm.json").read_text()))
                        continue
                    print(f"{domain}/{method}/{precision}/seed{seed} ...", flush=True)
                    arms.append(run_arm(arm, cwd, domain, method, precision, seed, base, data,
                                        params))
                    print(f"  {arms[-1]['values']} {arms[-1]['seconds']}", flush=True)
    rows = compare_precisions(arms)
    write_json(args.out, {"machine": arms[0]["machine"], "seeds": args.seeds, "rows": rows})
    Path(args.table).parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(args.table) as tmp:
        tmp.write_text(markdown(rows, arms[0]["machine"]))
    moved = [f"{r['domain']}/{r['method']}/{r['metric']}" for r in rows
             if r["verdict"] == "moves"]
    print(f"{len(rows)} comparisons -> {args.out}, {args.table}; moved by bf16: "
          f"{', '.join(moved) or 'none'}")


if __name__ == "__main__":
    run_main(main)
