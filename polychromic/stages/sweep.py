"""Stage `sweep` (studies/sweep/dvc.yaml): Table 2 and Figure 2 over a study's arms.

One row per arm of the study's params (`arms`, in order): its params (arms/<arm>/params.yaml,
the columns that differ between arms), polychromic's headline metrics (the mean over the
arm's metrics/<domain>/polychromic/seed<S>.json) and, from the arm's comparison.json,
polychromic minus LoRA in semantic diversity with its corrected p, and each system's mean
and 95% CI for Figure 2 (LoRA and the prompted systems: the default run's, which every arm
is compared with). Writes table2.md/.tex/.json to --out and figure2.png/.csv to --figures.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from polychromic.ablation import (
    add_comparisons,
    figure2_csv,
    figure2_png,
    figure2_points,
    flatten,
    headline,
    table2,
)
from polychromic.config import UserError, read_params, read_yaml_mapping, run_main
from polychromic.io import atomic_path, write_json


def read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError:
        raise UserError(f"{path}: missing (run the arm's stages first)") from None
    except json.JSONDecodeError as err:
        raise UserError(f"{path}:{err.lineno}: malformed JSON") from None
    if not isinstance(data, dict):
        raise UserError(f"{path}: expected a JSON object")
    return data


def arm_row(folder: Path, arm: str, domain: str) -> dict:
    """Table 2's row of one arm (its folder: arms/<arm>)."""
    params = read_yaml_mapping(folder / "params.yaml")
    metric_files = {
        path.relative_to(folder).as_posix(): {"data": read_json(path)}
        for path in sorted((folder / "metrics" / domain / "polychromic").glob("seed*.json"))}
    seeds = params.get("seeds") or []
    if len(metric_files) != len(seeds):
        raise UserError(f"{folder / 'metrics' / domain / 'polychromic'}: {len(metric_files)} "
                        f"seed files, the arm's params ask for {len(seeds)}")
    metrics, count = headline(metric_files, domain)
    return {"name": arm, "rev": arm, "commit": "", "params": flatten(params),
            "metrics": metrics, "seeds": count, "note": ""}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--domain", required=True)
    parser.add_argument("--arms", required=True, type=Path, help="folder of the arms' folders")
    parser.add_argument("--out", required=True, type=Path, help="folder for table2.md/.tex/.json")
    parser.add_argument("--figures", required=True, type=Path,
                        help="folder for figure2.png/.csv")
    args = parser.parse_args(argv)
    arms = read_params().get("arms")
    if not isinstance(arms, list) or not arms or not all(isinstance(a, str) for a in arms):
        raise UserError("params.yaml: 'arms' must list the arms' names (polychromic study sweep "
                        "writes it)")
    rows = [arm_row(args.arms / arm, arm, args.domain) for arm in arms]
    comparisons = {arm: read_json(args.arms / arm / "metrics" / args.domain /
                                  "comparison.json") for arm in arms}
    add_comparisons(rows, comparisons.get)
    points = figure2_points(rows)
    outputs: dict[Path, str | bytes] = {
        args.out / "table2.md": table2(rows, args.domain, tex=False, title="the λ sweep"),
        args.out / "table2.tex": table2(rows, args.domain, tex=True, title="the λ sweep"),
        args.figures / "figure2.csv": figure2_csv(points),
        args.figures / "figure2.png": figure2_png(points, args.domain)}
    for path, content in outputs.items():
        with atomic_path(path) as tmp:
            tmp.write_bytes(content if isinstance(content, bytes) else content.encode())
    write_json(args.out / "table2.json", rows)
    print(f"Table 2: {len(rows)} arms ({args.domain}) -> {args.out}; Figure 2: {len(points)} "
          f"points -> {args.figures}")


if __name__ == "__main__":
    run_main(main)
