"""Method `passk`: LoRA cross-entropy plus λ times a score-function term that optimises
pass@k itself (Pass@k Training, Chen et al. 2025; PKPO, Walder & Karkhanis 2025): from the
n samples of a prompt, each sample's advantage is its share in the unbiased estimate of
∇pass@k, (k/n)(mean over the k-subsets holding it of their best correctness - mean over
those without it), in closed form (`advantages.passk_advantages`, tested by enumeration).
Correctness is the domain checker's verdict, the same code evaluation uses. A right sample
among wrong ones earns the most; one more right answer where several are right earns
little: credit goes to covering more of the problems, not to repeating an answer.

`k_end` anneals k linearly from `k` at the first step to `k_end` at the last, giving
pass@1 its weight back late in training; null keeps k fixed. diversity_score logs the share
of other samples with another text (case and spacing aside), a cheap diagnostic.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from polychromic.advantages import annealed_k, other_class_shares, passk_advantages
from polychromic.config import require
from polychromic.methods import Method, register
from polychromic.sampled_term import (
    CheckedTermConfig,
    CheckedTermTrainer,
    checker_options,
    text_classes,
)


@dataclass
class PasskConfig(CheckedTermConfig):
    k: int = field(default=4, metadata={"help": "the k of pass@k (below n_generations)"})
    k_end: int | None = field(default=None, metadata={
        "help": "anneal k linearly to this at the last step (null: k throughout)"})

    def check(self, key: str) -> None:
        super().check(key)
        require(1 <= self.k < self.n_generations, f"{key}.k",
                "must be in [1, n_generations - 1] (the baseline leaves each sample out)")
        require(self.k_end is None or 1 <= self.k_end <= self.k, f"{key}.k_end",
                "must be in [1, k] or null")


class PasskTrainer(CheckedTermTrainer):
    TERM = "passk"

    def current_k(self) -> int:
        config = self.term
        if config.k_end is None:
            return config.k
        return annealed_k(self.state.global_step, self.state.max_steps, config.k, config.k_end)

    def group_advantages(self, groups: list[list[str]],
                         record_index=None) -> tuple[list[np.ndarray], list[float]]:
        items = list(zip(self.records_of(record_index, len(groups)), groups, strict=True))
        k = self.current_k()
        self.logged["passk_k"].append(k)
        verdicts = self.checker.verdicts(items)
        return ([passk_advantages([v.passed for v in group], k) for group in verdicts],
                [float(other_class_shares(text_classes(g)).mean()) for g in groups])

    def eval_scores(self, groups: list[list[str]]) -> list[float]:
        return [float(other_class_shares(text_classes(g)).mean()) for g in groups]


def trainer_options(config: PasskConfig, params: dict, tokenizer, domain, train: list,
                    val: list) -> dict:
    return checker_options(config, tokenizer, domain, train, val)


METHOD = register(Method(name="passk", trainer_class=lambda: PasskTrainer, config=PasskConfig,
                         options=trainer_options, batch_fields=("record_index",)))
