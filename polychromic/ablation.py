"""Table 2 and Figure 2: polychromic LoRA's headline metrics across ablation rows (DVC
experiments: `polychromic ablations`; the arms of a committed study: stage `sweep`).

A row is {"name", "commit", "params" (flattened), "metrics" (headline means over the seed
files), "seeds", "note"}; `add_comparisons` adds, from the row's comparison.json,
polychromic minus LoRA in semantic diversity and each system's mean and CI in the
domain's primary diversity metric and pass@1, which Figure 2 draws.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from polychromic.tables import DASH, fmt, md_escape, md_table, tex_escape, tex_tabular

ALWAYS = ("diversity_weight", "n_generations")
QUALITY = "pass@1"  # Figure 2's quality axis: every domain's single-sample check
REFERENCE_SYSTEMS = ("baseline", "zero_shot", "few_shot")
SHORT = {"diversity_weight": "λ", "n_generations": "N"}
HEADLINE = [("diversity", "self_bleu", "Self-BLEU ↓"), ("diversity", "distinct_2", "Distinct-2"),
            ("diversity", "semantic", "Semantic div."), ("quality", "rouge_l", "ROUGE-L"),
            ("passk", "pass@1", "pass@1")]


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


def table2(rows: list[dict], domain: str, tex: bool, title: str = "ablations") -> str:
    """Rows with a commit (DVC experiments) show it; a study's arms have none."""
    params, others, metrics = columns(rows)
    commits = any(row.get("commit") for row in rows)
    escape = tex_escape if tex else md_escape
    labels = {name: label for _, name, label in HEADLINE} | {
        "semantic_vs_baseline": "Δ semantic vs baseline", "semantic_vs_baseline_p": "p (corrected)"}
    header = ["Experiment"] + ["Commit"] * commits + [SHORT.get(k[12:], k[12:]) for k in params] + [
        "Other params"] * bool(others) + ["Seeds"] + [labels.get(m, m) for m in metrics]
    common = {k: usual(rows, k) for k in others}
    body = []
    for row in rows:
        p = row["params"]
        changed = "; ".join(f"{k}={json.dumps(p[k])}" for k in others
                            if k in p and json.dumps(p[k]) != common[k])
        body.append([row["name"] + (f" ({row['note']})" if row["note"] else "")]
                    + [row.get("commit") or DASH] * commits
                    + [DASH if p.get(k) is None else str(p[k]) for k in params]
                    + [changed] * bool(others) + [str(row["seeds"])]
                    + [fmt(row["metrics"].get(m)) for m in metrics])
    body = [[escape(cell) for cell in cells] for cells in body]
    header = [escape(cell) for cell in header]
    align = ("l" * (1 + commits) + "rr" + "l" * (len(params) - 2 + bool(others))
             + "r" * (1 + len(metrics)))
    note = (f"Polychromic LoRA on {domain}: metrics are means over the seeds' metrics files; "
            f"{DASH}: missing. Δ and p (Wilcoxon, corrected as in comparison.json): "
            "polychromic vs baseline LoRA. Other params: where a row differs from the usual value.")
    if tex:
        note = tex_escape(note)
        return tex_tabular(header, body, align) + f"\n\\par\\smallskip{{\\footnotesize {note}}}\n"
    return f"## Table 2: {title} ({domain})\n\n{md_table(header, body, align)}\n\n{note}\n"
