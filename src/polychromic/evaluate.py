"""Stage `evaluate`: one system's generations -> metrics JSON and per-prompt scores.

Diversity within each prompt's n samples (Self-BLEU, Distinct-1/2, semantic diversity),
quality of the first sample against the human replies (ROUGE-L), and pass@k (Chen et al.'s
unbiased estimator) under the domain's checker.

Checker `semantic` (default): a sample passes if it is well-formed (the domain's heuristic
checker) AND its cosine similarity to the closest human reply is at least a threshold. The
threshold is calibrated on the val split, never on test: it is the `null_quantile` quantile
of the similarity between human replies to *different* prompts, i.e. a sample passes when it
is closer to the reply a person gave than that share of unrelated human replies are.
Checker `heuristic`: the domain's heuristic alone (the design document's; it saturates).
"""

from __future__ import annotations

import argparse
from dataclasses import asdict, dataclass, field

import numpy as np

from polychromic import metrics
from polychromic.config import UserError, help_text, load_section, read_params, require, run_main
from polychromic.domains import get_domain
from polychromic.embedding import Embedder
from polychromic.io import read_jsonl, write_json, write_jsonl

CHECKERS = ("semantic", "heuristic")
GENERATION_FIELDS = {"tweet_id": str, "prompt": str, "references": list, "samples": list}


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

    def check(self, key: str) -> None:
        require(len(self.ks) > 0 and all(k >= 1 for k in self.ks), f"{key}.ks",
                "must be a non-empty list of k >= 1")
        require(self.checker in CHECKERS, f"{key}.checker", f"must be one of {CHECKERS}")
        require(0 < self.null_quantile < 1, f"{key}.null_quantile", "must be in (0, 1)")
        require(self.calibration_pairs > 0, f"{key}.calibration_pairs", "must be > 0")
        require(self.self_bleu_order >= 1, f"{key}.self_bleu_order", "must be >= 1")


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
                 checks: list[bool], config: EvaluateConfig) -> dict:
    samples = row["samples"]
    passed = sum(checks)
    return {
        "tweet_id": row["tweet_id"],
        "n": len(samples),
        "passed": passed,
        **{f"pass@{k}": metrics.pass_at_k(len(samples), passed, k) for k in config.ks},
        "self_bleu": metrics.self_bleu(samples, config.self_bleu_order),
        "distinct_1": metrics.distinct_n(samples, 1),
        "distinct_2": metrics.distinct_n(samples, 2),
        "semantic": metrics.semantic_diversity(sample_vectors),
        "rouge_l": metrics.rouge_l(samples[0], row["references"]),
        "reference_similarity": float(np.max(sample_vectors[0] @ reference_vectors.T)),
    }


def evaluate(rows: list[dict], val: list[dict], domain_name: str, config: EvaluateConfig,
             embed: Embedder) -> tuple[dict, list[dict]]:
    domain = get_domain(domain_name)
    threshold = calibrate_threshold(val, embed, config) if config.checker == "semantic" else None
    scores = []
    for row in rows:
        sample_vectors = embed(row["samples"])
        reference_vectors = embed(row["references"])
        closest = (sample_vectors @ reference_vectors.T).max(axis=1)
        checks = [domain.heuristic_check(row["prompt"], s) and
                  (threshold is None or float(sim) >= threshold)
                  for s, sim in zip(row["samples"], closest, strict=True)]
        scores.append(score_prompt(row, sample_vectors, reference_vectors, checks, config))

    def mean(key: str):
        value, undefined = metrics.mean_defined([s[key] for s in scores])
        if undefined:
            summary["undefined"][key] = undefined
        return value

    summary = {"n_prompts": len(scores), "n_samples": scores[0]["n"], "undefined": {}}
    summary["diversity"] = {"self_bleu": mean("self_bleu"), "distinct_1": mean("distinct_1"),
                            "distinct_2": mean("distinct_2"), "semantic": mean("semantic")}
    summary["quality"] = {"rouge_l": mean("rouge_l"),
                          "reference_similarity": mean("reference_similarity")}
    summary["passk"] = {f"pass@{k}": mean(f"pass@{k}") for k in config.ks}
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
        if len(samples) < max(ks):
            raise UserError(f"{path}:{number}: {len(samples)} samples but evaluate.ks asks for "
                            f"k={max(ks)} (raise params.yaml 'generate.n')")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__ + "\nparams.yaml evaluate:\n"
                                     + help_text(EvaluateConfig),
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--domain", required=True)
    parser.add_argument("--system", required=True)
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
    summary, scores = evaluate(rows, val, args.domain, config, embedder)
    summary = {"domain": args.domain, "system": args.system, **summary}
    with tracking.mlflow_run("evaluate", args.domain, args.system, {"evaluate": asdict(config)}):
        tracking.log_metrics({k: v for k, v in summary.items() if k != "checker"}
                             | {"checker.pass_rate": summary["checker"]["pass_rate"]})
    write_jsonl(args.scores, scores)
    write_json(args.metrics, summary)
    print(f"{args.domain}/{args.system}: passk {summary['passk']}, diversity "
          f"{summary['diversity']} -> {args.metrics}")


if __name__ == "__main__":
    run_main(main)
