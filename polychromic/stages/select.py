"""Stage `select` (studies/selection/dvc.yaml): each domain's objective, chosen on val by the
rule of docs/objectives.md.

Per arm of the study that trains in the domain (params.yaml `arms`, in order: LoRA, then the
candidates): the mean over val prompts, with a percentile bootstrap 95% CI, of pass@1,
the domain's primary pass@k (pass@10) and diversity, from the arm's val scores
(arms/<arm>/data/val_scores/<domain>/seed<S>.jsonl, the first of `seeds`); then the rule
(`selection.select`): eligibility against LoRA and the choice. Writes selection.json and
selection.md (the selection table, committed before the confirmation run).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from polychromic.config import UserError, load_section, read_params, read_yaml_mapping, run_main
from polychromic.frontier import frontier_points
from polychromic.io import atomic_path, read_jsonl, write_json
from polychromic.selection import select
from polychromic.settings import CompareConfig, PrimaryHypotheses, listed
from polychromic.tables import fmt, md_table

QUALITY = "pass@1"  # the pass@k is the domain's primary one (pass@10 in every domain)


def arm_weight(params: dict, method: str) -> float | None:
    """The arm's term weight (`weight`, or polychromic's `diversity_weight`); None for LoRA."""
    section = params.get(method) or {}
    return section.get("weight", section.get("diversity_weight"))


def table(result: dict, points: list[dict], diversity: str, passk: str) -> str:
    rows_by = {r["arm"]: r for r in result["rows"]}

    def cell(point: dict, metric: str) -> str:
        value = point[metric]
        if value["mean"] is None:
            return "–"
        low, high = value["ci95"] or (None, None)
        return f"{fmt(value['mean'])} [{fmt(low)}, {fmt(high)}]"

    rows = []
    for p in points:
        row = rows_by.get(p["arm"])
        verdict = ("LoRA (the comparator)" if row is None else "**chosen**"
                   if p["arm"] == result["chosen"] else "eligible" if row["eligible"]
                   else "; ".join(row["why_not"]))
        rows.append([p["arm"], p["method"], "–" if p["weight"] is None else f"{p['weight']:g}",
                     cell(p, QUALITY), cell(p, passk), cell(p, diversity), verdict])
    return md_table(["Arm", "Method", "Weight", QUALITY, passk, diversity, "Rule"], rows,
                    "lllrrrl")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--domain", required=True)
    parser.add_argument("--arms", required=True, type=Path, help="folder of the arms' folders")
    parser.add_argument("--out", required=True, type=Path, help="folder for selection.json/.md")
    args = parser.parse_args(argv)
    params = read_params()
    primary = load_section(PrimaryHypotheses, params, f"{args.domain}.primary")
    config = load_section(CompareConfig, params, "compare")
    seed = listed(params, "seeds")[0]
    arms = params.get("arms")
    if not isinstance(arms, dict):
        raise UserError("params.yaml: 'arms' must map each arm to its method and domains "
                        "(polychromic selection writes it)")
    runs, lora = [], None
    for arm, entry in arms.items():
        if args.domain not in entry["domains"]:
            continue
        if entry["method"] == "baseline":
            lora = arm
        path = args.arms / arm / "data" / "val_scores" / args.domain / f"seed{seed}.jsonl"
        arm_params = read_yaml_mapping(args.arms / arm / "params.yaml")
        runs.append({"system": entry["method"], "knob": "arm", "value": 0.0,
                     "scores": read_jsonl(path, {"id": str}), "arm": arm,
                     "weight": arm_weight(arm_params, entry["method"])})
    if lora is None:
        raise UserError(f"params.yaml: 'arms' has no LoRA arm (method baseline) in "
                        f"{args.domain}")
    metrics = list(dict.fromkeys([QUALITY, primary.passk, primary.diversity]))
    points = frontier_points(runs, metrics, config.resamples, config.seed)
    for point, run in zip(points, runs, strict=True):
        point.update(arm=run["arm"], method=run["system"], weight=run["weight"])
    result = select(points, lora, primary.diversity, primary.margin, primary.passk, QUALITY)
    page = (f"## Selection on val: {args.domain}\n\n"
            f"{table(result, points, primary.diversity, primary.passk)}"
            f"\n\nEligible: {QUALITY} at least {fmt(result['quality_floor'])} (LoRA's minus "
            f"{primary.margin:.0%} of it) and {primary.diversity} at least "
            f"{fmt(result['diversity_floor'])} (LoRA's); chosen: the highest {primary.passk} among "
            f"them (docs/objectives.md). Mean over val prompts, seed {seed}, 95% bootstrap "
            "CI in brackets.\n")
    outputs = {"selection.md": page.encode()}
    for name, content in outputs.items():
        with atomic_path(args.out / name) as tmp:
            tmp.write_bytes(content)
    write_json(args.out / "selection.json", {"domain": args.domain, "split": "val",
                                             "seed": seed, "points": points, **result})
    print(f"{args.domain}: chosen {result['chosen'] or 'none'} -> {args.out}")


if __name__ == "__main__":
    run_main(main)
