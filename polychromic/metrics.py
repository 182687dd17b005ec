"""Per-prompt metrics over one prompt's n samples. Pure functions, checked against closed
forms, hand-computed values and nltk in tests.

Undefined values (e.g. Distinct-2 of samples that hold no bigram) are None, never 0.0: the
evaluation reports how many prompts had an undefined value instead of averaging in a zero.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from itertools import combinations

import numpy as np

TOKEN = re.compile(r"\w+|[^\w\s]", re.UNICODE)


def tokenize(text: str) -> list[str]:
    """Lower-cased words and punctuation marks: the tokens of Distinct-n and Self-BLEU."""
    return TOKEN.findall(text.lower())


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k of Chen et al. 2021: 1 - C(n-c, k) / C(n, k), in a stable product form."""
    if not 0 <= c <= n or not 1 <= k <= n:
        raise ValueError(f"pass@k needs 0 <= c <= n and 1 <= k <= n, got n={n} c={c} k={k}")
    if n - c < k:
        return 1.0
    return float(1.0 - np.prod(1.0 - k / np.arange(n - c + 1, n + 1)))


def ngrams(tokens: Sequence[str], n: int) -> list[tuple[str, ...]]:
    return [tuple(tokens[i:i + n]) for i in range(len(tokens) - n + 1)]


def distinct_n(samples: Sequence[str], n: int) -> float | None:
    """Distinct n-grams across all samples / all n-grams across all samples (None if none)."""
    grams = [g for s in samples for g in ngrams(tokenize(s), n)]
    return len(set(grams)) / len(grams) if grams else None


def self_bleu(samples: Sequence[str], order: int = 4) -> float | None:
    """Mean sentence BLEU of each sample against all the others (nltk, smoothing method1).

    Empty samples are left out; None when fewer than two non-empty samples remain.
    """
    from nltk.translate.bleu_score import SmoothingFunction, sentence_bleu

    tokens = [t for t in (tokenize(s) for s in samples) if t]
    if len(tokens) < 2:
        return None
    smoothing = SmoothingFunction().method1
    weights = (1.0 / order,) * order
    scores = [sentence_bleu(tokens[:i] + tokens[i + 1:], hypothesis, weights=weights,
                            smoothing_function=smoothing)
              for i, hypothesis in enumerate(tokens)]
    return float(np.mean(scores))


def distinct_classes(labels: Sequence[str]) -> int:
    """How many equivalence classes a prompt's samples fall in (NoveltyBench's distinct_k,
    k = the samples)."""
    return len(set(labels))


def correct_classes(labels: Sequence[str], passed: Sequence[bool]) -> int:
    """How many classes hold a passing sample: the distinct correct answers, what pass@k can
    gain from."""
    return len({label for label, ok in zip(labels, passed, strict=True) if ok})


def semantic_diversity(embeddings: np.ndarray) -> float | None:
    """Mean over pairs of 1 - cosine similarity of the samples' embeddings."""
    if len(embeddings) < 2:
        return None
    unit = embeddings / np.linalg.norm(embeddings, axis=1, keepdims=True)
    similarity = unit @ unit.T
    pairs = [1.0 - similarity[i, j] for i, j in combinations(range(len(unit)), 2)]
    return float(np.mean(pairs))


ROUGE_TYPES = {"rouge_1": "rouge1", "rouge_2": "rouge2", "rouge_l": "rougeL"}


def rouge(sample: str, references: Sequence[str]) -> dict[str, float]:
    """ROUGE-1/2/L F1 (rouge-score, Porter-stemmed), each the best over the references."""
    from rouge_score import rouge_scorer

    scorer = rouge_scorer.RougeScorer(list(ROUGE_TYPES.values()), use_stemmer=True)
    scores = [scorer.score(reference, sample) for reference in references]
    return {name: max(s[kind].fmeasure for s in scores) for name, kind in ROUGE_TYPES.items()}


def bertscore_f1(candidates: Sequence[str], references: Sequence[Sequence[str]],
                 model_dir: str, num_layers: int, batch_size: int = 64,
                 device: str = "cpu") -> list[float]:
    """BERTScore F1 (bert-score) of each candidate against the best of its references, with a
    local model directory. Unrescaled: bert-score has no rescale baseline for a local path, so
    the scores keep the model's own offset (not comparable to published rescaled figures)."""
    from bert_score import score

    _, _, f1 = score(list(candidates), [list(r) for r in references], model_type=model_dir,
                     num_layers=num_layers, batch_size=batch_size, device=device)
    return f1.tolist()


def log_perplexity(nll_sums: Sequence[float], token_counts: Sequence[int]) -> float | None:
    """Total NLL / total tokens (nats per token) over a prompt's references, the log of their
    perplexity; None without tokens. Averaged over prompts in log space: a few odd references
    (typos, slang) reach perplexities of 10^6 and would decide an arithmetic mean of
    perplexities on their own."""
    tokens = sum(token_counts)
    return float(sum(nll_sums) / tokens) if tokens else None


def mean_defined(values: Sequence[float | None]) -> tuple[float | None, int]:
    """Mean of the defined values and how many were undefined."""
    defined = [v for v in values if v is not None]
    return (float(np.mean(defined)) if defined else None), len(values) - len(defined)


# What `evaluate` computes, `compare` tests and `report` tabulates, in table order:
# name -> (group, higher is better, label). A domain picks its quality metrics from QUALITY
# and adds its own per-sample metrics; pass@k entries come from evaluate.ks.
DIVERSITY = {
    "self_bleu": (False, "Self-BLEU"),
    "distinct_1": (True, "Distinct-1"),
    "distinct_2": (True, "Distinct-2"),
    "distinct_3": (True, "Distinct-3"),
    "semantic": (True, "Semantic div. (reward enc.)"),
    "semantic_independent": (True, "Semantic div. (indep. enc.)"),
    "distinct_classes": (True, "Distinct classes"),
    "correct_classes": (True, "Correct classes"),
}
QUALITY = {
    "rouge_1": (True, "ROUGE-1"),
    "rouge_2": (True, "ROUGE-2"),
    "rouge_l": (True, "ROUGE-L"),
    "bertscore_f1": (True, "BERTScore F1"),
    "log_perplexity": (False, "Ref. log-PPL"),
}


def metric_table(quality: Sequence[str], domain_metrics: dict[str, tuple[bool, str]],
                 ks: Sequence[int]) -> dict[str, tuple[str, bool, str]]:
    """The metrics of a domain whose meaningful quality metrics are `quality`."""
    unknown = [q for q in quality if q not in QUALITY]
    if unknown:
        raise ValueError(f"unknown quality metrics {unknown} (known: {', '.join(QUALITY)})")
    return ({name: ("diversity", *spec) for name, spec in DIVERSITY.items()}
            | {name: ("quality", *QUALITY[name]) for name in QUALITY if name in quality}
            | {name: ("domain", *spec) for name, spec in domain_metrics.items()}
            | {f"pass@{k}": ("passk", True, f"pass@{k}") for k in ks})
