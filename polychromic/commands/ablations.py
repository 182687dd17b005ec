"""Table 2, the ablation sweep: one row per DVC experiment (a command, not a stage).

Runs `dvc exp show --json` in the current directory (with --all-commits, `-n 1000`: also the
experiments based on older commits of HEAD's history, not other branches) and keeps the
workspace (unless it equals HEAD), HEAD, every commit that has experiments and every
finished or failed experiment. Columns: λ and N, the other polychromic params that differ
between rows, other params that differ from HEAD, then the polychromic system's headline
metrics for one domain, the mean over the seed files
metrics/<domain>/polychromic/seed<S>.json (from `dvc exp show` where an older experiment
declared them as DVC metrics, else read at the experiment's revision; or the older
metrics/<domain>/polychromic.json),
and from metrics/<domain>/comparison.json, where a revision has one, polychromic minus
baseline in semantic diversity with its corrected Wilcoxon p.

Figure 2, the dose-response: each experiment's polychromic system in the domain's primary
diversity metric against pass@1, with the 95% CIs of comparison.json, and LoRA and the
prompting systems as reference points (figure2.png, and figure2.csv for `dvc plots`).

A table or figure that already holds more rows than this run finds (a clone without the
experiments it was drawn from) is not overwritten: the command stops, unless --replace.
"""

from __future__ import annotations

import argparse
import json
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

from polychromic.ablation import (
    add_comparisons,
    figure2_csv,
    figure2_png,
    figure2_points,
    flatten,
    headline,
    rows_held,
    table2,
)
from polychromic.config import UserError, read_params, run_main
from polychromic.io import atomic_path, write_json


def malformed(what: str) -> UserError:
    return UserError(f"dvc exp show --json: unexpected output ({what})")


def state_row(state: Any, domain: str, name: str, commit: str, where: str) -> dict:
    """One row from an experiment state {rev, name, data: {params, metrics}, error}."""
    if not isinstance(state, dict) or not isinstance(state.get("rev"), str):
        raise malformed(f"{where}: expected an object with a 'rev'")
    data, error = state.get("data"), state.get("error")
    note = (error.get("msg") or "error") if isinstance(error, dict) else str(error or "")
    row = {"name": name, "rev": state["rev"], "commit": commit[:7], "params": {}, "metrics": {},
           "seeds": 0, "note": note}
    if data is None:
        return row
    if not isinstance(data, dict) or not all(isinstance(data.get(k, {}), dict)
                                             for k in ("params", "metrics")):
        raise malformed(f"{where}: 'data' must hold 'params' and 'metrics' objects")
    params = (data.get("params") or {}).get("params.yaml") or {}
    row["params"] = flatten(params.get("data") or {}) if isinstance(params, dict) else {}
    row["metrics"], row["seeds"] = headline(data.get("metrics") or {}, domain)
    return row


def exp_rows(exp_show: Any, domain: str) -> list[dict]:
    """Table 2's rows from parsed `dvc exp show --json` output (a pure function)."""
    if not isinstance(exp_show, list) or not exp_show:
        raise malformed("expected a non-empty list")
    for index, entry in enumerate(exp_show):
        if not isinstance(entry, dict) or not isinstance(entry.get("experiments") or [], list):
            raise malformed(f"entry {index}: expected an object with an 'experiments' list")
    head = str(exp_show[min(1, len(exp_show) - 1)].get("rev"))  # the workspace's commit
    rows = []
    for index, entry in enumerate(exp_show):
        where, ranges = f"entry {index}", entry.get("experiments") or []
        if index > 1 and not ranges:  # an older commit without experiments: no ablation
            continue
        name = entry.get("name") or ("workspace" if index == 0 else str(entry.get("rev"))[:7])
        rows.append(state_row(entry, domain, name, head if index == 0 else str(entry.get("rev")),
                              where))
        for number, exp in enumerate(ranges):
            if not isinstance(exp, dict) or not isinstance(exp.get("revs"), list):
                raise malformed(f"{where}, experiment {number}: expected a 'revs' list")
            state = (exp.get("executor") or {}).get("state")
            if state in ("queued", "running") or not exp["revs"]:
                continue  # no results yet
            row = state_row(exp["revs"][0], domain, str(exp.get("name") or exp["revs"][0].get(
                "name") or exp["revs"][0]["rev"][:7]), entry["rev"], f"{where}, exp {number}")
            row["note"] = row["note"] or ("failed" if state == "failed" else "")
            rows.append(row)
    # the workspace row is HEAD's unless something was changed and not committed
    same = [{k: (s.get("data") or {}).get(k) for k in ("params", "metrics")} for s in exp_show[:2]]
    if len(rows) > 1 and rows[0]["rev"] == "workspace" and same[0] == same[1]:
        rows.pop(0)
    return rows


def run_exp_show(all_commits: bool) -> Any:
    # -n, not -A: -A lists every branch's commits newest first, and the workspace's own
    # commit must come second (exp_rows)
    command = ["dvc", "exp", "show", "--json"] + ["-n", "1000"] * all_commits
    try:
        done = subprocess.run(command, capture_output=True, text=True, check=False)
    except FileNotFoundError:
        raise UserError("dvc not found: install it (requirements.txt)") from None
    if done.returncode != 0:
        lines = (done.stderr or done.stdout).strip().splitlines() or ["no message"]
        raise UserError(f"{' '.join(command)} failed (exit {done.returncode}): {lines[-1]}")
    try:
        return json.loads(done.stdout)
    except json.JSONDecodeError as err:
        raise malformed(f"not JSON: {err.msg} at line {err.lineno}") from None


def read_at(rev: str, path: str) -> dict | None:
    """The JSON object at `path` in revision `rev` (Git or DVC cache; the working tree for
    "workspace"), None where it has none."""
    import dvc.api
    from dvc.exceptions import DvcException

    try:
        text = (Path(path).read_text(encoding="utf-8") if rev == "workspace"
                else dvc.api.read(path, rev=rev))
    except (OSError, DvcException):
        return None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        raise UserError(f"{path} at {rev[:7]}:{err.lineno}: malformed JSON") from None
    return data if isinstance(data, dict) else None


def add_seed_metrics(rows: list[dict], domain: str,
                     read: Callable[[str, str], dict | None]) -> None:
    """For each row whose `dvc exp show` carried no polychromic metrics (they are plain
    outputs, not DVC metrics, so that `dvc metrics show` stays readable), the headline
    means over metrics/<domain>/polychromic/seed<S>.json at its revision, for the seeds of
    its params; `read(rev, path)` gives a file's object or None."""
    for row in rows:
        if row["seeds"] or row["note"] or not row["params"]:
            continue
        seeds = row["params"].get("seeds")
        paths = [f"metrics/{domain}/polychromic/seed{seed}.json"
                 for seed in (seeds if isinstance(seeds, list) else [])]
        found = {path: {"data": data} for path in paths
                 if (data := read(row["rev"], path)) is not None}
        row["metrics"], row["seeds"] = headline(found, domain)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True, type=Path, help="folder for table2.md/.tex/.json")
    parser.add_argument("--figures", type=Path,
                        help="folder for figure2.png/.csv (default: plots/ablations/<domain>)")
    parser.add_argument("--domain", help="default: the first of params.yaml 'domains'")
    parser.add_argument("--all-commits", action="store_true",
                        help="also experiments based on older commits of HEAD's history "
                        "(dvc exp show -n 1000)")
    parser.add_argument("--exp-show", type=Path,
                        help="read this saved `dvc exp show --json` output instead of running it")
    parser.add_argument("--replace", action="store_true",
                        help="write even over a table or figure that holds more rows")
    args = parser.parse_args(argv)
    domain = args.domain or (read_params().get("domains") or [None])[0]
    if not domain:
        raise UserError("no domain: pass --domain or list 'domains' in params.yaml")
    if args.exp_show:
        try:
            exp_show = json.loads(args.exp_show.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as err:
            raise UserError(f"{args.exp_show}: cannot read JSON ({err})") from None
    else:
        exp_show = run_exp_show(args.all_commits)
    rows = exp_rows(exp_show, domain)
    add_seed_metrics(rows, domain, read_at)
    add_comparisons(rows, lambda rev: read_at(rev, f"metrics/{domain}/comparison.json"))
    figures = args.figures or Path("plots/ablations") / domain
    outputs: dict[Path, str | bytes] = {
        args.out / "table2.md": table2(rows, domain, tex=False),
        args.out / "table2.tex": table2(rows, domain, tex=True)}
    points = figure2_points(rows)
    if points:
        outputs[figures / "figure2.csv"] = figure2_csv(points)
        outputs[figures / "figure2.png"] = figure2_png(points, domain)
    counts = {args.out / "table2.json": len(rows)} | (
        {figures / "figure2.csv": len(points)} if points else {})
    for path, count in counts.items():
        held = rows_held(path)
        if held > count and not args.replace:
            raise UserError(f"{path} holds {held} rows, this run finds {count} (experiments "
                            "in another working copy, or not pulled?): not overwritten; "
                            "write elsewhere with --out/--figures, or pass --replace")
    for path, content in outputs.items():
        with atomic_path(path) as tmp:
            tmp.write_bytes(content if isinstance(content, bytes) else content.encode())
    write_json(args.out / "table2.json", rows)
    print(f"Table 2: {len(rows)} rows ({domain}) -> {args.out}; " + (
        f"Figure 2: {len(points)} points -> {figures}" if points else
        "Figure 2: no comparison.json with the diversity metric and pass@1, not drawn"))


if __name__ == "__main__":
    run_main(main)
