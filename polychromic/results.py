"""The results as a reader sees them, rendered from the compare stage's comparison files: a
short table per domain (its pre-registered primary hypotheses, polychromic vs LoRA, and the
verdict) for the README, and the full tables for docs/results-tables.md. Nothing here is
typed by hand, so no document can drift from `dvc.lock`: the `results` stage writes the
docs page, and a test checks the README's block against the same rendering
(`polychromic readme` rewrites that block)."""

from __future__ import annotations

import json
import re
from pathlib import Path

from polychromic.config import UserError
from polychromic.tables import fmt, md_table

START, END = "<!-- results:start -->", "<!-- results:end -->"


def read_comparison(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as err:
        raise UserError(f"{path}: cannot read the comparison ({err})") from None


def verdict_words(comparison: dict) -> str:
    verdict = comparison["verdict"]
    if verdict["strong"]["met"]:
        return "strong bar met"
    return "minimum bar met" if verdict["minimum"]["met"] else "minimum bar not met"


def primary_table(comparison: dict) -> str:
    """One row per primary hypothesis: both systems' means, the difference, d_z (of the
    difference, positive where the reference is better), the corrected one-sided p, whether
    it holds at the minimum bar's level, and a non-inferiority test's power at a true
    difference of 0."""
    correction, alpha = comparison["correction"], comparison["alpha"]
    rows = []
    for h in comparison["primary"]["family"]:
        test = h["test"] + (f" (δ {h['margin']:.3g})" if h["test"] == "non-inferiority"
                            else "") + (f" vs {h['against']}" if h.get(
                                "against", comparison["lora_system"]) != comparison[
                                "lora_system"] else "")
        p = h.get(f"p_{correction}")
        holds = "–" if p is None else ("yes" if p < alpha else "no")
        at_zero = (h.get("power") or {}).get("power_at_zero")
        rows.append([h["metric"], test, fmt(h.get("mean_reference")), fmt(h.get("mean_lora")),
                     fmt(h.get("mean_difference")), fmt(h.get("cohens_dz"), 2), fmt(p), holds,
                     "–" if at_zero is None else f"{at_zero:.0%}"])
    header = ["Metric", "Hypothesis", comparison["reference"], comparison["lora_system"],
              "Difference", "d_z", f"p ({correction})", f"Holds at {alpha}", "Power at 0"]
    return md_table(header, rows, "ll" + "r" * 7)


def domain_block(domain: str, comparison: dict) -> str:
    seeds, split = comparison["seeds"], comparison.get("split", "dev")
    return (f"**{domain}** ({comparison['n_prompts']} {split} prompts, {len(seeds)} seed"
            f"{'s' * (len(seeds) != 1)}): {verdict_words(comparison)}\n\n"
            + primary_table(comparison))


def headline(domains: list[str], metrics_root: Path) -> str:
    """The README's block: one short table per domain, in params.yaml's order."""
    blocks = [domain_block(d, read_comparison(metrics_root / d / "comparison.json"))
              for d in domains]
    return "\n\n".join(blocks) + "\n"


def tables_page(domains: list[str], metrics_root: Path) -> str:
    """docs/results-tables.md: per domain, the headline table and the report stage's Table 1
    with its primary analysis and verdict."""
    parts = ["# Results tables\n",
             "Written by the `results` stage from `metrics/` (the committed `dvc.lock`'s run); "
             "do not edit by hand. What they mean: [results.md](results.md).\n"]
    for domain in domains:
        comparison = read_comparison(metrics_root / domain / "comparison.json")
        table1 = metrics_root / "report" / domain / "table1.md"
        try:
            body = table1.read_text(encoding="utf-8")
        except OSError as err:
            raise UserError(f"{table1}: cannot read the report ({err})") from None
        body = re.sub(r"^## ", "### ", body, flags=re.M)
        parts.append(f"## {domain}\n\n{domain_block(domain, comparison)}\n\n{body.strip()}\n")
    return "\n".join(parts)


def replace_block(text: str, block: str, where: str) -> str:
    """`text` with what stands between the START and END markers replaced by `block`."""
    if text.count(START) != 1 or text.count(END) != 1 or text.index(START) > text.index(END):
        raise UserError(f"{where}: needs one '{START}' line before one '{END}' line")
    head, rest = text.split(START)
    _, tail = rest.split(END)
    return f"{head}{START}\n{block}{END}{tail}"


def block_of(text: str) -> str:
    """What stands between the markers (empty if they are missing)."""
    if START not in text or END not in text:
        return ""
    return text.split(START, 1)[1].split(END, 1)[0].removeprefix("\n")


def read_json(path: Path, what: str) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as err:
        raise UserError(f"{path}: cannot read {what} ({err})") from None


def matched_line(matched: dict, reference: str = "polychromic",
                 system: str = "baseline_matched") -> str:
    where = {None: "", "below": " (below the grid: its lowest temperature)",
             "above": " (above the grid: its highest temperature)"}.get(
        matched.get("outside"), f" ({matched.get('outside')} the grid)")
    curve = ", ".join(f"{t:g}: {fmt(v)}" for t, v in matched["curve"])
    return (f"On val (seed 42), {reference} at temperature "
            f"{matched['reference_temperature']:g} has {matched['metric']} "
            f"{fmt(matched['target'])}; LoRA reaches it at temperature "
            f"**{fmt(matched['temperature'])}**{where} (LoRA's curve: {curve}). LoRA at that "
            f"temperature is `{system}`.")


def frontier_table(frontier: dict) -> str:
    """Polychromic (evaluated) against LoRA's frontiers: the gap in pass@1 and pass@10 at its
    diversity, and whether its CI clears the line."""
    def cell(entry: dict) -> str:
        if entry.get("gap") is None:
            return "– (outside the frontier)"
        return f"{fmt(entry['gap'])} ({'clears' if entry['clears'] else 'does not clear'})"

    rows = [[knob.replace("baseline", "LoRA").replace("_", " "), cell(v["pass@1"]),
             cell(v["pass@10"])] for knob, v in frontier["reference_vs_frontier"].items()]
    return md_table([f"{frontier['reference']} vs frontier", "pass@1 gap", "pass@10 gap"],
                    rows, "lrr")


def power_table(plan: dict) -> str:
    """Per primary hypothesis: its val SD, prompts needed (per samples a prompt where that
    matters), power with the sealed prompts, and what the plan chooses."""
    rows = []
    for h in plan["hypotheses"]:
        needed, at = h["prompts_needed"], h.get("power_at_available")
        if isinstance(needed, dict):
            needed = ", ".join(f"{m}: {'–' if n is None else n}" for m, n in needed.items())
            at = ("–" if at is None else ", ".join(f"{m}: {p:.0%}" for m, p in at.items()))
        else:
            at = "–" if at is None else f"{at:.0%}"
        chosen = (f"margin {fmt(h['margin'])}, " + ("samples " + str(h["samples_chosen"])
                                                      if h.get("samples_chosen") else
                                                      "no samples suffice; reachable margin "
                                                      + (f"{h['margin_share_reachable']:.1%}"
                                                         if h.get("margin_share_reachable")
                                                         is not None else "–"))
                  if h["test"] == "non-inferiority" else f"d_z {h['effect_dz']}")
        rows.append([h["metric"], h["test"], h["against"], fmt(h["val_sd_difference"]),
                     str(needed), at, chosen])
    header = ["Metric", "Test", "Against", "Val SD of diff.", "Prompts needed",
              f"Power with {plan['available']} sealed", "Plan"]
    return md_table(header, rows, "lllrrrl")


def protocol_page(domains: list[str], metrics_root: Path, plots: str) -> str:
    """docs/protocol-results.md: per domain, the matched temperature, the primary family on
    dev (three seeds, pass@k and quality against LoRA at the matched temperature), Figure 3's
    verdicts and the power plan for the confirmation run. `plots`: the study's plots folder
    as the page links it."""
    parts = ["# Protocol results\n",
             "Written by the protocol's `results` stage from `studies/protocol/metrics/` (its "
             "committed `dvc.lock`'s run); do not edit by hand. The rules they follow: "
             "[protocol.md](protocol.md). These are dev-split results (development, "
             "whatever their p-values); the confirmation split is scored once, later.\n"]
    for domain in domains:
        folder = metrics_root / domain
        comparison = read_comparison(folder / "comparison.json")
        matched = read_json(folder / "matched.json", "the matched temperature")
        frontier = read_json(folder / "frontier.json", "the frontier")
        plan = read_json(folder / "power.json", "the power plan")
        parts.append(
            f"## {domain}\n\n{matched_line(matched)}\n\n"
            f"### Primary family\n\n{domain_block(domain, comparison)}\n\n"
            f"### Figure 3: the frontiers (dev, seed {frontier['seed']})\n\n"
            f"![Figure 3, {domain}]({plots}/{domain}/frontier/figure3.png)\n\n"
            f"Diversity axis: {frontier['diversity']}.\n\n{frontier_table(frontier)}\n\n"
            f"### Power plan for the confirmation run (val, level {plan['alpha']:.3g}, power "
            f"{plan['power']:.0%})\n\n{power_table(plan)}\n")
    return "\n".join(parts)


def confirmation_page(domains: list[str], study: Path, plots: str) -> str:
    """docs/confirmation-results.md: per domain and reference (polychromic, then the
    objective selected on val, where one was): the matched temperature (chosen on val), the
    primary family on the confirmation split, Figure 3's verdicts on it and Table 1.
    `study`: studies/confirmation; `plots`: its plots folder as the page links it."""
    parts = ["# Confirmation results\n",
             "Written by the confirmation run's `results` stage from "
             "`studies/confirmation/metrics/` (its committed `dvc.lock`'s run); do "
             "not edit by hand. The protocol they follow, committed before the run: "
             "[protocol.md](protocol.md); the objectives' selection on val: "
             "[objectives.md](objectives.md). The sealed confirmation split, scored once.\n"]
    for domain in domains:
        metrics = study / "metrics" / domain
        references = sorted((p.parent.name for p in metrics.glob("*/comparison.json")),
                            key=lambda name: (name != "polychromic", name))
        if not references:
            raise UserError(f"{metrics}: no comparison (<reference>/comparison.json)")
        parts.append(f"## {domain}\n")
        for reference in references:
            system = ("baseline_matched" if reference == "polychromic"
                      else f"baseline_matched_{reference}")
            matched = read_json(metrics / f"matched_{reference}.json", "the matched temperature")
            comparison = read_comparison(metrics / reference / "comparison.json")
            frontier = read_json(metrics / reference / "frontier.json", "the frontier")
            table1 = metrics / "report" / reference / "table1.md"
            try:
                body = re.sub(r"^## ", "#### ", table1.read_text(encoding="utf-8"), flags=re.M)
            except OSError as err:
                raise UserError(f"{table1}: cannot read the report ({err})") from None
            parts.append(
                f"### {reference}\n\n{matched_line(matched, reference, system)}\n\n"
                f"{domain_block(domain, comparison)}\n\n"
                f"Figure 3 on confirmation (seed {frontier['seed']}), diversity axis "
                f"{frontier['diversity']}:\n\n"
                f"![Figure 3, {domain}, {reference}]({plots}/{domain}/frontier/"
                f"{reference}/figure3.png)\n\n{frontier_table(frontier)}\n\n{body.strip()}\n")
    return "\n".join(parts)
