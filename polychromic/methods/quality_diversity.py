"""Method `quality_diversity`: LoRA cross-entropy plus λ times a score-function term whose
reward multiplies each sample's quality by its diversity, as DARLING does (Li et al. 2025):
r_i = q_i · div_i, where q_i is the domain checker's graded quality of sample i (the code
evaluation scores with) and div_i the share of the prompt's other samples in another
equivalence class. A sample that is right and unlike the others earns the most; a wrong one
earns nothing however novel. No std normalisation.

`advantage: marginal` (the default) gives each sample its contribution to the group's mean
reward, R(Y) - R(Y without it): the unbiased gradient of E[R] (`advantages.py`, tested by
enumeration). `advantage: darling` is DARLING's own r_i - mean_j r_j, for comparison; it is
the gradient of no fixed objective (tested biased).

The classes are the checker's `reward_classes`: for code and qa evaluation's own (behaviour,
final answer: exact sameness); for replies the same greedy partition on the reward's
encoder (all-MiniLM-L6-v2), not on evaluation's independent all-mpnet-base-v2, so that
`semantic_independent` stays a measure this objective does not see. (Replies'
`distinct_classes` is MPNet's partition: near, not equal, to what is rewarded.)
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from polychromic.advantages import (
    darling_advantages,
    other_class_shares,
    quality_diversity_advantages,
)
from polychromic.config import require
from polychromic.methods import Method, register
from polychromic.sampled_term import CheckedTermConfig, CheckedTermTrainer, checker_options

ADVANTAGES = ("marginal", "darling")


@dataclass
class QualityDiversityConfig(CheckedTermConfig):
    advantage: str = field(default="marginal", metadata={
        "help": "marginal: R(Y) - R(Y without the sample), unbiased for E[mean q·div]; "
                "darling: r_i - mean r (DARLING's, biased)"})

    def check(self, key: str) -> None:
        super().check(key)
        require(self.advantage in ADVANTAGES, f"{key}.advantage",
                f"must be one of {ADVANTAGES}")


class QualityDiversityTrainer(CheckedTermTrainer):
    TERM = "quality_diversity"

    def group_advantages(self, groups: list[list[str]],
                         record_index=None) -> tuple[list[np.ndarray], list[float]]:
        items = list(zip(self.records_of(record_index, len(groups)), groups, strict=True))
        qualities, classes = self.checker.rewards(items), self.checker.reward_classes(items)
        advantage = (quality_diversity_advantages if self.term.advantage == "marginal"
                     else darling_advantages)
        return ([advantage(q, c) for q, c in zip(qualities, classes, strict=True)],
                [float(other_class_shares(c).mean()) for c in classes])

    def eval_scores(self, groups: list[list[str]]) -> list[float]:
        items = list(zip(self.eval_records, groups, strict=True))
        classes = self.checker.reward_classes(items)
        return [float(other_class_shares(c).mean()) for c in classes]


def trainer_options(config: QualityDiversityConfig, params: dict, tokenizer, domain,
                    train: list, val: list) -> dict:
    return checker_options(config, tokenizer, domain, train, val)


METHOD = register(Method(name="quality_diversity",
                         trainer_class=lambda: QualityDiversityTrainer,
                         config=QualityDiversityConfig, options=trainer_options,
                         batch_fields=("record_index",)))
