"""Stage `curves`: one domain's training curves with every method and seed in one table,
plots/curves/<domain>.csv (step, metric, value, method, seed), from the train stages'
DVCLive logs (plots/<domain>/train/<method>/seed<seed>/plots/metrics/{train,eval}/*.tsv).

`dvc plots show` draws it with the template .dvc/plots/training.json: one chart per domain,
a panel per metric, a line per method (colour) and seed (dash), so LoRA and polychromic are
read against each other rather than from one chart per metric per run.
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

from polychromic.config import UserError, read_params, run_main
from polychromic.io import atomic_path
from polychromic.settings import listed

# the same schedule for every run: a panel that tells nothing about the methods
LEFT_OUT = {"train/learning_rate"}
COLUMNS = ["step", "metric", "value", "method", "seed"]


def run_curves(folder: Path) -> dict[str, list[tuple[int, float]]]:
    """A run's logged metrics (`train/loss`, `eval/loss`, ...) as (step, value) lists, from
    DVCLive's files under `folder` (<split>/<name>.tsv with a header `step<TAB><name>`)."""
    if not folder.is_dir():
        raise UserError(f"{folder}: no training logs (is its train stage reproduced?)")
    curves = {}
    for path in sorted(folder.glob("*/*.tsv")):
        metric = f"{path.parent.name}/{path.stem}"
        if metric in LEFT_OUT:
            continue
        with path.open(newline="") as f:
            rows = list(csv.reader(f, delimiter="\t"))
        if not rows or rows[0] != ["step", path.stem]:
            raise UserError(f"{path}:1: expected the header 'step<TAB>{path.stem}'")
        try:
            curves[metric] = [(int(step), float(value)) for step, value in rows[1:]]
        except ValueError as err:
            raise UserError(f"{path}: not a step and a number on every line ({err})") from err
    return curves


def curve_rows(runs: dict[tuple[str, int], Path]) -> list[dict]:
    """The long table of every (method, seed) run's curves, in the order given."""
    rows = []
    for (method, seed), folder in runs.items():
        for metric, points in run_curves(folder).items():
            rows.extend({"step": step, "metric": metric, "value": value, "method": method,
                         "seed": seed} for step, value in points)
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--domain", required=True)
    parser.add_argument("--runs", required=True, type=Path,
                        help="the domain's training logs: <runs>/<method>/seed<seed>/plots/metrics")
    parser.add_argument("--out", required=True, type=Path, help="the CSV to write")
    args = parser.parse_args(argv)
    params = read_params()
    methods, seeds = listed(params, "methods"), listed(params, "seeds")
    runs = {(method, seed): args.runs / method / f"seed{seed}" / "plots" / "metrics"
            for method in methods for seed in seeds}
    rows = curve_rows(runs)
    with atomic_path(args.out) as tmp, open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    print(f"{args.domain}: {len(runs)} runs, {len({r['metric'] for r in rows})} metrics "
          f"-> {args.out}")


if __name__ == "__main__":
    run_main(main)
