"""Measure the base model's zero-shot pass@1 per reasoning-gym family on the *real*
validation questions, to choose the qa domain's families, difficulty and prompt (the qa
README, "Chosen on validation").

Usage (from the repository root, after `dvc repro base_model`):
    python scripts/qa_families_on_val.py CANDIDATES.yaml SCRATCH_DIR [--answer-first]
        [--max-new-tokens 64] [--samples 5]

CANDIDATES.yaml maps family -> settings, as `qa.data.families` does (a name may carry a
suffix after "@", for a second setting of one family). Each candidate is dealt on its own
with params.yaml's own split sizes and seed (`qa.data`: dev, then val, then train per
family), so its val questions are the ones it would have in the pipeline: for a family that
params.yaml already uses, they are the pipeline's val questions, record for record (checked
against data/processed/qa/val.jsonl when it exists). The deal also draws --confirmation
fresh questions (100 per family), so a family whose settings cannot supply them is
reported as too small. In SCRATCH_DIR/<family> the
script runs the stages prepare, generate --split val and evaluate --split val, and prints
each family's pass@1 and pass@n over its val questions. Dev and confirmation questions are
never sampled; a family with too few distinct questions for the splits is reported as such.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]


def stage(cwd: Path, module: str, *args: str) -> subprocess.CompletedProcess:
    # the repository's package: `cwd` is a scratch folder without one
    env = {**os.environ, "PYTHONPATH": str(REPO),
           "MLFLOW_TRACKING_URI": f"sqlite:///{cwd / 'mlflow.db'}"}
    return subprocess.run([sys.executable, "-m", f"polychromic.stages.{module}", *args],
                          cwd=cwd, env=env, capture_output=True, text=True)


def measure(candidate: str, settings: dict, scratch: Path, args, params: dict) -> dict:
    """The family's val pass@1, pass@n and answered share; or why it has none."""
    family = candidate.split("@")[0]
    folder = scratch / candidate
    folder.mkdir(parents=True, exist_ok=True)
    params = json.loads(json.dumps(params))
    params["domains"] = ["qa"]
    params["qa"]["data"].update(families={family: settings}, file=None,
                                confirmation_per_family=args.confirmation)
    params["qa"]["prompt"]["answer_first"] = args.answer_first
    params["qa"]["sampling"].update(prompts=None, max_new_tokens=args.max_new_tokens)
    params["generate"]["n"] = args.samples
    params["evaluate"]["ks"] = sorted({1, args.samples})
    (folder / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    data, base = folder / "data", REPO / "models" / "base"
    done = stage(folder, "prepare", "--domain", "qa", "--out", str(data))
    if done.returncode:
        return {"error": (done.stderr.strip().splitlines() or ["prepare failed"])[-1]}
    real = REPO / "data" / "processed" / "qa" / "val.jsonl"
    if family in (params_families := yaml.safe_load((REPO / "params.yaml").read_text())
                  ["qa"]["data"]["families"]) and params_families[family] == settings and (
            real.is_file()):
        mine = [json.loads(line) for line in (data / "val.jsonl").open()]
        theirs = [r for r in map(json.loads, real.open()) if r["task"]["family"] == family]
        assert mine == theirs, f"{family}: val questions differ from the pipeline's"
    for module, extra in (("generate", ["--base", str(base), "--out",
                                        str(folder / "val_samples.jsonl")]),
                          ("evaluate", ["--generations", str(folder / "val_samples.jsonl"),
                                        "--metrics", str(folder / "val_metrics.json"),
                                        "--scores", str(folder / "val_scores.jsonl")])):
        done = stage(folder, module, "--domain", "qa", "--system", "zero_shot", "--seed", "42",
                     "--data", str(data), "--split", "val", *extra)
        if done.returncode:
            sys.exit(f"{family}: {module} failed:\n{done.stderr[-2000:]}")
    scores = [json.loads(line) for line in (folder / "val_scores.jsonl").open()]
    n = args.samples
    return {"questions": len(scores),
            **{key: sum(s[key] for s in scores) / len(scores)
               for key in ("pass@1", f"pass@{n}", "answered")}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("candidates")
    parser.add_argument("scratch")
    parser.add_argument("--answer-first", action="store_true")
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--samples", type=int, default=5)
    parser.add_argument("--confirmation", type=int, default=100,
                        help="fresh questions per family the sealed split needs")
    args = parser.parse_args()
    families = yaml.safe_load(Path(args.candidates).read_text())
    scratch = Path(args.scratch).resolve()
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    n = args.samples
    print(f"| family | val questions | pass@1 | pass@{n} | answered |")
    print("|---|---|---|---|---|")
    for family, settings in families.items():
        row = measure(family, settings, scratch, args, params)
        if "error" in row:
            print(f"| {family} | {row['error']} | | | |", flush=True)
            continue
        print(f"| {family} | {row['questions']} | {row['pass@1']:.2f} | {row[f'pass@{n}']:.2f} "
              f"| {row['answered']:.2f} |", flush=True)


if __name__ == "__main__":
    main()
