"""Stage `compare`: per domain, every metric of the reference system (polychromic) against
each other system on per-prompt values, aggregated over the training seeds, and a verdict
against the success criteria of the design document.

Aggregation: a prompt's value is the mean over seeds of its per-seed values (undefined ones
left out); tests and CIs run over prompts. Per system: the mean over prompts, a percentile
bootstrap 95% CI of that mean (prompts resampled), and the SD over seeds of the per-seed means.

Tests (`stats.compare`), one-sided in the direction of "polychromic is better" (lower is
better for Self-BLEU and perplexity): paired Wilcoxon signed-rank (the main test), Mann-Whitney
U (the design document's, unpaired), paired Cohen's d_z, a seeded bootstrap 95% CI of the mean
difference. Holm and Bonferroni corrections run over the whole family (all metrics x all
pairs) for each test; the verdict uses `correction` on the Wilcoxon p-values.

Verdict, against `lora_system`:
- minimum: higher `diversity_metric`, its corrected p < minimum_p, its direction-aware d_z >
  minimum_effect, and comparable quality: for each of `quality_metrics` that the domain
  computes (the others are listed as not applicable) the lower end of the bootstrap CI of
  (polychromic - LoRA), oriented so that positive is better, is above
  -quality_margin x |LoRA mean| (non-inferiority);
- strong: the minimum, corrected p < strong_p, d_z > strong_effect, relative `strong_passk`
  gain > strong_passk_gain, judge win rate > strong_judge_win_rate (not measured when the
  judge is off: then the strong verdict is not met).
"""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from polychromic import stats
from polychromic.config import (
    UserError,
    help_text,
    load_section,
    param_list,
    read_params,
    require,
    run_main,
)
from polychromic.domains import domain_class
from polychromic.io import read_jsonl, write_json
from polychromic.metrics import metric_table

CORRECTIONS = {"holm": stats.holm, "bonferroni": stats.bonferroni}


@dataclass
class CompareConfig:
    reference: str = field(default="polychromic", metadata={"help": "the system under test"})
    against: list[str] = field(default_factory=lambda: ["baseline", "zero_shot", "few_shot"],
                               metadata={"help": "systems the reference is compared with"})
    lora_system: str = field(default="baseline", metadata={"help": "the verdict's comparator"})
    resamples: int = field(default=10_000, metadata={"help": "bootstrap resamples (>= 10000)"})
    seed: int = field(default=42, metadata={"help": "bootstrap seed"})
    correction: str = field(default="holm", metadata={"help": "holm | bonferroni: the "
                                                      "correction the verdict uses"})
    diversity_metric: str = field(default="semantic",
                                  metadata={"help": "the diversity metric of the verdict"})
    quality_metrics: list[str] = field(
        default_factory=lambda: ["rouge_l", "bertscore_f1", "pass@1"],
        metadata={"help": "single-sample quality that must stay comparable"})
    quality_margin: float = field(default=0.05, metadata={
        "help": "non-inferiority margin, relative to the LoRA mean"})
    minimum_p: float = field(default=0.05, metadata={"help": "minimum criterion: p below"})
    minimum_effect: float = field(default=0.3, metadata={"help": "minimum criterion: d_z above"})
    strong_p: float = field(default=0.01, metadata={"help": "strong criterion: p below"})
    strong_effect: float = field(default=0.5, metadata={"help": "strong criterion: d_z above"})
    strong_passk: str = field(default="pass@10", metadata={"help": "strong criterion metric"})
    strong_passk_gain: float = field(default=0.2, metadata={
        "help": "strong criterion: relative gain of strong_passk over LoRA above"})
    strong_judge_win_rate: float = field(default=0.55, metadata={
        "help": "strong criterion: judge win rate above"})

    def check(self, key: str) -> None:
        require(self.resamples >= 10_000, f"{key}.resamples", "must be >= 10000")
        require(self.correction in CORRECTIONS, f"{key}.correction",
                f"must be one of {sorted(CORRECTIONS)}")
        require(self.lora_system in self.against, f"{key}.lora_system", "must be in 'against'")
        require(self.reference not in self.against, f"{key}.against",
                "must not contain the reference")
        require(self.quality_margin >= 0, f"{key}.quality_margin", "must be >= 0")


def load_scores(scores_dir: Path, system: str, seeds: list[int]) -> list[dict[str, dict]]:
    """Per seed: prompt id -> that prompt's scores."""
    per_seed = []
    for seed in seeds:
        path = scores_dir / system / f"seed{seed}.jsonl"
        if not path.is_file():
            raise UserError(f"{path}: no scores for system {system!r} seed {seed} "
                            "(run: dvc repro evaluate)")
        per_seed.append({row["id"]: row for row in read_jsonl(path, {"id": str})})
    return per_seed


def seed_averaged(per_seed: list[dict[str, dict]], prompts: list[str],
                  metric: str) -> list[float | None]:
    """A prompt's value: the mean over the seeds where it is defined (None if none)."""
    values = []
    for prompt in prompts:
        defined = [seed[prompt].get(metric) for seed in per_seed]
        defined = [v for v in defined if v is not None]
        values.append(float(np.mean(defined)) if defined else None)
    return values


def summarise(per_seed: list[dict[str, dict]], prompts: list[str], metric: str,
              config: CompareConfig) -> dict:
    values = [v for v in seed_averaged(per_seed, prompts, metric) if v is not None]
    seed_means = [np.mean([v for v in (seed[p].get(metric) for p in prompts) if v is not None])
                  if any(seed[p].get(metric) is not None for p in prompts) else None
                  for seed in per_seed]
    defined_means = [m for m in seed_means if m is not None]
    if not values:
        return {"mean": None, "ci95": None, "sd_over_seeds": None, "per_seed": seed_means,
                "undefined": len(prompts)}
    ci = stats.bootstrap_ci(values, np.zeros(len(values)), config.resamples, seed=config.seed)
    return {"mean": float(np.mean(values)), "ci95": list(ci),
            "sd_over_seeds": (float(np.std(defined_means, ddof=1))
                              if len(defined_means) > 1 else None),
            "per_seed": [None if m is None else float(m) for m in seed_means],
            "undefined": len(prompts) - len(values)}


def compare_pair(a: list[float | None], b: list[float | None], higher_is_better: bool,
                 config: CompareConfig) -> dict:
    pairs = [(x, y) for x, y in zip(a, b, strict=True) if x is not None and y is not None]
    if len(pairs) < 2:
        return {"n": len(pairs), "undefined": "fewer than two prompts with both values defined"}
    x, y = zip(*pairs, strict=True)
    return {"n": len(pairs), **stats.compare(x, y, higher_is_better, config.resamples,
                                             config.seed)}


def correct(comparisons: list[dict]) -> None:
    """Add Holm and Bonferroni p-values over the whole family, for each test."""
    tested = [c for c in comparisons if "wilcoxon_p" in c]
    for test in ("wilcoxon_p", "mann_whitney_p"):
        for name, method in CORRECTIONS.items():
            adjusted = method([c[test] for c in tested]) if tested else []
            for c, p in zip(tested, adjusted, strict=True):
                c[f"{test}_{name}"] = p


def criterion(name: str, value: float | None, threshold: str, met: bool | None) -> dict:
    return {"criterion": name, "value": value, "threshold": threshold, "met": met}


def verdict(comparisons: list[dict], table: dict, judge: dict | None,
            config: CompareConfig) -> dict:
    def find(metric: str) -> dict:
        for c in comparisons:
            if c["metric"] == metric and c["b"] == config.lora_system:
                return c
        raise UserError(f"params.yaml: 'compare' metric {metric!r} is not evaluated "
                        f"(known: {', '.join(table)})")

    def oriented(metric: str, value: float | None) -> float | None:
        return None if value is None else value * (1 if table[metric][1] else -1)

    main = find(config.diversity_metric)
    difference = oriented(config.diversity_metric, main.get("mean_difference"))
    p = main.get(f"wilcoxon_p_{config.correction}")
    effect = oriented(config.diversity_metric, main.get("cohens_dz"))
    what = f"{config.diversity_metric} vs {config.lora_system}"

    def below(value, limit):
        return None if value is None else value < limit

    def above(value, limit):
        return None if value is None else value > limit

    minimum = [
        criterion(f"higher diversity ({what}, mean difference)", difference, "> 0",
                  above(difference, 0)),
        criterion(f"significant ({what}, Wilcoxon, {config.correction})", p,
                  f"< {config.minimum_p}", below(p, config.minimum_p)),
        criterion(f"effect size ({what}, d_z)", effect, f"> {config.minimum_effect}",
                  above(effect, config.minimum_effect))]
    # a quality metric the domain does not compute means nothing there (e.g. ROUGE on code)
    not_applicable = [m for m in config.quality_metrics if m not in table]
    for metric in [m for m in config.quality_metrics if m in table]:
        c = find(metric)
        if "bootstrap_ci95" not in c:
            minimum.append(criterion(f"comparable quality ({metric})", None, "", None))
            continue
        low = min(oriented(metric, v) for v in c["bootstrap_ci95"])
        margin = -config.quality_margin * abs(c["mean_b"])
        minimum.append(criterion(
            f"comparable quality ({metric}: CI95 lower end of the better-oriented difference)",
            low, f"> {margin:.4g} ({config.quality_margin:.0%} of LoRA)", low > margin))
    passk = find(config.strong_passk)
    gain = (None if "mean_b" not in passk or passk["mean_b"] == 0
            else (passk["mean_a"] - passk["mean_b"]) / passk["mean_b"])
    win_rate = None if judge is None else judge.get("overall", {}).get("win_rate")
    strong = [
        criterion(f"significant ({what}, Wilcoxon, {config.correction})", p,
                  f"< {config.strong_p}", below(p, config.strong_p)),
        criterion(f"effect size ({what}, d_z)", effect, f"> {config.strong_effect}",
                  above(effect, config.strong_effect)),
        criterion(f"{config.strong_passk} relative gain vs {config.lora_system}", gain,
                  f"> {config.strong_passk_gain}", above(gain, config.strong_passk_gain)),
        criterion("judge win rate vs LoRA" + ("" if judge else " (judge off: not measured)"),
                  win_rate, f"> {config.strong_judge_win_rate}",
                  above(win_rate, config.strong_judge_win_rate))]
    minimum_met = all(c["met"] is True for c in minimum)
    return {"minimum": {"met": minimum_met, "criteria": minimum,
                        "not_applicable": not_applicable},
            "strong": {"met": minimum_met and all(c["met"] is True for c in strong),
                       "criteria": strong}}


def compare_domain(scores_dir: Path, systems: list[str], seeds: list[int],
                   table: dict[str, tuple[str, bool, str]], judge: dict | None,
                   config: CompareConfig) -> dict:
    for system in [config.reference, *config.against]:
        require(system in systems, "compare", f"names system {system!r}, which is not in "
                f"'systems' ({', '.join(systems)})")
    loaded = {system: load_scores(scores_dir, system, seeds) for system in systems}
    prompts = sorted(loaded[config.reference][0])
    for system, per_seed in loaded.items():
        for seed, rows in zip(seeds, per_seed, strict=True):
            if sorted(rows) != prompts:
                raise UserError(f"{scores_dir / system / f'seed{seed}.jsonl'}: holds other "
                                f"prompts than {config.reference} seed {seeds[0]}")
    summary = {system: {metric: summarise(per_seed, prompts, metric, config)
                        for metric in table} for system, per_seed in loaded.items()}
    comparisons = []
    for metric, (_, higher_is_better, _) in table.items():
        a = seed_averaged(loaded[config.reference], prompts, metric)
        for other in config.against:
            b = seed_averaged(loaded[other], prompts, metric)
            comparisons.append({"metric": metric, "a": config.reference, "b": other,
                                **compare_pair(a, b, higher_is_better, config)})
    correct(comparisons)
    return {
        "seeds": seeds, "n_prompts": len(prompts), "reference": config.reference,
        "correction": config.correction, "alpha": config.minimum_p,
        "metrics": {m: {"group": g, "higher_is_better": h, "label": label}
                    for m, (g, h, label) in table.items()},
        "systems": summary, "comparisons": comparisons, "judge": judge,
        "verdict": verdict(comparisons, table, judge, config),
    }


HEADLINE = ("semantic", "self_bleu", "distinct_2", "rouge_l", "bertscore_f1", "log_perplexity",
            "pass@1", "pass@10")


def headline(result: dict, config: CompareConfig) -> dict:
    """The few numbers `dvc metrics show/diff` print: polychromic vs LoRA on the headline
    metrics (difference, d_z, corrected Wilcoxon p) and the verdict. comparison.json has all."""
    vs_lora = {}
    for c in result["comparisons"]:
        if c["b"] == config.lora_system and c["metric"] in HEADLINE:
            vs_lora[c["metric"]] = {"difference": c.get("mean_difference"),
                                    "d_z": c.get("cohens_dz"),
                                    "p": c.get(f"wilcoxon_p_{config.correction}")}
    return {f"{config.reference}_vs_{config.lora_system}": vs_lora,
            "verdict": {level: result["verdict"][level]["met"]
                        for level in ("minimum", "strong")}}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__ + "\nparams.yaml compare:\n"
                                     + help_text(CompareConfig),
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--domain", required=True)
    parser.add_argument("--scores", required=True,
                        help="directory of per-prompt scores: <system>/seed<S>.jsonl")
    parser.add_argument("--judge", required=True, help="the judge stage's metrics JSON")
    parser.add_argument("--out", required=True, help="comparison JSON to write (everything)")
    parser.add_argument("--summary", required=True,
                        help="headline metrics JSON to write (for dvc metrics show/diff)")
    args = parser.parse_args(argv)
    params = read_params()
    config = load_section(CompareConfig, params, "compare")
    seeds = param_list(params, "train.seeds", int)
    systems = param_list(params, "systems", str)
    ks = params.get("evaluate", {}).get("ks", [1, 3, 5, 10])
    domain = domain_class(args.domain)
    table = metric_table(domain.quality_metrics, domain.domain_metrics, ks)
    try:
        judge = json.loads(Path(args.judge).read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise UserError(f"{args.judge}: cannot read the judge's metrics ({err})") from None
    judge = judge if judge.get("enabled") else None
    result = {"domain": args.domain, **compare_domain(Path(args.scores), systems, seeds, table,
                                                      judge, config)}

    from polychromic import tracking

    with tracking.mlflow_run("compare", args.domain, config.reference,
                             {"compare": asdict(config), "seeds": seeds}):
        tracking.log_metrics({f"{c['b']}.{c['metric']}.{key}": c[key]
                              for c in result["comparisons"]
                              for key in ("mean_difference", "cohens_dz", "wilcoxon_p",
                                          f"wilcoxon_p_{config.correction}", "mann_whitney_p")
                              if c.get(key) is not None}
                             | {f"verdict.{level}": float(result["verdict"][level]["met"])
                                for level in ("minimum", "strong")})
    write_json(args.out, result)
    write_json(args.summary, headline(result, config))
    main_result = next(c for c in result["comparisons"] if c["metric"] ==
                       config.diversity_metric and c["b"] == config.lora_system)
    print(f"{args.domain}: {config.diversity_metric} {config.reference} - {config.lora_system} "
          f"= {main_result.get('mean_difference')}, Wilcoxon p = {main_result.get('wilcoxon_p')};"
          f" minimum criteria met: {result['verdict']['minimum']['met']}, strong: "
          f"{result['verdict']['strong']['met']} -> {args.out}")


if __name__ == "__main__":
    run_main(main)
