#!/usr/bin/env bash
# Evaluate the default run's code adapters on HumanEval, without retraining.
# `dvc exp run -S code.data.test_set=humaneval` is the pipeline's way and retrains; this
# reuses models/code/*/seed42 (trained on the same 119 MBPP problems as the default run) and
# writes everything into a scratch directory, so the repository's outputs stay as they are.
# Usage: scripts/humaneval_default_adapters.sh [SCRATCH_DIR]   (after `dvc repro` or `dvc pull`)
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
out=${1:-$repo/../humaneval-run}
[ -d "$repo/models/code/polychromic/seed42" ] || {
  echo "error: $repo/models/code/*/seed42 missing: run 'dvc repro' (or 'dvc pull') first" >&2; exit 1; }
[ -e "$out" ] && { echo "error: $out exists; give another scratch directory" >&2; exit 1; }
mkdir -p "$out/data"
cd "$out"
ln -s "$repo/polychromic" polychromic; ln -s "$repo/models" models
python - "$repo/params.yaml" <<'PY'
import sys, yaml
params = yaml.safe_load(open(sys.argv[1]))
params["code"]["data"]["test_set"] = "humaneval"
yaml.safe_dump(params, open("params.yaml", "w"), sort_keys=False)
PY
export MLFLOW_TRACKING_URI=sqlite:///$out/mlflow.db
python -m polychromic.stages.prepare --domain code --out data/processed/code
for system in zero_shot few_shot baseline polychromic; do
  adapter=()
  [ "$system" = baseline ] || [ "$system" = polychromic ] && adapter=(--adapter "models/code/$system/seed42")
  python -m polychromic.stages.generate --domain code --system "$system" --seed 42 --base models/base \
    "${adapter[@]}" --data data/processed/code --out "data/generations/code/$system/seed42.jsonl"
  python -m polychromic.stages.evaluate --domain code --system "$system" --seed 42 \
    --generations "data/generations/code/$system/seed42.jsonl" --data data/processed/code \
    --metrics "metrics/code/$system/seed42.json" --scores "data/scores/code/$system/seed42.jsonl"
done
python -m polychromic.stages.judge --domain code --a data/generations/code/polychromic \
  --b data/generations/code/baseline --out metrics/code/judge.json \
  --judgements data/judge/code/judgements.jsonl
python -m polychromic.stages.compare --domain code --scores data/scores/code --judge metrics/code/judge.json \
  --out metrics/code/comparison.json --summary metrics/code/headline.json
python -m polychromic.stages.report --domain code --comparison metrics/code/comparison.json \
  --scores data/scores/code --generations data/generations/code \
  --tables metrics/report/code --figures plots/report/code
echo "HumanEval results: $out/metrics/code, tables in $out/metrics/report/code"
