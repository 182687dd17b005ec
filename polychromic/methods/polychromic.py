"""Method `polychromic`: LoRA cross-entropy plus the score-function diversity term of
`objective.py`; its configuration (`params.yaml` section `polychromic`) beside its Trainer.

The sampling, the log-probabilities and the gradient bookkeeping are every sampled term's
(`sampled_term.py`): the samples are drawn by default with the evaluation's settings, the
distribution whose diversity is measured. Here the set is scored with the chosen diversity
and each sample's advantage is its leave-one-out contribution to it (`objective: diversity`)
or Hamid et al.'s set objective's (`objective: set`: mean reward x diversity over subsets,
the reward from the domain's checker). `polychromic signal` separates the term's mean
gradient from its noise.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from polychromic import metrics
from polychromic.config import require
from polychromic.methods import Method, register
from polychromic.modeling import prompt_text
from polychromic.objective import Diversity, leave_one_out_advantages, set_advantages
from polychromic.sampled_term import SampledTermConfig, SampledTermTrainer

METRICS = ("semantic", "bleu", "distinct")
OBJECTIVES = ("diversity", "set")


@dataclass
class PolychromicConfig(SampledTermConfig):
    diversity_weight: float = field(default=0.3, metadata={"help": "λ, weight of the diversity "
                                                           "term (0: plain LoRA)"})
    diversity_metric: str = field(default="semantic", metadata={"help": ", ".join(METRICS)})
    objective: str = field(default="diversity", metadata={
        "help": "'diversity': leave-one-out advantages of D; 'set': Hamid et al.'s "
                "mean reward x diversity over subsets"})
    set_size: int = field(default=2, metadata={"help": "subset size of the set objective"})
    distinct_n: int = field(default=2, metadata={"help": "n of the distinct metric"})
    embedding_model: str = field(default="embedded:all-minilm-l6-v2",
                                 metadata={"help": "sentence-transformers model (semantic, set)"})

    @property
    def term_weight(self) -> float:
        return self.diversity_weight

    def check(self, key: str) -> None:
        require(self.diversity_weight >= 0, f"{key}.diversity_weight", "must be >= 0")
        super().check(key)
        require(self.diversity_metric in METRICS, f"{key}.diversity_metric",
                f"must be one of {METRICS}")
        require(self.objective in OBJECTIVES, f"{key}.objective", f"must be one of {OBJECTIVES}")
        if self.objective == "set":  # one subset of N has advantage f(S) - mean f = 0
            require(2 <= self.set_size < self.n_generations, f"{key}.set_size",
                    "must be in [2, n_generations - 1] (set_size = n_generations leaves one "
                    "subset and zero gradient)")
        require(self.distinct_n >= 1, f"{key}.distinct_n", "must be >= 1")


def set_diversity(metric: str, texts: list[str], vectors: np.ndarray | None,
                  distinct_n: int) -> Diversity:
    """D over subsets of `texts`. A subset with nothing to compare (one sample, no n-gram)
    has diversity 0 here: as a training reward, not as a reported metric."""
    def diversity(indices) -> float:
        chosen = [texts[i] for i in indices]
        if metric == "semantic":
            value = metrics.semantic_diversity(vectors[list(indices)])
        elif metric == "bleu":
            bleu = metrics.self_bleu(chosen)
            value = None if bleu is None else 1.0 - bleu
        else:
            value = metrics.distinct_n(chosen, distinct_n)
        return 0.0 if value is None else value
    return diversity


class PolychromicTrainer(SampledTermTrainer):
    def __init__(self, *args, embedder=None, **kwargs):
        """`embedder`: the sentence encoder of the semantic diversity (None for the others)."""
        super().__init__(*args, **kwargs)
        self.embedder = embedder
        if self.term.objective == "set" and (self.checker is None or not self.train_records):
            raise ValueError("the set objective needs the domain's checker and the records")

    @property
    def polychromic(self) -> PolychromicConfig:
        return self.term

    def group_diversity(self, group: list[str]) -> Diversity:
        config = self.term
        vectors = self.embedder(group) if config.diversity_metric == "semantic" else None
        return set_diversity(config.diversity_metric, group, vectors, config.distinct_n)

    def group_advantages(self, groups: list[list[str]],
                         record_index=None) -> tuple[list[np.ndarray], list[float]]:
        config = self.term
        n = config.n_generations
        rewards = None
        if config.objective == "set":
            records = self.records_of(record_index, len(groups))
            rewards = self.checker.rewards(list(zip(records, groups, strict=True)))
        advantages, scores = [], []
        for p, group in enumerate(groups):
            diversity = self.group_diversity(group)
            scores.append(diversity(range(n)))
            if config.objective == "diversity":
                advantages.append(leave_one_out_advantages(diversity, n))
            else:
                advantages.append(set_advantages(diversity, rewards[p], config.set_size))
        return advantages, scores

    def eval_scores(self, groups: list[list[str]]) -> list[float]:
        return [self.group_diversity(group)(range(len(group))) for group in groups]


def trainer_options(config: PolychromicConfig, params: dict, tokenizer, domain, train: list,
                    val: list) -> dict:
    """The Trainer's keyword arguments: its config, the embedder, the domain's checker (the
    set objective's reward), sampling settings and stop strings, the train records (batches
    carry `record_index`) and the eval/diversity prompts."""
    from polychromic.embedding import shared_embedder
    from polychromic.runtime import runtime_config

    embedder = None
    if config.diversity_metric == "semantic":
        embedder = shared_embedder(config.embedding_model, "polychromic.embedding_model",
                                   runtime_config(params).metrics_device())
    eval_prompts = [(record["prompt"], prompt_text(tokenizer, domain.messages(record),
                                                   domain.assistant_prefix(record)))
                    for record in val[:config.eval_prompts]]
    return {"term": config, "tokenizer": tokenizer, "embedder": embedder,
            "checker": domain.checker(val) if config.objective == "set" else None,
            "records": train, "stop": domain.stop, "sampling": domain.sampling,
            "eval_prompts": eval_prompts}


METHOD = register(Method(name="polychromic", trainer_class=lambda: PolychromicTrainer,
                         config=PolychromicConfig, options=trainer_options,
                         batch_fields=("record_index",)))
