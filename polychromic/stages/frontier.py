"""Stage `frontier`: Figure 3, each system's quality-diversity frontier, and whether
polychromic lies above LoRA's.

Points (dev prompts, seed 42): each system at each temperature of the protocol's grid
(zero-shot base model, LoRA, polychromic), each adapter at each scale of its update
(WiSE-FT-style interpolation toward the base model), and the systems at their evaluated
settings (the domain's temperature; LoRA also at the temperature matched to polychromic's
diversity on val). Per point: the mean over prompts of the domain's primary (independent)
diversity metric, the reward's own semantic diversity, pass@1 and pass@10, each with a
percentile bootstrap 95% CI over prompts.

Figure 3 (plots/<domain>/figure3.png, and figure3.csv): pass@1, and pass@10, against
diversity, a line per system and knob. frontier.json says, for the reference (polychromic;
`--reference`: another, studies/confirmation) at the domain's temperature, how far above
(or below) LoRA's temperature frontier and scale frontier it lies at its diversity, and
whether its CI clears the line.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from polychromic.config import UserError, load_section, read_params, run_main
from polychromic.frontier import above_frontier, frontier_points
from polychromic.io import atomic_path, read_jsonl, write_json
from polychromic.settings import CompareConfig, PrimaryHypotheses, system_method

QUALITY = ("pass@1", "pass@10")
COLOURS = {"zero_shot": "grey", "baseline": "tab:blue", "quality_diversity": "tab:green",
           "set_objective": "tab:purple", "passk": "tab:red",
           "polychromic": "tab:orange"}


def load_run(metrics: Path, scores: Path, knob: str | None = None) -> dict:
    try:
        data = json.loads(metrics.read_text(encoding="utf-8"))
        system, sampling = data["system"], data["sampling"]
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise UserError(f"{metrics}: not evaluate's metrics ({err})") from None
    if knob is None:  # a frontier point: the knob its file is named after
        knob = metrics.stem.split("-", 1)[0]
        if knob not in ("temperature", "adapter_scale"):
            raise UserError(f"{metrics}: a frontier point is named <knob>-<value>.json")
    return {"system": system, "knob": knob, "value": sampling.get(knob),
            "temperature": sampling.get("temperature"), "scores": read_jsonl(scores, {"id": str})}


def defined(point: dict, *metrics: str) -> bool:
    return all(point[m]["mean"] is not None for m in metrics)


def error_bar(point: dict, metric: str) -> list[list[float]] | None:
    """matplotlib's asymmetric error bar from the point's CI; none where it has no CI."""
    mean, ci = point[metric]["mean"], point[metric]["ci95"]
    return None if ci is None else [[mean - ci[0]], [ci[1] - mean]]


def figure(points: list[dict], x: str, domain: str) -> bytes:
    """A metric undefined at a point (pass@10 with fewer than 10 samples) leaves it out of
    that panel."""
    import io

    import matplotlib
    matplotlib.use("Agg")  # no display on a pipeline machine
    from matplotlib import pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.5), dpi=150)
    for ax, y in zip(axes, QUALITY, strict=True):
        for (system, knob) in sorted({(p["system"], p["knob"]) for p in points
                                      if p["knob"] != "evaluated"}):
            line = sorted((p for p in points if (p["system"], p["knob"]) == (system, knob)
                           and defined(p, x, y)), key=lambda p: p["value"])
            if not line:
                continue
            xs = [p[x]["mean"] for p in line]
            ys = [p[y]["mean"] for p in line]
            label = f"{system.replace('baseline', 'LoRA')} ({knob.replace('_', ' ')})"
            ax.plot(xs, ys, "-" if knob == "temperature" else "--", marker="o", markersize=3,
                    color=COLOURS.get(system_method(system), "black"), label=label, linewidth=1)
            for p, px, py in zip(line, xs, ys, strict=True):
                ax.annotate(f"{p['value']:g}", (px, py), textcoords="offset points",
                            xytext=(3, 3), fontsize=6)
        for p in (p for p in points if p["knob"] == "evaluated" and defined(p, x, y)):
            ax.errorbar(p[x]["mean"], p[y]["mean"], xerr=error_bar(p, x), yerr=error_bar(p, y),
                        fmt="*" if "_matched" in p["system"] else "s", markersize=8,
                        color=COLOURS.get(system_method(p["system"]), "black"), capsize=2,
                        elinewidth=0.8,
                        label=f"{p['system'].replace('baseline', 'LoRA')} (evaluated, "
                              f"T {p['temperature']:g})")
        ax.set(xlabel=f"{x} (diversity no objective sees)", ylabel=y)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=6)
    fig.suptitle(f"Figure 3: quality against diversity along each system's frontier, {domain} "
                 "(dev, seed 42; bars: 95% CIs over prompts)", fontsize=9)
    fig.savefig(buffer := io.BytesIO(), format="png", bbox_inches="tight",
                metadata={"Software": None})
    plt.close(fig)
    return buffer.getvalue()


def csv_text(points: list[dict], metrics: list[str]) -> str:
    header = ["system", "knob", "value"] + [f"{m}{s}" for m in metrics
                                            for s in ("", "_low", "_high")]
    lines = [",".join(header)]
    for p in points:
        cells = [p["system"], p["knob"], f"{p['value']:g}"]
        for m in metrics:
            mean, ci = p[m]["mean"], p[m]["ci95"] or [None, None]
            cells += ["" if v is None else f"{v:.6f}" for v in (mean, *ci)]
        lines.append(",".join(cells))
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--domain", required=True)
    parser.add_argument("--points", required=True, type=Path,
                        help="evaluate metrics of the frontier points: <system>/<folder>/"
                        "<knob>-<value>.json (a folder per knob, as generate --frontier "
                        "writes)")
    parser.add_argument("--point-scores", required=True, type=Path,
                        help="their per-prompt scores, the same layout in .jsonl")
    parser.add_argument("--evaluated", required=True, type=Path,
                        help="evaluate metrics of the systems as evaluated: <system>/seed<S>.json")
    parser.add_argument("--evaluated-scores", required=True, type=Path)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--split", default="dev", choices=("dev", "confirmation"),
                        help="the split the points answer (what frontier.json says)")
    parser.add_argument("--reference", help="the system placed against LoRA's frontiers, "
                        "instead of compare.reference")
    parser.add_argument("--out", required=True, type=Path, help="frontier.json")
    parser.add_argument("--plots", required=True, type=Path, help="folder for figure3.png/.csv")
    args = parser.parse_args(argv)
    params = read_params()
    x = load_section(PrimaryHypotheses, params, f"{args.domain}.primary").diversity
    config = load_section(CompareConfig, params, "compare")
    reference_system = args.reference or config.reference
    runs = [load_run(path, args.point_scores / path.relative_to(args.points).with_suffix(
        ".jsonl")) for path in sorted(args.points.glob("*/*/*.json"))]
    for path in sorted(args.evaluated.glob(f"*/seed{args.seed}.json")):
        run = load_run(path, args.evaluated_scores / path.parent.name / f"seed{args.seed}.jsonl",
                       knob="temperature")
        runs.append({**run, "knob": "evaluated"})
    if not runs:
        raise UserError(f"{args.points}: no frontier points")
    metrics = list(dict.fromkeys([x, "semantic", *QUALITY]))
    points = frontier_points(runs, metrics, config.resamples, config.seed)
    for point, run in zip(points, runs, strict=True):
        point["temperature"] = run["temperature"]
    reference = next((p for p in points if p["knob"] == "evaluated"
                      and p["system"] == reference_system), None)
    verdicts = {}
    for knob in ("temperature", "adapter_scale"):
        line = [p for p in points if p["system"] == config.lora_system and p["knob"] == knob]
        if reference is not None and line:
            verdicts[f"{config.lora_system} {knob}"] = {
                y: above_frontier(reference, line, x, y) for y in QUALITY}
    write_json(args.out, {"domain": args.domain, "split": args.split, "seed": args.seed,
                          "diversity": x, "reference": reference_system,
                          "reference_vs_frontier": verdicts, "points": points})
    args.plots.mkdir(parents=True, exist_ok=True)
    for name, content in (("figure3.png", figure(points, x, args.domain)),
                          ("figure3.csv", csv_text(points, metrics).encode())):
        with atomic_path(args.plots / name) as tmp:
            tmp.write_bytes(content)
    print(f"{args.domain}: {len(points)} frontier points -> {args.out}, {args.plots}")


if __name__ == "__main__":
    run_main(main)
