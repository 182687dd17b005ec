"""Measure the base model's zero-shot pass@1 per reasoning-gym family on *validation*
questions, to choose the qa domain's families and difficulty (README, "qa").

Usage (from the repository root, after `dvc repro base_model`):
    python scripts/qa_families_on_val.py CANDIDATES.yaml SCRATCH_DIR [--answer-first]
        [--max-new-tokens 64] [--samples 5] [--per-family 16]

CANDIDATES.yaml maps family -> settings, as `qa.data.families` does. The script writes
params.yaml into SCRATCH_DIR (the repository's, with the candidates as qa's families), runs
the stages prepare, generate --split val and evaluate --split val there, and prints each
family's pass@1 and pass@n over its validation questions. Test questions are generated (the
split needs them) but never sampled.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]


def stage(cwd: Path, module: str, *args: str) -> None:
    # the repository's package: `cwd` is a scratch folder without one
    env = {**os.environ, "PYTHONPATH": str(REPO),
           "MLFLOW_TRACKING_URI": f"sqlite:///{cwd / 'mlflow.db'}"}
    subprocess.run([sys.executable, "-m", f"polychromic.stages.{module}", *args], cwd=cwd,
                   env=env, check=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("candidates")
    parser.add_argument("scratch")
    parser.add_argument("--answer-first", action="store_true")
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--samples", type=int, default=5)
    parser.add_argument("--per-family", type=int, default=16)
    args = parser.parse_args()
    families = yaml.safe_load(Path(args.candidates).read_text())
    scratch = Path(args.scratch).resolve()
    scratch.mkdir(parents=True, exist_ok=True)

    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["domains"] = ["qa"]
    params["qa"]["data"].update(families=families, val_per_family=args.per_family,
                                test_per_family=4, train_per_family=8, file=None)
    params["qa"]["prompt"]["answer_first"] = args.answer_first
    params["qa"]["sampling"].update(test_prompts=len(families) * args.per_family,
                                    max_new_tokens=args.max_new_tokens)
    params["generate"]["n"] = args.samples
    params["evaluate"]["ks"] = sorted({1, args.samples})
    (scratch / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))

    data, base = scratch / "data", REPO / "models" / "base"
    stage(scratch, "prepare", "--domain", "qa", "--out", str(data))
    stage(scratch, "generate", "--domain", "qa", "--system", "zero_shot", "--seed", "42",
          "--base", str(base), "--data", str(data), "--split", "val",
          "--out", str(scratch / "val_samples.jsonl"))
    stage(scratch, "evaluate", "--domain", "qa", "--system", "zero_shot", "--seed", "42",
          "--generations", str(scratch / "val_samples.jsonl"), "--data", str(data),
          "--split", "val", "--metrics", str(scratch / "val_metrics.json"),
          "--scores", str(scratch / "val_scores.jsonl"))

    family = {r["id"]: r["task"]["family"]
              for r in map(json.loads, (data / "val.jsonl").open())}
    rows = defaultdict(list)
    for score in map(json.loads, (scratch / "val_scores.jsonl").open()):
        rows[family[score["id"]]].append(score)
    n = args.samples
    print(f"| family | questions | pass@1 | pass@{n} | answered |")
    print("|---|---|---|---|---|")
    for name in families:
        scores = rows[name]
        mean = {key: sum(s[key] for s in scores) / len(scores)
                for key in ("pass@1", f"pass@{n}", "answered")}
        print(f"| {name} | {len(scores)} | {mean['pass@1']:.2f} | {mean[f'pass@{n}']:.2f} | "
              f"{mean['answered']:.2f} |")


if __name__ == "__main__":
    main()
