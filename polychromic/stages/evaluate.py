"""Stage `evaluate`: one system's generations (one seed) -> metrics JSON and per-prompt scores.

One entry point for every domain. Per prompt, then averaged over prompts (`compare` adds CIs
and tests):
- diversity within the prompt's n samples: Self-BLEU (nltk `sentence_bleu` of each sample
  against the other n-1, n-grams up to `self_bleu_order`, smoothing method1; lower = more
  diverse), Distinct-1/2/3 (unique n-grams / all n-grams, pooled over the n samples), semantic
  diversity (mean pairwise 1 - cosine of sentence embeddings) under the polychromic reward's
  encoder (`semantic`) and under one that no objective sees (`semantic_independent`), and
  the domain checker's equivalence classes: how many distinct answers among the n samples
  (`distinct_classes`, NoveltyBench's distinct_k) and how many of them pass
  (`correct_classes`);
- quality, those of the domain's `quality_metrics`: ROUGE-1/2/L F1 (rouge-score, stemmed) and
  BERTScore F1 (bert-score with a local model directory and `bertscore_layers`; UNRESCALED)
  of the first sample against the best reference, and the perplexity of the reference
  outputs under the system (from the NLL the generate stage recorded; lower is better): per
  prompt its log (nats per token), over prompts the mean log and its exp (geometric mean);
- pass@k (Chen et al.'s unbiased estimator) under the domain's checker, and the domain's own
  per-sample metrics (e.g. the share of well-formed replies, of programs that parse).

Undefined values (e.g. Distinct-3 of samples without trigrams) are null per prompt and
counted under "undefined", never averaged in as 0.

--generations may be a folder (a frontier's points, `generate --frontier`): each of its
JSONL files is scored in turn with the encoders loaded once, --metrics and --scores then
being folders that get <name>.json and <name>.jsonl.
"""

from __future__ import annotations

import argparse
from dataclasses import asdict
from pathlib import Path

import numpy as np

from polychromic import metrics
from polychromic.config import UserError, load_section, read_params, require, run_main, stage_help
from polychromic.domains import RECORD_FIELDS, Checker, Domain, Record, load_domain
from polychromic.embedding import model_directory, shared_embedder
from polychromic.io import read_jsonl, write_json, write_jsonl
from polychromic.protocol import SPLITS_ANSWERED, split_path
from polychromic.runtime import runtime_config
from polychromic.settings import EvaluateConfig, listed, matched_systems, system_method

GENERATION_FIELDS = {"id": str, "prompt": str, "references": list, "samples": list,
                     "reference_nll": list, "reference_tokens": list, "precision": str}
SAMPLING_POINT = ("temperature", "adapter_scale")  # where a frontier point samples



def score_prompt(row: dict, sample_vectors: np.ndarray, independent_vectors: np.ndarray,
                 verdicts: list, classes: list[str], quality: tuple,
                 bertscore: float | None, config: EvaluateConfig) -> dict:
    samples, n = row["samples"], len(row["samples"])
    passed = sum(v.passed for v in verdicts)
    scores = {
        "id": row["id"], "n": n, "passed": passed,
        **{f"pass@{k}": metrics.pass_at_k(n, passed, k) for k in config.ks},
        "self_bleu": metrics.self_bleu(samples, config.self_bleu_order),
        **{f"distinct_{order}": metrics.distinct_n(samples, order) for order in (1, 2, 3)},
        "semantic": metrics.semantic_diversity(sample_vectors),
        "semantic_independent": metrics.semantic_diversity(independent_vectors),
        "distinct_classes": metrics.distinct_classes(classes),
        "correct_classes": metrics.correct_classes(classes, [v.passed for v in verdicts]),
    }
    if {"rouge_1", "rouge_2", "rouge_l"} & set(quality):
        rouge = metrics.rouge(samples[0], row["references"])
        scores.update({name: value for name, value in rouge.items() if name in quality})
    if "bertscore_f1" in quality:
        scores["bertscore_f1"] = bertscore
    if "log_perplexity" in quality:
        scores["log_perplexity"] = metrics.log_perplexity(row["reference_nll"],
                                                          row["reference_tokens"])
    for name in verdicts[0].values:
        scores[name] = float(np.mean([v.values[name] for v in verdicts]))
    return scores


def evaluate(rows: list[dict], records: dict[str, Record], domain: Domain, checker: Checker,
             config: EvaluateConfig, embed, bertscore_dir: str | None,
             bertscore_device: str = "cpu", embed_independent=None) -> tuple[dict, list[dict]]:
    """`embed`: the reward's encoder (`semantic`); `embed_independent`: evaluation's own
    (`semantic_independent`; None: `embed`, for tests)."""
    quality = domain.quality_metrics
    # One embedding call for every sample: per-prompt calls leave the encoder's batches tiny.
    texts = [s for row in rows for s in row["samples"]]
    vectors = embed(texts)
    independent = vectors if embed_independent is None else embed_independent(texts)
    bertscores = [None] * len(rows)
    if "bertscore_f1" in quality:
        bertscores = metrics.bertscore_f1([row["samples"][0] for row in rows],
                                          [row["references"] for row in rows],
                                          bertscore_dir, config.bertscore_layers,
                                          device=bertscore_device)
    items = [(records[row["id"]], row["samples"]) for row in rows]
    verdicts, classes = checker.verdicts(items), checker.classes(items)
    scores, offset = [], 0
    for row, bertscore, row_verdicts, row_classes in zip(rows, bertscores, verdicts, classes,
                                                         strict=True):
        n = len(row["samples"])
        scores.append(score_prompt(row, vectors[offset:offset + n],
                                   independent[offset:offset + n], row_verdicts, row_classes,
                                   quality, bertscore, config))
        offset += n

    summary = {"n_prompts": len(scores), "n_samples": scores[0]["n"], "undefined": {}}
    table = metrics.metric_table(quality, domain.domain_metrics, config.ks)
    for name, (group, _, _) in table.items():
        value, undefined = metrics.mean_defined([s[name] for s in scores])
        summary.setdefault(group, {})[name] = value
        if undefined:
            summary["undefined"][name] = undefined
    if "log_perplexity" in quality:  # exp of the mean log: the prompts' geometric mean
        log_ppl = summary["quality"]["log_perplexity"]
        summary["quality"]["perplexity"] = None if log_ppl is None else float(np.exp(log_ppl))
    summary["checker"] = {**checker.describe(), "pass_rate": sum(s["passed"] for s in scores)
                          / sum(s["n"] for s in scores)}
    return summary, scores


def check_generations(path: str, rows: list[dict], records: dict[str, Record],
                      ks: list[int]) -> str:
    """Checks each row; returns the precision the rows were computed in (one for all)."""
    for number, row in enumerate(rows, start=1):
        for key in ("precision", *SAMPLING_POINT):
            if row.get(key) != rows[0].get(key):
                raise UserError(f"{path}:{number}: {key} {row.get(key)!r} differs from line "
                                f"1's {rows[0].get(key)!r} (one run, one setting)")
        samples, references = row["samples"], row["references"]
        if not samples or not all(isinstance(s, str) for s in samples):
            raise UserError(f"{path}:{number}: 'samples' must be a non-empty list of strings")
        # a user's code problem may come without a reference solution: no references
        if not all(isinstance(r, str) and r.strip() for r in references):
            raise UserError(f"{path}:{number}: 'references' must be non-empty strings")
        if not len(row["reference_nll"]) == len(row["reference_tokens"]) == len(references):
            raise UserError(f"{path}:{number}: 'reference_nll' and 'reference_tokens' must "
                            "have one entry per reference")
        if len(samples) < max(ks):
            raise UserError(f"{path}:{number}: {len(samples)} samples but evaluate.ks asks for "
                            f"k={max(ks)} (raise params.yaml 'generate.n')")
        if row["id"] not in records:
            raise UserError(f"{path}:{number}: id {row['id']!r} is not in the prepared split "
                            "(rerun generate: dvc repro)")
    return rows[0]["precision"] if rows else ""


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=stage_help(__doc__, (EvaluateConfig, "evaluate")),
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--domain", required=True)
    parser.add_argument("--system", required=True)
    parser.add_argument("--seed", type=int, required=True, help="the training/sampling seed")
    parser.add_argument("--generations", required=True,
                        help="generations JSONL (or a folder of them)")
    parser.add_argument("--data", required=True, help="the domain's prepared splits directory "
                        "(the checker's records; val calibrates the replies checker)")
    parser.add_argument("--split", default="dev", choices=SPLITS_ANSWERED,
                        help="the split the generations answer")
    parser.add_argument("--unsealed", help="the confirmation records (stage unseal's file)")
    parser.add_argument("--metrics", required=True, help="metrics JSON to write (a folder for "
                        "a folder of generations)")
    parser.add_argument("--scores", required=True, help="per-prompt scores JSONL to write (a "
                        "folder for a folder of generations)")
    args = parser.parse_args(argv)
    params = read_params()
    config = load_section(EvaluateConfig, params, "evaluate")
    methods = listed(params, "methods")
    # <method>_matched: a method sampled at the temperature matched to the reference's
    # diversity; <method>_matched_<other>: matched to another method's (studies/confirmation)
    known = listed(params, "prompting") + methods + matched_systems(methods)
    require(args.system in known, "systems", f"names unknown system {args.system!r} "
            f"(known: the 'prompting' and 'methods' lists, <method>_matched and "
            f"<method>_matched_<method>: {', '.join(known)})")
    domain = load_domain(args.domain, params)
    records = {r["id"]: r for r in read_jsonl(split_path(args.data, args.split, args.unsealed),
                                              RECORD_FIELDS)}
    generations = Path(args.generations)
    if generations.is_dir():
        files = sorted(generations.glob("*.jsonl"))
        if not files:
            raise UserError(f"{generations}: a folder without generations (*.jsonl)")
        jobs = [(path, Path(args.metrics, f"{path.stem}.json"),
                 Path(args.scores, f"{path.stem}.jsonl")) for path in files]
    else:
        jobs = [(generations, Path(args.metrics), Path(args.scores))]
    checked = []
    for path, metrics_out, scores_out in jobs:  # every file checked before any is scored
        rows = read_jsonl(path, GENERATION_FIELDS)
        checked.append((rows, check_generations(path, rows, records, config.ks), metrics_out,
                        scores_out))
    val = read_jsonl(Path(args.data, "val.jsonl"), RECORD_FIELDS)

    from polychromic import tracking

    device = runtime_config(params, ("metric_device",)).metrics_device()  # it runs no LLM
    embed = shared_embedder(config.embedding_model, "evaluate.embedding_model", device)
    embed_independent = shared_embedder(config.independent_model,
                                        "evaluate.independent_model", device)
    bertscore_dir = (model_directory(config.bertscore_model, "evaluate.bertscore_model")
                     if "bertscore_f1" in domain.quality_metrics else None)
    trained = system_method(args.system) in methods
    results = []
    with domain.checker(val) as checker:  # built (and calibrated) once for every file
        scored = [evaluate(rows, records, domain, checker, config, embed, bertscore_dir,
                           device, embed_independent) for rows, *_ in checked]
    for (rows, precision, metrics_out, scores_out), (summary, scores) in zip(
            checked, scored, strict=True):
        summary = {"domain": args.domain, "system": args.system, "seed": args.seed,
                   "precision": precision,
                   "sampling": {key: rows[0].get(key) for key in SAMPLING_POINT}, **summary}
        scores = [{**row, "precision": precision} for row in scores]
        read = {"evaluate": asdict(config), "sampling": summary["sampling"]} | tracking.declared(
            params, ["runtime.metric_device", f"{args.domain}.checker",
                     f"{args.domain}.prompt"])
        with tracking.mlflow_run("evaluate", args.domain, args.system, read, seed=args.seed,
                                 method=args.system if trained else "", precision=precision):
            tracking.log_metrics({k: v for k, v in summary.items()
                                  if k not in ("checker", "seed", "sampling")}
                                 | {"checker.pass_rate": summary["checker"]["pass_rate"]})
        results.append((summary, scores, metrics_out, scores_out))
    for summary, scores, metrics_out, scores_out in results:
        write_jsonl(scores_out, scores, rounded=True)
        write_json(metrics_out, summary)
        print(f"{args.domain}/{args.system}: passk {summary['passk']}, diversity "
              f"{summary['diversity']} -> {metrics_out}")


if __name__ == "__main__":
    run_main(main)
