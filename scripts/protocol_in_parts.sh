#!/bin/bash
# The protocol run (docs/protocol.md) in parts that survive a stop (a machine lent for a few
# hours): its 18 trainings first, then each domain's frontier, power plan and report, then
# everything left. Rerun it after a stop: what finished is kept (DVC), a training resumes.
cd "$(dirname "$0")/.."
set -o pipefail
# A training runs as one stage (-s), which does not look upstream: the root pipeline's
# outputs it reads (models/base, data/processed) must be those dvc.lock records, or it
# trains on whatever the working copy holds.
if ! dvc status dvc.yaml | grep -q "Data and pipelines are up to date"; then
  echo "error: the root pipeline differs from dvc.lock (dvc status dvc.yaml): run" \
       "dvc checkout dvc.yaml (or dvc repro) first" >&2
  exit 1
fi
for d in qa replies code; do
  for m in baseline polychromic; do
    for s in 42 123 456; do
      echo "== train@$d-$m-$s $(date -u +%FT%T)"
      dvc repro -s "studies/protocol/dvc.yaml:train@$d-$m-$s" || exit 1
    done
  done
done
for d in qa replies code; do
  echo "== $d $(date -u +%FT%T)"
  dvc repro studies/protocol/dvc.yaml:frontier@$d studies/protocol/dvc.yaml:power@$d \
    studies/protocol/dvc.yaml:report@$d || exit 1
  echo "== $d done $(date -u +%FT%T)"
done
dvc repro studies/protocol/dvc.yaml && echo "== all done $(date -u +%FT%T)"
