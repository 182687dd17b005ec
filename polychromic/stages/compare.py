"""Stage `compare`: per domain, every metric of the reference system (polychromic) against
each other system on per-prompt values, aggregated over the training seeds, the
pre-registered primary analysis with its power, and a verdict from the primary family only.

Aggregation: a prompt's value is the mean over seeds of its per-seed values (undefined ones
left out); tests and CIs run over prompts. Per system: the mean over prompts, a percentile
bootstrap 95% CI of that mean (prompts resampled), and the SD over seeds of the per-seed means.

Tests (`stats.compare`), one-sided in the direction of "polychromic is better" (lower is
better for Self-BLEU and perplexity): paired Wilcoxon signed-rank (the main test), Mann-Whitney
U (the design document's, unpaired), paired Cohen's d_z, a seeded bootstrap 95% CI of the mean
difference.

Two families, each corrected on its own (Holm and Bonferroni, for each test):
- primary, declared per domain in `<domain>.primary` before a run: polychromic vs
  `lora_system` on the domain's diversity metric (superiority), and vs `matched_system`
  (LoRA sampled at the temperature where its diversity matches polychromic's, chosen on
  val; `lora_system` when null) on its pass@k metric (superiority) and on each of its
  quality metrics, non-inferiority with margin δ = margin x |comparator mean|: a one-sided
  bootstrap test that the mean of (polychromic - comparator, oriented so that positive is
  better) is above -δ. Each primary hypothesis also reports its d_z (of the differences,
  positive where polychromic is better) with a bootstrap CI, the smallest d_z detectable
  with `power` at the n in hand, a non-inferiority test's power at a true difference of 0,
  and the prompts needed at the pre-registered effect (one-sided paired t approximation, at
  level minimum_p / m, m the family's size: Holm's first step, so conservative);
- exploratory: every other comparison (every metric x every system).

Verdict, from the primary family (`correction` on its Wilcoxon p-values):
- minimum: higher diversity, its corrected p < minimum_p, its direction-aware d_z >
  minimum_effect, and every quality non-inferiority hypothesis rejected (corrected p <
  minimum_p);
- strong: the minimum, diversity corrected p < strong_p, d_z > strong_effect, pass@k higher
  with corrected p < minimum_p and relative gain > strong_passk_gain, judge win rate >
  strong_judge_win_rate (not measured when the judge is off: then the strong verdict is not
  met).
"""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np

from polychromic import stats
from polychromic.config import UserError, load_section, read_params, require, run_main, stage_help
from polychromic.domains import domain_class
from polychromic.io import read_jsonl, write_json
from polychromic.metrics import metric_table
from polychromic.settings import (
    CompareConfig,
    EvaluateConfig,
    PrimaryHypotheses,
    listed,
)

CORRECTIONS = {"holm": stats.holm, "bonferroni": stats.bonferroni}



def scores_path(scores: Path | list[Path], system: str, seed: int) -> Path:
    """<folder>/<system>/seed<S>.jsonl in the first folder that holds the system: a study's
    arm lists its own scores, then the default run's (the systems it shares)."""
    folders = [scores] if isinstance(scores, Path) else scores
    folder = next((f for f in folders if (f / system).is_dir()), folders[0])
    return folder / system / f"seed{seed}.jsonl"


def load_scores(scores_dir: Path | list[Path], system: str,
                seeds: list[int]) -> list[dict[str, dict]]:
    """Per seed: prompt id -> that prompt's scores."""
    per_seed = []
    for seed in seeds:
        path = scores_path(scores_dir, system, seed)
        if not path.is_file():
            raise UserError(f"{path}: no scores for system {system!r} seed {seed} "
                            "(run: dvc repro evaluate)")
        per_seed.append({row["id"]: row for row in read_jsonl(path, {"id": str})})
    return per_seed


def precisions(scores_dir: Path | list[Path], systems: list[str],
               seeds: list[int]) -> dict[str, str]:
    """Per system, the precision its scores were computed in (evaluate writes it on every
    row): one for all its seeds, or an error naming the file."""
    found: dict[str, str] = {}
    for system in systems:
        for seed in seeds:
            path = scores_path(scores_dir, system, seed)
            for number, row in enumerate(read_jsonl(path, {"precision": str}), start=1):
                if found.setdefault(system, row["precision"]) != row["precision"]:
                    raise UserError(f"{path}:{number}: precision {row['precision']!r}, but "
                                    f"{system} was computed in {found[system]!r} elsewhere: "
                                    "rerun it in one precision (dvc repro)")
    return found


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
    """Add Holm and Bonferroni p-values over this family, for each test."""
    tested = [c for c in comparisons if "wilcoxon_p" in c]
    for test in ("wilcoxon_p", "mann_whitney_p"):
        for name, method in CORRECTIONS.items():
            adjusted = method([c[test] for c in tested]) if tested else []
            for c, p in zip(tested, adjusted, strict=True):
                c[f"{test}_{name}"] = p


def primary_analysis(a: dict[str, list], b: dict[str, list], table: dict,
                     primary: PrimaryHypotheses, config: CompareConfig,
                     matched: dict[str, list] | None = None) -> list[dict]:
    """The primary family: each hypothesis with its one-sided p (Wilcoxon for superiority,
    bootstrap of the mean for non-inferiority), its corrected p over the family, d_z
    [bootstrap CI] and the power figures (see the module doc). Diversity is tested against
    LoRA (`b`), pass@k and quality against `matched` (LoRA at matched diversity) if given."""
    comparator = config.matched_system or config.lora_system
    rest = b if matched is None else matched
    plan = [("diversity", primary.diversity, "superiority", b, config.lora_system),
            ("passk", primary.passk, "superiority", rest, comparator)] + [
        ("quality", metric, "non-inferiority", rest, comparator) for metric in primary.quality]
    family = []
    for role, metric, kind, other, against in plan:
        pairs = [(x, y) for x, y in zip(a[metric], other[metric], strict=True)
                 if x is not None and y is not None]
        entry = {"role": role, "metric": metric, "test": kind, "against": against,
                 "n": len(pairs)}
        family.append(entry)
        if len(pairs) < 3:
            entry["undefined"] = "fewer than three prompts with both values defined"
            continue
        x, y = (np.array(v, float) for v in zip(*pairs, strict=True))
        sign = 1.0 if table[metric][1] else -1.0  # lower-is-better metrics turn over
        differences = sign * (x - y)  # positive: the reference is better
        margin = primary.margin * abs(float(y.mean())) if kind == "non-inferiority" else 0.0
        shifted = differences + margin
        # The margin is on the mean, so non-inferiority tests the mean (bootstrap): a
        # signed-rank test of the shifted differences would count every prompt where the two
        # systems tie as evidence (on code's pass@1, where most problems are 0/10 for both,
        # it "proved" non-inferiority while the CI of the mean reached 6 margins below 0).
        p = (stats.signed_rank_p(shifted) if kind == "superiority" else
             stats.mean_above_p(differences, -margin, config.resamples, config.seed))
        sd = float(differences.std(ddof=1))
        entry.update({"mean_reference": float(x.mean()), "mean_lora": float(y.mean()),
                      "mean_difference": float((x - y).mean()),
                      "better_oriented_difference": float(differences.mean()), "margin": margin,
                      "method": "wilcoxon" if kind == "superiority" else "bootstrap",
                      # d_z of the differences themselves, positive = the reference better
                      "p": p, "cohens_dz": stats.cohens_dz(differences, np.zeros(len(x))),
                      "cohens_dz_ci95": stats.dz_bootstrap_ci(differences, config.resamples,
                                                              seed=config.seed),
                      "sd_difference": sd,
                      "sd_difference_ci95": stats.sd_bootstrap_ci(
                          differences, config.resamples, seed=config.seed),
                      # the margin in SDs of the differences: the effect the test must see
                      "margin_dz": margin / sd if kind == "non-inferiority" and sd > 0 else None})
    tested = [h for h in family if "p" in h]
    for name, method in CORRECTIONS.items():
        for h, adjusted in zip(tested, method([h["p"] for h in tested]), strict=True):
            h[f"p_{name}"] = adjusted
    alpha = config.minimum_p / len(family)  # Holm's first step: a conservative level
    for h in tested:
        h["power"] = {"alpha": alpha, "power": config.power,
                      "minimum_detectable_dz": stats.minimum_detectable_dz(
                          h["n"], alpha, config.power), **planned_power(h, alpha, config)}
    return family


def planned_power(h: dict, alpha: float, config: CompareConfig) -> dict:
    """The power figures at the pre-registered effect, not the observed one: superiority at
    d_z = minimum_effect; non-inferiority at a true difference of 0, where the test must see
    the margin (margin / SD of the differences, the SD's bootstrap CI giving the range).
    `power_at_zero`: what the non-inferiority test had at the n in hand."""
    if h["test"] == "superiority":
        return {"effect_dz": config.minimum_effect,
                "prompts_needed": stats.pairs_needed(config.minimum_effect, alpha, config.power),
                "prompts_needed_range": None}
    margin, sd, sd_ci = h["margin"], h["sd_difference"], h["sd_difference_ci95"]
    if not margin or not sd:
        return {"effect_dz": None, "prompts_needed": None, "prompts_needed_range": None,
                "power_at_zero": None}
    needed = [stats.pairs_needed(margin / s, alpha, config.power) if s > 0 else 2
              for s in (sd_ci or (sd, sd))]
    return {"effect_dz": margin / sd,
            "prompts_needed": stats.pairs_needed(margin / sd, alpha, config.power),
            "prompts_needed_range": needed,
            "power_at_zero": stats.paired_power(margin / sd, h["n"], alpha)}


def criterion(name: str, value: float | None, threshold: str, met: bool | None) -> dict:
    return {"criterion": name, "value": value, "threshold": threshold, "met": met}


def verdict(family: list[dict], judge: dict | None, config: CompareConfig) -> dict:
    """The bars, from the primary family alone (see the module doc)."""
    p_key = f"p_{config.correction}"

    def below(value, limit):
        return None if value is None else value < limit

    def above(value, limit):
        return None if value is None else value > limit

    diversity, passk = family[0], family[1]
    what = f"{diversity['metric']} vs {diversity.get('against', config.lora_system)}"
    against = passk.get("against", config.lora_system)
    difference = diversity.get("better_oriented_difference")
    effect, p = diversity.get("cohens_dz"), diversity.get(p_key)
    minimum = [
        criterion(f"higher diversity ({what}, mean difference)", difference, "> 0",
                  above(difference, 0)),
        criterion(f"significant ({what}, Wilcoxon, {config.correction} over the primary "
                  "family)", p, f"< {config.minimum_p}", below(p, config.minimum_p)),
        criterion(f"effect size ({what}, d_z)", effect, f"> {config.minimum_effect}",
                  above(effect, config.minimum_effect))]
    for h in family[2:]:
        minimum.append(criterion(
            f"comparable quality ({h['metric']}: non-inferiority, margin "
            f"{h.get('margin', 0):.4g}, bootstrap, {config.correction})", h.get(p_key),
            f"< {config.minimum_p}", below(h.get(p_key), config.minimum_p)))
    reference, lora = passk.get("mean_reference"), passk.get("mean_lora")
    gain = None if not lora else (reference - lora) / lora
    win_rate = None if judge is None else judge.get("overall", {}).get("win_rate")
    strong = [
        criterion(f"significant ({what}, Wilcoxon, {config.correction})", p,
                  f"< {config.strong_p}", below(p, config.strong_p)),
        criterion(f"effect size ({what}, d_z)", effect, f"> {config.strong_effect}",
                  above(effect, config.strong_effect)),
        criterion(f"higher {passk['metric']} vs {against} (Wilcoxon, "
                  f"{config.correction})", passk.get(p_key), f"< {config.minimum_p}",
                  below(passk.get(p_key), config.minimum_p)),
        criterion(f"{passk['metric']} relative gain vs {against}", gain,
                  f"> {config.strong_passk_gain}", above(gain, config.strong_passk_gain)),
        criterion("judge win rate vs LoRA" + ("" if judge else " (judge off: not measured)"),
                  win_rate, f"> {config.strong_judge_win_rate}",
                  above(win_rate, config.strong_judge_win_rate))]
    minimum_met = all(c["met"] is True for c in minimum)
    return {"minimum": {"met": minimum_met, "criteria": minimum},
            "strong": {"met": minimum_met and all(c["met"] is True for c in strong),
                       "criteria": strong}}


def compare_domain(scores_dir: Path | list[Path], systems: list[str], seeds: list[int],
                   table: dict[str, tuple[str, bool, str]], judge: dict | None,
                   config: CompareConfig, primary: PrimaryHypotheses) -> dict:
    for system in [config.reference, *config.against, config.lora_system,
                   *([config.matched_system] if config.matched_system else [])]:
        require(system in systems, "compare", f"names system {system!r}, which is not in "
                f"'systems' ({', '.join(systems)})")
    loaded = {system: load_scores(scores_dir, system, seeds) for system in systems}
    prompts = sorted(loaded[config.reference][0])
    for system, per_seed in loaded.items():
        for seed, rows in zip(seeds, per_seed, strict=True):
            if sorted(rows) != prompts:
                raise UserError(f"{scores_path(scores_dir, system, seed)}: holds other "
                                f"prompts than {config.reference} seed {seeds[0]}")
    summary = {system: {metric: summarise(per_seed, prompts, metric, config)
                        for metric in table} for system, per_seed in loaded.items()}
    values = {system: {metric: seed_averaged(per_seed, prompts, metric) for metric in table}
              for system, per_seed in loaded.items()}
    superiority = {(primary.diversity, config.lora_system),
                   (primary.passk, config.matched_system or config.lora_system)}
    comparisons = []
    for metric, (_, higher_is_better, _) in table.items():
        for other in config.against:
            first = (metric, other) in superiority
            comparisons.append({"metric": metric, "a": config.reference, "b": other,
                                "family": "primary" if first else "exploratory",
                                **compare_pair(values[config.reference][metric],
                                               values[other][metric], higher_is_better,
                                               config)})
    family = primary_analysis(values[config.reference], values[config.lora_system], table,
                              primary, config, values.get(config.matched_system or ""))
    for name in ("primary", "exploratory"):
        correct([c for c in comparisons if c["family"] == name])
    for c in comparisons:  # Wilcoxon: corrected over the whole primary family
        if c["family"] == "primary" and "wilcoxon_p" in c:
            h = next(h for h in family if h["metric"] == c["metric"] and h["test"] ==
                     "superiority" and h["against"] == c["b"])
            c.update({f"wilcoxon_p_{name}": h[f"p_{name}"] for name in CORRECTIONS})
    return {
        "seeds": seeds, "n_prompts": len(prompts), "reference": config.reference,
        "lora_system": config.lora_system, "matched_system": config.matched_system,
        "correction": config.correction,
        "alpha": config.minimum_p,
        "metrics": {m: {"group": g, "higher_is_better": h, "label": label}
                    for m, (g, h, label) in table.items()},
        "systems": summary, "primary": {"hypotheses": asdict(primary), "family": family},
        "comparisons": comparisons, "judge": judge, "verdict": verdict(family, judge, config),
    }


def headline(result: dict, family: str = "p_holm") -> dict:
    """The few numbers `dvc metrics show/diff` print, with the same keys in every domain and
    study so that they line up as one readable table (a row per domain): the primary
    family's diversity and pass@k hypotheses (reference minus comparator, and the corrected
    p), pass@1's difference where it is a quality hypothesis, the p of all quality
    hypotheses at once (the largest: each must hold), and the verdict. Everything else, and
    which metric and comparator each number is, is in comparison.json and Table 1."""
    out: dict = {}
    hypotheses = result["primary"]["family"]
    for h in hypotheses:
        if h["role"] in ("diversity", "passk"):
            name = "pass@k" if h["role"] == "passk" else "diversity"
            out[name], out[f"{name}_p"] = h.get("mean_difference"), h.get(family)
        elif h["metric"] == "pass@1":
            out["pass@1"] = h.get("mean_difference")
    quality = [h.get(family) for h in hypotheses if h["role"] == "quality"]
    if quality:
        out["quality_p"] = None if None in quality else max(quality)
    return out | {level: result["verdict"][level]["met"] for level in ("minimum", "strong")}


def primary_hypotheses(params: dict, domain: str, table: dict) -> PrimaryHypotheses:
    """The domain's pre-registered primary hypotheses (`<domain>.primary`), every metric of
    them one the domain computes."""
    key = f"{domain}.primary"
    require(isinstance(params.get(domain), dict) and "primary" in params[domain], key,
            "is missing: declare the domain's primary hypotheses (diversity, passk, quality, "
            "margin) before running it")
    primary = load_section(PrimaryHypotheses, params, key)
    for name, metric in [("diversity", primary.diversity), ("passk", primary.passk)] + [
            ("quality", m) for m in primary.quality]:
        require(metric in table, f"{key}.{name}", f"names {metric!r}, which domain "
                f"{domain} does not compute (it computes: {', '.join(table)})")
    return primary


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=stage_help(__doc__, (CompareConfig, "compare")),
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--domain", required=True)
    parser.add_argument("--scores", required=True, nargs="+", type=Path,
                        help="directory of per-prompt scores: <system>/seed<S>.jsonl; with "
                        "several, each system's from the first that holds it")
    parser.add_argument("--judge", help="the judge stage's metrics JSON (none: the judge's "
                        "criterion is not measured)")
    parser.add_argument("--reference", help="the system under test, instead of "
                        "compare.reference (a study with two per domain: studies/confirmation)")
    parser.add_argument("--matched", help="instead of compare.matched_system")
    parser.add_argument("--against", help="comma-separated, instead of compare.against")
    parser.add_argument("--split", default="dev", choices=("dev", "confirmation"),
                        help="the split the scores answer (what the comparison says)")
    parser.add_argument("--out", required=True, help="comparison JSON to write (everything)")
    parser.add_argument("--summary", required=True,
                        help="headline metrics JSON to write (for dvc metrics show/diff)")
    args = parser.parse_args(argv)
    params = read_params()
    overrides = {key: value for key, value in (
        ("reference", args.reference), ("matched_system", args.matched),
        ("against", args.against.split(",") if args.against else None)) if value is not None}
    config = load_section(CompareConfig, params, "compare")
    if overrides:
        config = replace(config, **overrides)
        config.check("compare")
    seeds, systems = listed(params, "seeds"), listed(params, "systems")
    ks = load_section(EvaluateConfig, params, "evaluate", only=("ks",)).ks
    domain = domain_class(args.domain)
    table = metric_table(domain.quality_metrics, domain.domain_metrics, ks)
    primary = primary_hypotheses(params, args.domain, table)
    judge = None
    if args.judge is not None:
        try:
            judge = json.loads(Path(args.judge).read_text())
        except (OSError, json.JSONDecodeError) as err:
            raise UserError(f"{args.judge}: cannot read the judge's metrics ({err})") from None
        judge = judge if judge.get("enabled") else None
    result = {"domain": args.domain, "split": args.split,
              "precision": precisions(args.scores, systems, seeds),
              **compare_domain(args.scores, systems, seeds, table, judge, config,
                               primary)}

    from polychromic import tracking

    read = {"compare": asdict(config), "seeds": seeds} | tracking.declared(
        params, [f"{args.domain}.primary", "systems"])
    with tracking.mlflow_run("compare", args.domain, config.reference, read):
        tracking.log_metrics({f"{c['b']}.{c['metric']}.{key}": c[key]
                              for c in result["comparisons"]
                              for key in ("mean_difference", "cohens_dz", "wilcoxon_p",
                                          f"wilcoxon_p_{config.correction}", "mann_whitney_p")
                              if c.get(key) is not None}
                             | {f"verdict.{level}": float(result["verdict"][level]["met"])
                                for level in ("minimum", "strong")})
    write_json(args.out, result)
    write_json(args.summary, headline(result, f"p_{config.correction}"))
    main_result = result["primary"]["family"][0]
    print(f"{args.domain}: {primary.diversity} {config.reference} - {config.lora_system} "
          f"= {main_result.get('mean_difference')}, Wilcoxon p = {main_result.get('p')}"
          f" ({config.correction}, primary family: "
          f"{main_result.get(f'p_{config.correction}')}); minimum criteria met: "
          f"{result['verdict']['minimum']['met']}, strong: "
          f"{result['verdict']['strong']['met']} -> {args.out}")


if __name__ == "__main__":
    run_main(main)
