"""Table 2, the ablation sweep: one row per DVC experiment (a command, not a stage).

Runs `dvc exp show --json` in the current directory (with --all-commits, `-n 1000`: also the
experiments based on older commits of HEAD's history, not other branches) and keeps the
workspace (unless it equals HEAD), HEAD, every commit that has experiments and every
finished or failed experiment. Columns: λ and N, the other polychromic params that differ
between rows, other params that differ from HEAD, then the polychromic system's headline
metrics for one domain, the mean over the seed files
metrics/<domain>/polychromic/seed<S>.json (or the older metrics/<domain>/polychromic.json),
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
import re
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

from polychromic.config import UserError, read_params, run_main
from polychromic.io import atomic_path, write_json
from polychromic.tables import DASH, fmt, md_escape, md_table, tex_escape, tex_tabular

ALWAYS = ("diversity_weight", "n_generations")
QUALITY = "pass@1"  # Figure 2's quality axis: every domain's single-sample check
REFERENCE_SYSTEMS = ("baseline", "zero_shot", "few_shot")
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
    """Polychromic minus baseline in semantic diversity and its corrected Wilcoxon p; and,
    for Figure 2, each system's mean and 95% CI in the domain's primary diversity metric
    (semantic where comparison.json declares none) and in pass@1."""
    for row in rows:
        comparison = read(row["rev"]) or {}
        hypotheses = (comparison.get("primary") or {}).get("hypotheses") or {}
        row["diversity_metric"] = hypotheses.get("diversity", "semantic")
        row["systems"] = {
            system: {m: {k: values[m].get(k) for k in ("mean", "ci95")}
                     for m in (row["diversity_metric"], QUALITY) if m in values}
            for system, values in (comparison.get("systems") or {}).items()}
        correction = comparison.get("correction")
        key = "wilcoxon_p" + ("" if correction in (None, "none") else f"_{correction}")
        for c in comparison.get("comparisons") or []:
            if (c.get("metric"), c.get("a"), c.get("b")) == ("semantic", "polychromic",
                                                             "baseline"):
                row["metrics"]["semantic_vs_baseline"] = c.get("mean_difference")
                row["metrics"]["semantic_vs_baseline_p"] = c.get(key)


def figure2_points(rows: list[dict]) -> list[dict]:
    """Figure 2's points: polychromic in each experiment (its λ and seeds), then LoRA and the
    prompting systems as reference points, from the first row that has them (HEAD's, unless
    the workspace differs). A system without both metrics and their CIs is left out."""
    def point(row: dict, system: str, label: str) -> dict | None:
        values = row["systems"].get(system) or {}
        diversity, quality = values.get(row["diversity_metric"]), values.get(QUALITY)
        if not all(v and v.get("mean") is not None and v.get("ci95") for v in (diversity,
                                                                                   quality)):
            return None
        return {"label": label, "system": system,
                "lambda": row["params"].get("polychromic.diversity_weight")
                if system == "polychromic" else None,
                "seeds": row["seeds"], "metric": row["diversity_metric"],
                QUALITY: quality["mean"], f"{QUALITY}_low": quality["ci95"][0],
                f"{QUALITY}_high": quality["ci95"][1], "diversity": diversity["mean"],
                "diversity_low": diversity["ci95"][0], "diversity_high": diversity["ci95"][1]}

    points = [point(row, "polychromic", row["name"]) for row in rows]
    reference = next((row for row in rows if row.get("systems")), None)
    if reference is not None:
        points += [point(reference, system, f"{system} ({reference['name']})")
                   for system in REFERENCE_SYSTEMS]
    return [p for p in points if p is not None]


def rows_held(path: Path) -> int:
    """How many rows an earlier table2.json or figure2.csv holds (0 if none)."""
    if not path.is_file():
        return 0
    if path.suffix == ".csv":
        return max(0, len(path.read_text(encoding="utf-8").splitlines()) - 1)  # the header
    try:
        return len(json.loads(path.read_text(encoding="utf-8")))
    except (ValueError, TypeError):
        return 0


def figure2_csv(points: list[dict]) -> str:
    fields = ["label", "system", "lambda", "seeds", "metric", QUALITY, f"{QUALITY}_low",
              f"{QUALITY}_high", "diversity", "diversity_low", "diversity_high"]
    def cell(value) -> str:
        text = "" if value is None else f"{value:.6f}" if isinstance(value, float) else str(value)
        return f'"{text}"' if "," in text or '"' in text else text
    rows = [dict(zip(fields, fields, strict=True))] + [
        p | {"lambda": None if p["lambda"] is None else str(p["lambda"])} for p in points]
    return "".join(",".join(cell(row[f]) for f in fields) + "\n" for row in rows)


def figure2_png(points: list[dict], domain: str) -> bytes:
    import io

    import matplotlib
    matplotlib.use("Agg")  # no display on a pipeline machine
    from matplotlib import pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4.5), dpi=150)
    lambdas = sorted({p["lambda"] for p in points if p["system"] == "polychromic"})
    colours = plt.get_cmap("viridis")
    for p in points:
        polychromic = p["system"] == "polychromic"
        shade = (colours(lambdas.index(p["lambda"]) / max(1, len(lambdas) - 1))
                 if polychromic else "black")
        ax.errorbar(p[QUALITY], p["diversity"],
                    xerr=[[p[QUALITY] - p[f"{QUALITY}_low"]], [p[f"{QUALITY}_high"] - p[QUALITY]]],
                    yerr=[[p["diversity"] - p["diversity_low"]],
                          [p["diversity_high"] - p["diversity"]]],
                    fmt="o" if polychromic else "s", color=shade, ecolor=shade, elinewidth=0.8,
                    capsize=2, markersize=5 if polychromic else 6)
        text = (f"λ={p['lambda']} ({p['seeds']} seed{'s' * (p['seeds'] != 1)})" if polychromic
                else p["system"].replace("baseline", "LoRA"))
        ax.annotate(text, (p[QUALITY], p["diversity"]), textcoords="offset points",
                    xytext=(5, 4), fontsize=7)
    metric = points[0]["metric"] if points else "diversity"
    ax.set(xlabel=f"{QUALITY} (single-sample quality)", ylabel=f"{metric} diversity",
           title=f"Figure 2: diversity vs quality, {domain} (bars: 95% CIs over prompts)")
    ax.grid(alpha=0.3)
    fig.savefig(buffer := io.BytesIO(), format="png", bbox_inches="tight",
                metadata={"Software": None})
    plt.close(fig)
    return buffer.getvalue()


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
    add_comparisons(rows, read_comparison(domain))
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
