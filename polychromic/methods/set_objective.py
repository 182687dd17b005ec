"""Method `set_objective`: LoRA cross-entropy plus λ times the polychromic set objective
(Hamid et al. 2025) as a score-function term: a set S of `set_size` samples scores
f(S) = (its mean quality) x (its distinct classes / its size), with quality from the
domain's checker and classes from its equivalence classes. From the n samples of a prompt
every subset of `set_size` is scored, and every member of a subset gets the same set advantage,
f(S) - mean f (deliberately not leave-one-out, as in the paper), summed over its subsets
and divided by C(n-1, set_size): an unbiased estimate of ∇E[f] (`advantages.py`, tested by
enumeration). A set earns most when its members are right and different.

Classes are the checker's `reward_classes` (see `quality_diversity`: on replies the reward's
encoder, not evaluation's independent one).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from polychromic.advantages import other_class_shares, set_objective_advantages
from polychromic.config import require
from polychromic.methods import Method, register
from polychromic.sampled_term import CheckedTermConfig, CheckedTermTrainer, checker_options


@dataclass
class SetObjectiveConfig(CheckedTermConfig):
    set_size: int = field(default=4, metadata={
        "help": "samples per scored set (below n_generations)"})

    def check(self, key: str) -> None:
        super().check(key)
        require(2 <= self.set_size < self.n_generations, f"{key}.set_size",
                "must be in [2, n_generations - 1] (one set of all n has no advantage)")


class SetObjectiveTrainer(CheckedTermTrainer):
    TERM = "set_objective"

    def group_advantages(self, groups: list[list[str]],
                         record_index=None) -> tuple[list[np.ndarray], list[float]]:
        items = list(zip(self.records_of(record_index, len(groups)), groups, strict=True))
        qualities, classes = self.checker.rewards(items), self.checker.reward_classes(items)
        return ([set_objective_advantages(q, c, self.term.set_size)
                 for q, c in zip(qualities, classes, strict=True)],
                [float(other_class_shares(c).mean()) for c in classes])

    def eval_scores(self, groups: list[list[str]]) -> list[float]:
        items = list(zip(self.eval_records, groups, strict=True))
        classes = self.checker.reward_classes(items)
        return [float(other_class_shares(c).mean()) for c in classes]


def trainer_options(config: SetObjectiveConfig, params: dict, tokenizer, domain, train: list,
                    val: list) -> dict:
    return checker_options(config, tokenizer, domain, train, val)


METHOD = register(Method(name="set_objective", trainer_class=lambda: SetObjectiveTrainer,
                         config=SetObjectiveConfig, options=trainer_options,
                         batch_fields=("record_index",)))
