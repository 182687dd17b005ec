"""Table 2, the ablation sweep: one row per DVC experiment (a command, not a stage).

Runs `dvc exp show --json` in the current directory (with --all-commits, `-A`: also the
experiments based on older commits) and keeps the workspace (unless it equals HEAD), HEAD,
every commit that has experiments and every finished or failed experiment. Columns: λ and N,
the other polychromic params that differ between rows, other params that differ from HEAD,
then the polychromic system's headline metrics for one domain, the mean over the seed files
metrics/<domain>/polychromic/seed<S>.json (or the older metrics/<domain>/polychromic.json),
and from metrics/<domain>/comparison.json, where a revision has one, polychromic minus
baseline in semantic diversity with its corrected Wilcoxon p.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

from polychromic.config import UserError, read_params, run_main
from polychromic.io import atomic_path, write_json
from polychromic.tables import DASH, fmt, md_escape, md_table, tex_escape, tex_tabular

ALWAYS = ("diversity_weight", "n_generations")
SHORT = {"diversity_weight": "λ", "n_generations": "N"}
HEADLINE = [("diversity", "self_bleu", "Self-BLEU ↓"), ("diversity", "distinct_2", "Distinct-2"),
            ("diversity", "semantic", "Semantic div."), ("quality", "rouge_l", "ROUGE-L"),
            ("passk", "pass@1", "pass@1")]


def malformed(what: str) -> UserError:
    return UserError(f"dvc exp show --json: unexpected output ({what})")


def flatten(tree: dict, prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, dict) and value:
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def headline(metric_files: dict, domain: str) -> tuple[dict[str, float], int]:
    """Polychromic's headline metrics, each the mean over the seed files that have it."""
    layout = re.compile(rf"metrics/{re.escape(domain)}/polychromic(/seed\d+)?\.json")
    files = [entry.get("data") for path, entry in sorted(metric_files.items())
             if layout.fullmatch(path.replace("\\", "/")) and isinstance(entry, dict)]
    files = [data for data in files if isinstance(data, dict)]  # an unreadable file: missing
    values: dict[str, list[float]] = {}
    for data in files:
        for group, name in [(g, n) for g, n, _ in HEADLINE] + [
                ("passk", k) for k in (data.get("passk") or {})]:
            value = (data.get(group) or {}).get(name)
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                values.setdefault(name, []).append(value)
    return {name: sum(v) / len(v) for name, v in values.items()}, len(files)


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


def add_comparisons(rows: list[dict], read: Callable[[str], dict | None]) -> None:
    """Polychromic minus baseline in semantic diversity, and its corrected Wilcoxon p."""
    for row in rows:
        comparison = read(row["rev"]) or {}
        correction = comparison.get("correction")
        key = "wilcoxon_p" + ("" if correction in (None, "none") else f"_{correction}")
        for c in comparison.get("comparisons") or []:
            if (c.get("metric"), c.get("a"), c.get("b")) == ("semantic", "polychromic",
                                                             "baseline"):
                row["metrics"]["semantic_vs_baseline"] = c.get("mean_difference")
                row["metrics"]["semantic_vs_baseline_p"] = c.get(key)


def usual(rows: list[dict], key: str) -> str | None:
    """The most common value (as JSON) of a param among the rows that have it."""
    values = [json.dumps(r["params"][key]) for r in rows if key in r["params"]]
    return max(values, key=values.count) if values else None


def columns(rows: list[dict]) -> tuple[list[str], list[str], list[str]]:
    """Polychromic params shown (λ, N and those that vary), other params that vary, metrics.

    A param that only some rows have (added or removed in a commit) varies only if its value
    differs between the rows that have it: a new key is no ablation."""
    keys = dict.fromkeys(k for row in rows for k in row["params"])
    varies = [k for k in keys if len({json.dumps(r["params"][k]) for r in rows
                                      if k in r["params"]}) > 1]
    params = [f"polychromic.{k}" for k in ALWAYS] + [
        k for k in varies if k.startswith("polychromic.") and k[12:] not in ALWAYS]
    others = [k for k in varies if not k.startswith("polychromic.")]
    # pass@1 and the largest pass@k that any row has
    top = max((int(k[5:]) for row in rows for k in row["metrics"] if k.startswith("pass@")),
              default=1)
    metrics = [name for _, name, _ in HEADLINE] + ([f"pass@{top}"] if top > 1 else [])
    return params, others, metrics + ["semantic_vs_baseline", "semantic_vs_baseline_p"]


def table2(rows: list[dict], domain: str, tex: bool) -> str:
    params, others, metrics = columns(rows)
    escape = tex_escape if tex else md_escape
    labels = {name: label for _, name, label in HEADLINE} | {
        "semantic_vs_baseline": "Δ semantic vs baseline", "semantic_vs_baseline_p": "p (corrected)"}
    header = ["Experiment", "Commit"] + [SHORT.get(k[12:], k[12:]) for k in params] + [
        "Other params"] * bool(others) + ["Seeds"] + [labels.get(m, m) for m in metrics]
    common = {k: usual(rows, k) for k in others}
    body = []
    for row in rows:
        p = row["params"]
        changed = "; ".join(f"{k}={json.dumps(p[k])}" for k in others
                            if k in p and json.dumps(p[k]) != common[k])
        body.append([row["name"] + (f" ({row['note']})" if row["note"] else ""), row["commit"]]
                    + [DASH if p.get(k) is None else str(p[k]) for k in params]
                    + [changed] * bool(others) + [str(row["seeds"])]
                    + [fmt(row["metrics"].get(m)) for m in metrics])
    body = [[escape(cell) for cell in cells] for cells in body]
    header = [escape(cell) for cell in header]
    align = "llrr" + "l" * (len(params) - 2 + bool(others)) + "r" * (1 + len(metrics))
    note = (f"Polychromic LoRA on {domain}: metrics are means over the seeds' metrics files; "
            f"{DASH}: missing. Δ and p (Wilcoxon, corrected as in comparison.json): "
            "polychromic vs baseline LoRA. Other params: where a row differs from the usual value.")
    if tex:
        note = tex_escape(note)
        return tex_tabular(header, body, align) + f"\n\\par\\smallskip{{\\footnotesize {note}}}\n"
    return f"## Table 2: ablations ({domain})\n\n{md_table(header, body, align)}\n\n{note}\n"


def run_exp_show(all_commits: bool) -> Any:
    command = ["dvc", "exp", "show", "--json"] + ["-A"] * all_commits
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


def read_comparison(domain: str) -> Callable[[str], dict | None]:
    """rev -> comparison.json at that revision (Git or DVC cache), None where it has none."""
    path = f"metrics/{domain}/comparison.json"

    def read(rev: str) -> dict | None:
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

    return read


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True, type=Path, help="folder for table2.md/.tex/.json")
    parser.add_argument("--domain", help="default: the first of params.yaml 'domains'")
    parser.add_argument("--all-commits", action="store_true",
                        help="also experiments based on older commits (dvc exp show -A)")
    parser.add_argument("--exp-show", type=Path,
                        help="read this saved `dvc exp show --json` output instead of running it")
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
    add_comparisons(rows, read_comparison(domain))
    tables = {"table2.md": table2(rows, domain, tex=False), "table2.tex": table2(rows, domain,
                                                                                  tex=True)}
    for name, text in tables.items():
        with atomic_path(args.out / name) as tmp:
            tmp.write_text(text, encoding="utf-8")
    write_json(args.out / "table2.json", rows)
    print(f"Table 2: {len(rows)} rows ({domain}) -> {args.out}")


if __name__ == "__main__":
    run_main(main)
