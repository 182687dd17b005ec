"""Stage `power`: the confirmation run's size, from variances measured on val.

For each hypothesis of the protocol's primary family (docs/protocol.md), on val with seed
42: the SD of the paired per-prompt differences (polychromic against LoRA for diversity,
against LoRA at the matched temperature for pass@k and quality), and the prompts a
one-sided paired test needs for `compare.power` at level minimum_p / family size:

- superiority (diversity, pass@k): at the pre-registered effect d_z = compare.minimum_effect;
- non-inferiority (quality): at a true difference of 0, where the test must see the
  margin (`<domain>.primary.margin` x the comparator's val mean). For pass@1 the SD comes at
  several samples per prompt (`power.pass_rate_variance`): more samples shrink the draws'
  noise, not the prompts' true differences.

Against the prompts available (the sealed confirmation split, `--available`) it says which
samples per prompt reach the power, and, where none does, the smallest margin that does:
the margin to pre-register instead, before any confirmation result.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from polychromic import power as planning
from polychromic import stats
from polychromic.config import UserError, load_section, read_params, run_main
from polychromic.domains import domain_class
from polychromic.io import read_jsonl, write_json
from polychromic.metrics import metric_table
from polychromic.protocol import SEALED, read_seal
from polychromic.settings import CompareConfig, EvaluateConfig, PrimaryHypotheses

SAMPLES = (10, 20, 40)  # samples per prompt the plan weighs (pass@1)


def paired(a: list[dict], b: list[dict], metric: str) -> tuple[np.ndarray, np.ndarray]:
    rows = {r["id"]: r for r in b}
    pairs = [(r[metric], rows[r["id"]][metric]) for r in a
             if r["id"] in rows and r.get(metric) is not None
             and rows[r["id"]].get(metric) is not None]
    if len(pairs) < 3:
        raise UserError(f"fewer than three val prompts with '{metric}' in both score files")
    x, y = (np.array(v, float) for v in zip(*pairs, strict=True))
    return x, y


def plan(role: str, metric: str, test: str, against: str, x: np.ndarray, y: np.ndarray,
         higher_is_better: bool, margin_share: float, alpha: float, config: CompareConfig,
         available: int | None, samples: int, pass_rates: dict | None) -> dict:
    """One hypothesis's plan; `samples`: per prompt in the val run; `pass_rates`: the
    variance split of a pass@1 difference (None for other metrics: their SD as measured)."""
    differences = (x - y) * (1 if higher_is_better else -1)
    sd = float(differences.std(ddof=1))
    entry = {"role": role, "metric": metric, "test": test, "against": against,
             "val_prompts": len(x), "val_mean_difference": float(differences.mean()),
             "val_sd_difference": sd}
    if test == "superiority":
        entry["effect_dz"] = config.minimum_effect
        entry["prompts_needed"] = stats.pairs_needed(config.minimum_effect, alpha, config.power)
        entry["power_at_available"] = (None if available is None else
                                       stats.paired_power(config.minimum_effect, available,
                                                          alpha))
        return entry
    margin = margin_share * abs(float(y.mean()))
    entry["margin"] = margin
    sds = ({m: planning.sd_at(pass_rates, m) for m in SAMPLES} if pass_rates
           else {samples: sd})
    entry["sd_at_samples"] = sds
    entry["prompts_needed"] = {m: planning.prompts_for(margin, s, alpha, config.power)
                               for m, s in sds.items()}
    if available is not None:
        entry["power_at_available"] = {m: stats.paired_power(margin / s, available, alpha)
                                       if s > 0 else 1.0 for m, s in sds.items()}
        enough = [m for m, n in entry["prompts_needed"].items() if n is not None
                  and n <= available]
        entry["samples_chosen"] = min(enough) if enough else None
        # the margin (share of the comparator's mean) that the most samples make testable
        best = min(sds.values())
        entry["margin_share_reachable"] = (stats.minimum_detectable_dz(available, alpha,
                                                                       config.power)
                                           * best / abs(float(y.mean()))
                                           if y.mean() else None)
    return entry


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--domain", required=True)
    parser.add_argument("--reference", required=True, type=Path, help="polychromic's val scores")
    parser.add_argument("--lora", required=True, type=Path,
                        help="LoRA's val scores at the domain's temperature")
    parser.add_argument("--matched", required=True, type=Path,
                        help="LoRA's val scores at the matched temperature")
    parser.add_argument("--sealed", type=Path, default=SEALED,
                        help="folder of the seals: the confirmation prompts available")
    parser.add_argument("--out", required=True, type=Path)
    args = parser.parse_args(argv)
    params = read_params()
    cls = domain_class(args.domain)
    primary = load_section(PrimaryHypotheses, params, f"{args.domain}.primary")
    config = load_section(CompareConfig, params, "compare")
    ks = load_section(EvaluateConfig, params, "evaluate", only=("ks",)).ks
    table = metric_table(cls.quality_metrics, cls.domain_metrics, ks)
    scores = {name: read_jsonl(path, {"id": str}) for name, path in
              (("reference", args.reference), ("lora", args.lora), ("matched", args.matched))}
    seal = args.sealed / f"{args.domain}.sha256"
    available = len(read_seal(seal).hashes) if seal.is_file() else None
    family = [("diversity", primary.diversity, "superiority", "lora"),
              ("passk", primary.passk, "superiority", "matched")] + [
        ("quality", metric, "non-inferiority", "matched") for metric in primary.quality]
    alpha = config.minimum_p / len(family)
    hypotheses = []
    for role, metric, test, against in family:
        if metric not in table:
            raise UserError(f"params.yaml: '{args.domain}.primary' names {metric!r}, not a "
                            "metric of the domain")
        x, y = paired(scores["reference"], scores[against], metric)
        samples, rates = scores["reference"][0]["n"], None
        if metric == "pass@1":
            a, b = paired(scores["reference"], scores[against], "passed")
            rates = planning.pass_rate_variance(a.astype(int), b.astype(int), samples)
        hypotheses.append(plan(role, metric, test, against, x, y, table[metric][1],
                               primary.margin, alpha, config, available, samples, rates))
    write_json(args.out, {"domain": args.domain, "split": "val", "alpha": alpha,
                          "power": config.power, "available": available,
                          "samples_weighed": list(SAMPLES), "hypotheses": hypotheses})
    print(f"{args.domain}: power plan ({available or 'no seal: no'} confirmation prompts) "
          f"-> {args.out}")


if __name__ == "__main__":
    run_main(main)
