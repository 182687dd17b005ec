"""Per-sample advantages of the objectives that weigh diversity by quality or optimise
pass@k directly (the objectives issue), each with the objective whose gradient it
estimates. Every function takes one prompt's group of n samples and returns one advantage
per sample, A_j; the policy-gradient estimate is Σ_j A_j ∇log π(y_j | x)
(`objective.diversity_policy_loss` averages it over the samples, so its gradient, times -1,
is the estimate / n). tests/unit/test_advantages.py checks each against the exact gradient
of its objective by enumerating every group of a toy policy.

- `quality_diversity_advantages`: J = E[R(Y)], R(Y) = mean_i q_i · div_i(Y), where q_i is
  the checker's quality of sample i and div_i the share of the other samples in another
  equivalence class (DARLING's per-sample reward, Li et al. 2025: quality times
  diversity, multiplied, not added). A_j = R(Y) - R(Y without y_j): the sample's marginal
  contribution, unbiased, no std normalisation.
- `darling_advantages`: DARLING's own A_j = r_j - mean_i r_i with r_j = q_j · div_j(Y),
  kept for comparison. Not the gradient of E[R] (y_j is in its own baseline and r_i
  depends on y_j through div_i): tested biased.
- `passk_advantages`: J = pass@k = E[max of the correctness of k samples] from n > k
  samples (Pass@k Training, Chen et al. 2025; PKPO, Walder & Karkhanis 2025):
  A_j = (k/n)(mean over the k-subsets holding j of their max - mean over those without j),
  in closed form. With k = 1 it is RLOO's (c_j - mean of the others) / n.
- `set_objective_advantages`: J = E[f(S)] over sets S of s samples, f(S) = mean_{i∈S} q_i ·
  (distinct classes in S) / s (the polychromic set objective, Hamid et al. 2025), with the
  paper's shared set advantage: every member of a subset gets that subset's f - mean f over
  all subsets (`objective.set_advantages`). The mean holds y_j, yet the estimate is
  C(n-1, s) ∇J exactly (the mean of f over subsets is itself an unbiased estimate of J, so
  its score-function term has expectation C(n-1, s-1) ∇J against C(n, s) ∇J for the sum);
  divided by C(n-1, s) here, it is unbiased.
- `subset_advantages`: the same J from the subsets with and without each sample,
  (s/n)(mean_{S∋j} f - mean_{S∌j} f): unbiased too; pass@k is it with f = the best
  correctness in S.
- `annealed_k`: k from k_start down to k_end along training, to give pass@1 back its weight.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from itertools import combinations
from math import comb, floor

import numpy as np


def other_class_shares(classes: Sequence) -> np.ndarray:
    """div_i: the share of the other samples whose class differs from sample i's (0 for a
    group of one: nothing to differ from)."""
    n = len(classes)
    if n < 2:
        return np.zeros(n)
    labels = list(classes)
    return np.array([sum(c != labels[i] for c in labels) / (n - 1) for i in range(n)])


def quality_diversity(qualities: Sequence[float], classes: Sequence) -> float:
    """R(Y) = mean_i q_i · div_i(Y) (0 for an empty group)."""
    if not len(qualities):
        return 0.0
    return float(np.mean(np.asarray(qualities, dtype=float) * other_class_shares(classes)))


def quality_diversity_advantages(qualities: Sequence[float], classes: Sequence) -> np.ndarray:
    """A_j = R(Y) - R(Y without y_j): unbiased for ∇E[R(Y)] over groups of n."""
    n = len(qualities)
    total = quality_diversity(qualities, classes)
    keep = [[i for i in range(n) if i != j] for j in range(n)]
    return np.array([total - quality_diversity([qualities[i] for i in rest],
                                               [classes[i] for i in rest]) for rest in keep])


def darling_advantages(qualities: Sequence[float], classes: Sequence) -> np.ndarray:
    """DARLING's per-sample advantage r_j - mean_i r_i, r_j = q_j · div_j (no std)."""
    rewards = np.asarray(qualities, dtype=float) * other_class_shares(classes)
    return rewards - rewards.mean()


def passk_advantages(correct: Sequence[bool | int], k: int) -> np.ndarray:
    """A_j = (k/n)(mean_{S∋j} max_S c - mean_{S∌j} max_S c) over the k-subsets S of the n
    samples: unbiased for ∇pass@k. Needs n > k (the baseline's subsets leave j out)."""
    n = len(correct)
    if not 1 <= k < n:
        raise ValueError(f"pass@{k} advantages need 1 <= k < n samples, got n = {n}")
    c = [1 if value else 0 for value in correct]
    total = sum(c)
    advantages = []
    for c_j in c:
        others_correct = total - c_j
        # S ∋ j: j and k - 1 of the n - 1 others; its max is 0 only if all are wrong
        with_j = 1.0 if c_j else 1.0 - comb(n - 1 - others_correct, k - 1) / comb(n - 1, k - 1)
        without_j = 1.0 - comb(n - 1 - others_correct, k) / comb(n - 1, k)
        advantages.append(k / n * (with_j - without_j))
    return np.array(advantages)


def subset_advantages(value: Callable[[tuple[int, ...]], float], n: int,
                      size: int) -> np.ndarray:
    """A_j = (size/n)(mean_{S∋j} value(S) - mean_{S∌j} value(S)) over the size-subsets of
    range(n): unbiased for ∇E[value of `size` samples]. Needs n > size."""
    if not 1 <= size < n:
        raise ValueError(f"subsets of {size} need 1 <= size < n samples, got n = {n}")
    values = {subset: value(subset) for subset in combinations(range(n), size)}
    return np.array([size / n * (np.mean([v for s, v in values.items() if j in s])
                                 - np.mean([v for s, v in values.items() if j not in s]))
                     for j in range(n)])


def set_value(qualities: Sequence[float], classes: Sequence, subset: Sequence[int]) -> float:
    """f(S) = mean quality in S x the share of S's members that are distinct classes."""
    return (float(np.mean([qualities[i] for i in subset]))
            * len({classes[i] for i in subset}) / len(subset))


def set_objective_advantages(qualities: Sequence[float], classes: Sequence,
                             size: int) -> np.ndarray:
    """The set objective's shared set advantages over the size-subsets, / C(n-1, size): an
    unbiased estimate of ∇E[f(S)]. Needs n > size."""
    from polychromic.objective import set_advantages

    n = len(qualities)
    if not 2 <= size < n:
        raise ValueError(f"sets of {size} need 2 <= size < n samples, got n = {n}")
    shares = set_advantages(lambda s: len({classes[i] for i in s}) / len(s), qualities, size)
    return shares / comb(n - 1, size)


def annealed_k(step: int, total_steps: int, k_start: int, k_end: int = 1) -> int:
    """k at optimiser step `step` of `total_steps`: linear from k_start to k_end, rounded
    half up."""
    if total_steps <= 1:
        return k_start
    fraction = min(max(step / (total_steps - 1), 0.0), 1.0)
    return int(floor(k_start + (k_end - k_start) * fraction + 0.5))
