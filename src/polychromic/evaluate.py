"""Stage `evaluate`: one system's generations (one seed) -> metrics JSON and per-prompt scores.

Per prompt, then averaged over prompts (`compare` adds CIs and tests):
- diversity within the prompt's n samples: Self-BLEU (nltk `sentence_bleu` of each sample
  against the other n-1, n-grams up to `self_bleu_order`, smoothing method1; lower = more
  diverse), Distinct-1/2/3 (unique n-grams / all n-grams, pooled over the n samples), semantic
  diversity (mean pairwise 1 - cosine of sentence embeddings);
- quality of the first sample against the human replies (best reference): ROUGE-1/2/L F1
  (rouge-score, stemmed) and BERTScore F1 (bert-score with a local model directory and
  `bertscore_layers`; UNRESCALED, see metrics.bertscore_f1), and the perplexity of the human
  replies under the system (from the NLL the generate stage recorded; lower is better): per
  prompt its log (nats per token), over prompts the mean log and its exp (geometric mean);
- pass@k (Chen et al.'s unbiased estimator) under the checker, and the domain's own metric:
  the share of samples its heuristic checker calls well-formed.

Checker `semantic` (default): a sample passes if it is well-formed (the domain's heuristic
checker) AND its cosine similarity to the closest human reply is at least a threshold. The
threshold is calibrated on the val split, never on test: it is the `null_quantile` quantile
of the similarity between human replies to *different* prompts, i.e. a sample passes when it
is closer to the reply a person gave than that share of unrelated human replies are.
Checker `heuristic`: the domain's heuristic alone (the design document's; it saturates).

Undefined values (e.g. Distinct-3 of samples without trigrams) are null per prompt and
counted under "undefined", never averaged in as 0.
"""

from __future__ import annotations

import argparse
from dataclasses import asdict, dataclass, field

import numpy as np

from polychromic import metrics
from polychromic.config import UserError, help_text, load_section, read_params, require, run_main
from polychromic.domains import get_domain
from polychromic.embedding import Embedder, model_directory
from polychromic.io import read_jsonl, write_json, write_jsonl

CHECKERS = ("semantic", "heuristic")
GENERATION_FIELDS = {"tweet_id": str, "prompt": str, "references": list, "samples": list,
                     "reference_nll": list, "reference_tokens": list}

# name -> (group, higher is better, label): what `compare` tests and `report` tabulates, in
# table order. pass@k entries are added from evaluate.ks.
METRICS = {
    "self_bleu": ("diversity", False, "Self-BLEU"),
    "distinct_1": ("diversity", True, "Distinct-1"),
    "distinct_2": ("diversity", True, "Distinct-2"),
    "distinct_3": ("diversity", True, "Distinct-3"),
    "semantic": ("diversity", True, "Semantic div."),
    "rouge_1": ("quality", True, "ROUGE-1"),
    "rouge_2": ("quality", True, "ROUGE-2"),
    "rouge_l": ("quality", True, "ROUGE-L"),
    "bertscore_f1": ("quality", True, "BERTScore F1"),
    "log_perplexity": ("quality", False, "Ref. log-PPL"),
    "well_formed": ("domain", True, "Well-formed"),
}


def metric_table(ks: list[int]) -> dict[str, tuple[str, bool, str]]:
    return METRICS | {f"pass@{k}": ("passk", True, f"pass@{k}") for k in ks}


@dataclass
class EvaluateConfig:
    ks: list[int] = field(default_factory=lambda: [1, 3, 5, 10],
                          metadata={"help": "k of pass@k (each <= generate.n)"})
    checker: str = field(default="semantic", metadata={"help": "one of " + ", ".join(CHECKERS)})
    null_quantile: float = field(
        default=0.9, metadata={"help": "semantic checker: quantile of unrelated-reply "
                               "similarity (on val) used as the pass threshold"})
    calibration_pairs: int = field(default=5000, metadata={"help": "unrelated val pairs drawn"})
    self_bleu_order: int = field(default=4, metadata={"help": "max n-gram order of Self-BLEU"})
    embedding_model: str = field(default="embedded:all-minilm-l6-v2",
                                 metadata={"help": "sentence-transformers model: embedded "
                                           "name or a local path"})
    seed: int = field(default=42, metadata={"help": "seed of the calibration pairs"})
    bertscore_model: str = field(default="embedded:all-minilm-l6-v2",
                                 metadata={"help": "BERTScore encoder: embedded name or a "
                                           "local model directory (offline)"})
    bertscore_layers: int = field(default=6, metadata={"help": "BERTScore: layer whose "
                                                       "embeddings are matched (num_layers)"})

    def check(self, key: str) -> None:
        require(len(self.ks) > 0 and all(k >= 1 for k in self.ks), f"{key}.ks",
                "must be a non-empty list of k >= 1")
        require(self.checker in CHECKERS, f"{key}.checker", f"must be one of {CHECKERS}")
        require(0 < self.null_quantile < 1, f"{key}.null_quantile", "must be in (0, 1)")
        require(self.calibration_pairs > 0, f"{key}.calibration_pairs", "must be > 0")
        require(self.self_bleu_order >= 1, f"{key}.self_bleu_order", "must be >= 1")
        require(self.bertscore_layers >= 1, f"{key}.bertscore_layers", "must be >= 1")


def calibrate_threshold(val: list[dict], embed: Embedder, config: EvaluateConfig) -> float:
    """The null_quantile of cosine similarity between human replies to different prompts."""
    rng = np.random.default_rng(config.seed)
    replies = [r["reply"] for r in val]
    prompt_of = [r["tweet_id"] for r in val]
    vectors = embed(replies)
    i = rng.integers(0, len(val), config.calibration_pairs)
    j = rng.integers(0, len(val), config.calibration_pairs)
    unrelated = np.array([prompt_of[a] != prompt_of[b] for a, b in zip(i, j, strict=True)])
    if unrelated.sum() < 10:
        raise UserError("val split too small to calibrate the checker (need replies to "
                        "several prompts)")
    similarity = np.sum(vectors[i] * vectors[j], axis=1)[unrelated]
    return float(np.quantile(similarity, config.null_quantile))


def score_prompt(row: dict, sample_vectors: np.ndarray, reference_vectors: np.ndarray,
                 well_formed: list[bool], threshold: float | None, bertscore: float,
                 config: EvaluateConfig) -> dict:
    samples = row["samples"]
    closest = (sample_vectors @ reference_vectors.T).max(axis=1)
    passed = sum(ok and (threshold is None or float(similarity) >= threshold)
                 for ok, similarity in zip(well_formed, closest, strict=True))
    return {
        "tweet_id": row["tweet_id"],
        "n": len(samples),
        "passed": passed,
        **{f"pass@{k}": metrics.pass_at_k(len(samples), passed, k) for k in config.ks},
        "self_bleu": metrics.self_bleu(samples, config.self_bleu_order),
        **{f"distinct_{n}": metrics.distinct_n(samples, n) for n in (1, 2, 3)},
        "semantic": metrics.semantic_diversity(sample_vectors),
        **metrics.rouge(samples[0], row["references"]),
        "bertscore_f1": bertscore,
        "log_perplexity": metrics.log_perplexity(row["reference_nll"],
                                                 row["reference_tokens"]),
        "well_formed": sum(well_formed) / len(samples),
        "reference_similarity": float(closest[0]),
    }


def evaluate(rows: list[dict], val: list[dict], domain_name: str, config: EvaluateConfig,
             embed: Embedder, bertscore_dir: str) -> tuple[dict, list[dict]]:
    domain = get_domain(domain_name)
    threshold = calibrate_threshold(val, embed, config) if config.checker == "semantic" else None
    # One embedding call for every text: per-prompt calls leave the encoder's batches tiny.
    texts = [t for row in rows for t in row["samples"] + row["references"]]
    vectors, offset = embed(texts), 0
    bertscores = metrics.bertscore_f1([row["samples"][0] for row in rows],
                                      [row["references"] for row in rows],
                                      bertscore_dir, config.bertscore_layers)
    scores = []
    for row, bertscore in zip(rows, bertscores, strict=True):
        n_samples, n_references = len(row["samples"]), len(row["references"])
        sample_vectors = vectors[offset:offset + n_samples]
        reference_vectors = vectors[offset + n_samples:offset + n_samples + n_references]
        offset += n_samples + n_references
        well_formed = [domain.heuristic_check(row["prompt"], s) for s in row["samples"]]
        scores.append(score_prompt(row, sample_vectors, reference_vectors, well_formed,
                                   threshold, bertscore, config))

    summary = {"n_prompts": len(scores), "n_samples": scores[0]["n"], "undefined": {}}
    for name, (group, _, _) in metric_table(config.ks).items():
        value, undefined = metrics.mean_defined([s[name] for s in scores])
        summary.setdefault(group, {})[name] = value
        if undefined:
            summary["undefined"][name] = undefined
    # exp of the mean log-perplexity: the geometric mean of the prompts' perplexities
    log_ppl = summary["quality"]["log_perplexity"]
    summary["quality"]["perplexity"] = None if log_ppl is None else float(np.exp(log_ppl))
    summary["quality"]["reference_similarity"] = float(
        np.mean([s["reference_similarity"] for s in scores]))
    summary["checker"] = {"name": config.checker, "threshold": threshold,
                          "pass_rate": sum(s["passed"] for s in scores)
                          / sum(s["n"] for s in scores)}
    return summary, scores


def check_generations(path: str, rows: list[dict], ks: list[int]) -> None:
    for number, row in enumerate(rows, start=1):
        samples, references = row["samples"], row["references"]
        if not samples or not all(isinstance(s, str) for s in samples):
            raise UserError(f"{path}:{number}: 'samples' must be a non-empty list of strings")
        if not references or not all(isinstance(r, str) and r.strip() for r in references):
            raise UserError(f"{path}:{number}: 'references' must be non-empty strings")
        if not len(row["reference_nll"]) == len(row["reference_tokens"]) == len(references):
            raise UserError(f"{path}:{number}: 'reference_nll' and 'reference_tokens' must "
                            "have one entry per reference")
        if len(samples) < max(ks):
            raise UserError(f"{path}:{number}: {len(samples)} samples but evaluate.ks asks for "
                            f"k={max(ks)} (raise params.yaml 'generate.n')")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__ + "\nparams.yaml evaluate:\n"
                                     + help_text(EvaluateConfig),
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--domain", required=True)
    parser.add_argument("--system", required=True)
    parser.add_argument("--seed", type=int, required=True, help="the training/sampling seed")
    parser.add_argument("--generations", required=True, help="generations JSONL")
    parser.add_argument("--val", required=True, help="val split JSONL (checker calibration)")
    parser.add_argument("--metrics", required=True, help="metrics JSON to write")
    parser.add_argument("--scores", required=True, help="per-prompt scores JSONL to write")
    args = parser.parse_args(argv)
    params = read_params()
    config = load_section(EvaluateConfig, params, "evaluate")
    known = list(params.get("prompting") or []) + list(params.get("methods") or [])
    require(args.system in known, "systems", f"names unknown system {args.system!r} "
            f"(known: the 'prompting' and 'methods' lists: {', '.join(known)})")
    get_domain(args.domain)
    rows = read_jsonl(args.generations, GENERATION_FIELDS)
    check_generations(args.generations, rows, config.ks)
    val = read_jsonl(args.val, {"tweet_id": str, "reply": str})

    from polychromic import tracking

    embedder = Embedder(config.embedding_model, "evaluate.embedding_model")
    bertscore_dir = model_directory(config.bertscore_model, "evaluate.bertscore_model")
    summary, scores = evaluate(rows, val, args.domain, config, embedder, bertscore_dir)
    summary = {"domain": args.domain, "system": args.system, "seed": args.seed, **summary}
    with tracking.mlflow_run("evaluate", args.domain, args.system, {"evaluate": asdict(config)},
                             seed=args.seed):
        tracking.log_metrics({k: v for k, v in summary.items()
                              if k not in ("checker", "definitions", "seed")}
                             | {"checker.pass_rate": summary["checker"]["pass_rate"]})
    write_jsonl(args.scores, scores)
    write_json(args.metrics, summary)
    print(f"{args.domain}/{args.system}: passk {summary['passk']}, diversity "
          f"{summary['diversity']} -> {args.metrics}")


if __name__ == "__main__":
    run_main(main)
