#!/bin/bash
# The signal and cost rows of docs/objectives.md (the objectives issue): every method with a
# sampled term, at its defaults, on the default run's base model and training splits, all in
# one run on one machine (the seconds compare only within it). Code's updates cost most:
# 1 batch x 4 draws there, 2 x 8 elsewhere. About 40 minutes on the 2-core CPU.
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p metrics/signal
for domain in replies qa code; do
    size=(--batches 2 --draws 8)
    [ "$domain" = code ] && size=(--batches 1 --draws 4)
    methods=(polychromic quality_diversity set_objective)
    [ "$domain" != replies ] && methods+=(passk)  # pass@k needs an exact checker
    for method in "${methods[@]}"; do
        echo "== $domain $method $(date -u +%T)"
        polychromic signal --domain "$domain" --method "$method" "${size[@]}" \
            --out "metrics/signal/$domain-$method.json" > /dev/null
    done
done
polychromic signal --table metrics/signal/*.json --into docs/objectives.md
