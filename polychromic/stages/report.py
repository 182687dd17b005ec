"""Stage `report`: one domain's Table 1 (+ verdict), qualitative examples and Figure 1.

Table 1 comes from the compare stage's comparison.json: "mean [95% CI]" per system and metric,
the best per column in bold, marks where polychromic beats a system after correction within
its family, † on the columns of the pre-registered primary hypotheses; below it, the primary
analysis with its power figures and the verdict.
Figure 1 is the unbiased pass@k for k = 1..n from the per-prompt scores (passk.png, and
passk.csv for `dvc plots`). The table formatting is in tables.py (shared with Table 2)."""

from __future__ import annotations

import argparse
import io
import json
import random
import re
from itertools import groupby
from pathlib import Path

from polychromic.config import UserError, load_section, read_params, run_main, stage_help
from polychromic.io import atomic_path, read_jsonl
from polychromic.metrics import pass_at_k
from polychromic.settings import ReportConfig, listed
from polychromic.stats import column_mean_cis
from polychromic.tables import DASH, fmt, md_escape, md_table, tex_escape, tex_tabular

SCORE_FIELDS = {"id": str, "n": int, "passed": int}
GENERATION_FIELDS = {"id": str, "prompt": str, "references": list, "samples": list}
GROUPS = {"diversity": "Diversity", "quality": "Quality", "passk": "pass@k",
          "domain": "Domain"}

def table1(comparison: dict, systems: list[str]) -> tuple[list[str], dict[str, list[dict]]]:
    """Metric columns (grouped, else in comparison.json order) and each system's cells:
    mean, ci, bold (best), mark ("*" p < 0.05, "**" p < 0.01 after correction)."""
    meta = comparison["metrics"]
    order = list(dict.fromkeys(m.get("group", "") for m in meta.values()))
    columns = sorted(meta, key=lambda m: order.index(meta[m].get("group", "")))
    correction, reference = comparison.get("correction"), comparison["reference"]
    p_key = "wilcoxon_p" + ("" if correction in (None, "none") else f"_{correction}")
    cells: dict[str, list[dict]] = {system: [] for system in systems}
    for metric in columns:
        for system in systems:
            summary = comparison["systems"][system].get(metric) or {}
            cells[system].append({"mean": summary.get("mean"), "ci": summary.get("ci95"),
                                  "bold": False, "mark": ""})
        # ties are judged on the printed (3-decimal) values: equal-looking cells are all bold
        shown = {s: round(c[-1]["mean"], 3) for s, c in cells.items() if c[-1]["mean"] is not None}
        best = (max if meta[metric].get("higher_is_better", True) else min)(
            shown.values(), default=None)
        for system, value in shown.items():
            cells[system][-1]["bold"] = value == best
        for row in comparison["comparisons"]:
            if row.get("metric") == metric and row.get("a") == reference and row.get("b") in cells:
                p, cell = row.get(p_key), cells[row["b"]][-1]
                cell["mark"] = "" if p is None or p >= 0.05 else "*" if p >= 0.01 else "**"
    return columns, cells


def cell_text(cell: dict, tex: bool) -> str:
    if cell["mean"] is None:
        return "--" if tex else DASH
    ci = cell["ci"]
    text = fmt(cell["mean"]) + (f" [{fmt(ci[0])}, {fmt(ci[1])}]" if ci else "")
    if cell["bold"]:
        text = rf"\textbf{{{text}}}" if tex else f"**{text}**"
    if cell["mark"]:
        text += f"$^{{{cell['mark']}}}$" if tex else cell["mark"].replace("*", r"\*")
    return text


def footnote(comparison: dict) -> str:
    # every test is one-sided towards "reference better" (lower for the ↓ columns)
    sided = f" (one-sided: {comparison['reference']} better)"
    seeds = comparison.get("seeds") or []
    return (f"Mean over {comparison.get('n_prompts', '?')} {comparison.get('split', 'dev')} "
            "prompts of each prompt's value "
            f"averaged over {len(seeds)} seed(s) ({', '.join(map(str, seeds))}); 95% bootstrap "
            f"CI over prompts in brackets; {DASH}: undefined. Bold: best per column; ↓: lower "
            f"is better. * p < 0.05, ** p < 0.01: {comparison['reference']} vs that system, "
            f"paired Wilcoxon signed-rank test over prompts{sided}, p-values "
            f"{str(comparison.get('correction') or 'not').capitalize()}-corrected within their "
            f"family. †: a pre-registered primary hypothesis ({comparison['reference']} vs "
            f"{comparison.get('lora_system', 'LoRA')}), corrected over the primary family "
            f"(below); every other mark is exploratory, corrected over the exploratory family.")


def table1_text(comparison: dict, systems: list[str], tex: bool) -> str:
    """Table 1 in LaTeX, or in Markdown with each group named above its first column."""
    columns, cells = table1(comparison, systems)
    meta, escape = comparison["metrics"], tex_escape if tex else md_escape
    group = {m: escape(GROUPS.get(g := meta[m].get("group", ""), g)) for m in columns}
    primary = {h["metric"] for h in (comparison.get("primary") or {}).get("family", [])
               if h.get("test") == "superiority"}
    label = [escape(meta[m].get("label", m) + ("" if meta[m].get("higher_is_better", True)
                                               else " ↓") + (" †" if m in primary else ""))
             for m in columns]
    rows = [[escape(s)] + [cell_text(c, tex) for c in cells[s]] for s in systems]
    align = "l" + "r" * len(columns)
    runs = [(g, list(ms)) for g, ms in groupby(columns, group.get)]
    if tex:
        return tex_tabular(["System", *label], rows, align, [("", 1)] + [
            (g, len(ms)) for g, ms in runs]) + (
            f"\n\\par\\smallskip{{\\footnotesize {tex_escape(footnote(comparison))}}}\n")
    firsts = {ms[0] for g, ms in runs if g}
    header = ["System"] + [f"*{group[m]}*<br>{text}" if m in firsts else text
                           for m, text in zip(columns, label, strict=True)]
    return (f"## Table 1: {comparison.get('domain', '')}\n\n" + md_table(header, rows, align)
            + "\n\n" + footnote(comparison).replace("*", r"\*") + "\n")


def primary_markdown(comparison: dict) -> str:
    """The primary family: each hypothesis's test, effect and power figures."""
    primary = comparison.get("primary") or {}
    correction = comparison.get("correction") or "holm"
    rows = []
    for h in primary.get("family", []):
        ci, power = h.get("cohens_dz_ci95"), h.get("power") or {}
        test = h["test"] + (f" (δ = {h['margin']:.3g})" if h.get("margin") else "") + (
            f" vs {h['against']}" if h.get("against", comparison.get("lora_system"))
            != comparison.get("lora_system") else "")
        dz = fmt(h.get("cohens_dz"), 2) + (f" [{fmt(ci[0], 2)}, {fmt(ci[1], 2)}]" if ci else "")
        needed, span = power.get("prompts_needed"), power.get("prompts_needed_range")
        needed = DASH if needed is None else str(needed) + (
            f" [{span[0] or '∞'}, {span[1] or '∞'}]" if span else "")
        rows.append([md_escape(h["metric"]), test, str(h.get("n", DASH)),
                     fmt(h.get("mean_difference")), dz, fmt(h.get("p")),
                     fmt(h.get(f"p_{correction}")),
                     fmt(power.get("minimum_detectable_dz"), 2),
                     DASH if power.get("power_at_zero") is None
                     else f"{power['power_at_zero']:.0%}", needed])
    if not rows:
        return ""
    alpha = next((h["power"]["alpha"] for h in primary["family"] if h.get("power")), None)
    return "\n".join([
        "## Primary analysis (pre-registered)", "",
        md_table(["Metric", "Test", "n", "Difference", "d_z [95% CI]", "p",
                  f"p ({correction})", "Detectable d_z", "Power at 0", "Prompts needed"],
                 rows, "llrrrrrrrr"), "",
        f"One-sided tests, {comparison['reference']} vs {comparison.get('lora_system', 'LoRA')}: "
        "superiority by the paired Wilcoxon test; non-inferiority by a bootstrap test that "
        "the mean better-oriented difference is above −δ. d_z is that of the differences "
        "themselves, positive where the reference is better. "
        f"Detectable d_z: the smallest effect found with power "
        f"{(next((h['power']['power'] for h in primary['family'] if h.get('power')), 0.8)):.0%}"
        " at this n. Power at 0: a non-inferiority test's power when the true difference is "
        "0 (a low one means \"not shown\" says nothing about quality). Prompts needed, at "
        "the pre-registered effect, not the observed one: superiority at d_z = the "
        "minimum effect; non-inferiority at a true difference of 0 [range over the 95% CI "
        f"of the differences' SD]. All at level {fmt(alpha, 4)} (α / family size, Holm's "
        "first step), with the paired t-test's power as the Wilcoxon test's.", ""])


def verdict_markdown(comparison: dict) -> str:
    word = {True: "met", False: "not met"}  # anything else (None): not measured
    lines, rows = ["## Verdict (primary family only)", ""], []
    for level, bar in (comparison.get("verdict") or {}).items():
        lines.append(f"- {level.capitalize()} bar: **{word.get(bar.get('met'), 'not measured')}**")
        for c in bar.get("criteria", []):
            value = c.get("value")
            rows.append([level, md_escape(str(c.get("criterion", ""))), DASH if value is None
                         else f"{value:.3g}" if isinstance(value, float) else str(value),
                         md_escape(str(c.get("threshold", ""))),
                         word.get(None if value is None else c.get("met"), "not measured")])
    lines += ["", md_table(["Bar", "Criterion", "Value", "Threshold", "Result"], rows, "llrll")]
    return "\n".join(lines) + "\n"


def read_comparison(path: Path, domain: str, systems: list[str], seeds: list[int]) -> dict:
    if not path.is_file():
        raise UserError(f"{path}: no such file (run the stage that makes it: dvc repro)")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise UserError(f"{path}:{err.lineno}: malformed JSON ({err.msg})") from None
    for name, kind in dict(metrics=dict, systems=dict, comparisons=list, reference=str).items():
        if not isinstance(data.get(name) if isinstance(data, dict) else None, kind):
            raise UserError(f"{path}: missing or malformed field '{name}'")
    # a comparison of other systems, seeds or domain is stale: refuse to report it
    missing = [s for s in dict.fromkeys([*systems, data["reference"]])
               if s not in data["systems"] or s not in systems]
    if missing:
        raise UserError(f"{path}: system(s) {missing} not in both comparison.json and "
                        "params.yaml 'systems' (rerun compare: dvc repro)")
    if data.get("domain", domain) != domain or data.get("seeds", seeds) != seeds:
        raise UserError(f"{path}: made for domain {data.get('domain')!r}, seeds "
                        f"{data.get('seeds')}, not {domain!r}, {seeds} (rerun compare)")
    return data | {"domain": domain}


def read_runs(root: Path, systems: list[str], seeds: list[int], fields: dict) -> dict:
    """{system: [records of each seed]} from <root>/<system>/seed<S>.jsonl, checked."""
    runs: dict[str, list[list[dict]]] = {system: [] for system in systems}
    for system in systems:
        for seed in seeds:
            path = root / system / f"seed{seed}.jsonl"
            records = read_jsonl(path, fields)
            bad = [f"id {r['id']}: needs n >= 1, 0 <= passed <= n" for r in records
                   if "n" in fields and not 0 <= r["passed"] <= r["n"] >= 1]
            if bad or len({r["id"] for r in records}) < len(records):
                raise UserError(f"{path}: {(bad or ['repeated id'])[0]}")
            runs[system].append(records)
    return runs


def passk_curves(scores: dict[str, list[list[dict]]]
                 ) -> tuple[list[int], dict[str, list], dict[str, tuple[list, list]]]:
    """Mean over prompts of the seed-averaged unbiased pass@k, for k = 1..n (the smallest n),
    and its 95% band: the percentile bootstrap over prompts (as Table 1's CIs)."""
    ks = list(range(1, 1 + min(r["n"] for runs in scores.values() for rs in runs for r in rs)))
    curves, bands = {}, {}
    for system, runs in scores.items():
        per_prompt: dict[str, list[list[float]]] = {}
        for r in (r for records in runs for r in records):
            per_prompt.setdefault(r["id"], []).append(
                [pass_at_k(r["n"], r["passed"], k) for k in ks])
        means = [[sum(v) / len(v) for v in zip(*seeds, strict=True)]
                 for seeds in per_prompt.values()]
        curves[system] = [sum(v) / len(v) for v in zip(*means, strict=True)]
        low, high = column_mean_cis(means)
        bands[system] = (low.tolist(), high.tolist())
    return ks, curves, bands


def passk_png(ks: list[int], curves: dict[str, list[float]],
              bands: dict[str, tuple[list, list]], title: str) -> bytes:
    import matplotlib
    matplotlib.use("Agg")  # no display on a pipeline machine
    from matplotlib import pyplot as plt
    fig, ax = plt.subplots(figsize=(5.5, 4), dpi=150)
    for system, values in curves.items():
        (line,) = ax.plot(ks, values, marker="o", markersize=3, label=system)
        ax.fill_between(ks, *bands[system], color=line.get_color(), alpha=0.12, linewidth=0)
    ax.set(xlabel=f"k (samples drawn out of n = {ks[-1]})",
           ylabel="pass@k (mean over prompts; band: 95% CI)", title=title, ylim=(0, 1.02),
           xticks=ks)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.savefig(buffer := io.BytesIO(), format="png", bbox_inches="tight",
                metadata={"Software": None})  # no version stamp: same data, same bytes
    plt.close(fig)
    return buffer.getvalue()


def examples_markdown(generations: dict[str, list[dict]], config: ReportConfig,
                      domain: str) -> str:
    """A seeded choice among the prompts every system answered; samples side by side."""
    by_id = {s: {r["id"]: r for r in records} for s, records in generations.items()}
    first = next(iter(by_id.values()))
    common = [t for t in first if all(t in ids for ids in by_id.values())]
    if not common:
        raise UserError("no prompt is common to all systems' generation files")
    chosen = set(random.Random(config.seed).sample(sorted(common),
                                                   min(config.examples, len(common))))
    lines = [f"# Qualitative examples: {domain}", "",
             f"{len(chosen)} of {len(common)} prompts, chosen with seed {config.seed}; the "
             f"first {config.example_samples} samples of each system.", ""]
    for number, row in enumerate((first[t] for t in common if t in chosen), start=1):
        lines += [f"## Example {number} (`{row['id']}`)", "", "**Prompt:**", "",
                  *block(row["prompt"]), "**Reference(s):**", ""]
        for ref in row["references"]:
            lines += block(str(ref), bullet=True)
        samples = [by_id[s][row["id"]]["samples"][:config.example_samples] for s in by_id]
        if any("\n" in str(text) for texts in samples for text in texts):
            lines += multiline_samples(list(by_id), samples)  # code: blocks, not table cells
            continue
        table = [[str(i + 1)] + [md_escape(str(v[i])) if i < len(v) else DASH for v in samples]
                 for i in range(max(map(len, samples)))]
        lines += [md_table(["#", *map(md_escape, by_id)], table, "r" + "l" * len(by_id)), ""]
    return "\n".join(lines)


def block(text: str, bullet: bool = False) -> list[str]:
    """Markdown lines for a text: one escaped line, or a fenced block if it has several (the
    fence longer than any run of backticks inside)."""
    if "\n" not in text:
        return [("- " if bullet else "") + md_escape(text), ""]
    fence = "`" * max(3, 1 + max((len(run) for run in re.findall(r"`+", text)), default=0))
    return [fence, text, fence, ""]


def multiline_samples(systems: list[str], samples: list[list[str]]) -> list[str]:
    """Each system's samples as fenced blocks."""
    lines = []
    for system, texts in zip(systems, samples, strict=True):
        lines += [f"**{md_escape(system)}**", ""]
        for number, text in enumerate(map(str, texts), start=1):
            lines += ([f"{number}.", "", *block(text)] if "\n" in text
                      else [f"{number}. {md_escape(text)}", ""])
    return lines


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=stage_help(__doc__, (ReportConfig, "report")),
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--domain", required=True)
    for name, what in (("comparison", "the compare stage's comparison.json"),
                       ("scores", "folder of <system>/seed<S>.jsonl per-prompt scores"),
                       ("generations", "folder of <system>/seed<S>.jsonl generations"),
                       ("tables", "folder to write table1.md/.tex and examples.md to"),
                       ("figures", "folder to write passk.png and passk.csv to")):
        parser.add_argument(f"--{name}", required=True, type=Path, help=what)
    args = parser.parse_args(argv)
    params = read_params()
    config = load_section(ReportConfig, params, "report")
    systems, seeds = listed(params, "systems"), listed(params, "seeds")
    # read, check and render everything, then write: an error leaves no output behind
    comparison = read_comparison(args.comparison, args.domain, systems, seeds)
    scores = read_runs(args.scores, systems, seeds, SCORE_FIELDS)
    generations = read_runs(args.generations, systems, seeds[:1], GENERATION_FIELDS)
    ks, curves, bands = passk_curves(scores)
    title = (f"pass@k, {args.domain} ({comparison.get('n_prompts', '?')} prompts, "
             f"{len(seeds)} seed(s))")
    # the systems' columns first (the DVC plot's y), then each one's 95% band
    csv = [["k", *curves, *(f"{s}_{end}" for s in curves for end in ("low", "high"))]] + [
        [str(k), *(f"{c[i]:.6f}" for c in curves.values()),
         *(f"{band[end][i]:.6f}" for band in bands.values() for end in (0, 1))]
        for i, k in enumerate(ks)]
    outputs = {args.tables / "table1.md": table1_text(comparison, systems, tex=False) + "\n"
               + primary_markdown(comparison) + "\n" + verdict_markdown(comparison),
               args.tables / "table1.tex": table1_text(comparison, systems, tex=True),
               args.tables / "examples.md": examples_markdown(
                   {s: g[0] for s, g in generations.items()}, config, args.domain),
               args.figures / "passk.csv": "".join(",".join(row) + "\n" for row in csv),
               args.figures / "passk.png": passk_png(ks, curves, bands, title)}
    for path, content in outputs.items():
        with atomic_path(path) as tmp:
            tmp.write_bytes(content if isinstance(content, bytes) else content.encode())
    print(f"{args.domain}: Table 1, examples -> {args.tables}; pass@k -> {args.figures}")


if __name__ == "__main__":
    run_main(main)
