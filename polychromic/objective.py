"""The polychromic objective: a diversity term whose gradient is estimated with the score
function (REINFORCE), added to the cross-entropy.

Diversity D of decoded text is a constant with respect to the weights, so `CE - λ·D` has
zero gradient in D. What moves the weights is the score-function identity
    ∇ E_{Y ~ π^N}[D(Y)] = E[ Σ_i A_i ∇ log π(y_i | x) ],   A_i = D(Y) - b_i,
which holds for any baseline b_i that does not depend on y_i. The default,
`leave_one_out`, uses b_i = D(Y without y_i): A_i is y_i's marginal contribution to the
set's diversity. The loss term is -λ · mean_i(stopgrad(A_i) · log π(y_i | x)), where
log π(y_i | x) is the sum of the sample's token log-probabilities (`sum`: exact for any
lengths). The per-token mean (`token_mean`) is kept as an option: it weights each sample's
score by 1/length, which is not a baseline, so it is biased when lengths differ (tested).

Scaling (`advantage_scaling`):
- `none`: raw A_i. Unbiased, but LOO differences are ~0.01-0.05, so λ means little.
- `running`: A_i divided by a running RMS of *earlier* steps' advantages. The first step
  with any signal only calibrates that scale and contributes no gradient, so the scale
  never depends on the current step's samples and the direction stays unbiased; λ is then
  in units of "one typical advantage". Steps whose advantages are all zero carry no signal
  and are skipped.
- `set`: (A_i - mean_j A_j) / std_j A_j within the set, as GRPO does. The set's mean and std
  contain y_i itself, so the estimator is biased (tests show it), though it often works.

Set objective (Hamid et al. 2025, arXiv 2509.25424): f(S) = mean_{i∈S} R(y_i) · D(S) over all
subsets S of `set_size` samples; set advantage f(S) - mean_S' f(S'); each sample's advantage
is the sum of the set advantages of the sets that contain it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from itertools import combinations

import numpy as np
import torch

Diversity = Callable[[Sequence[int]], float]  # D of the subset of samples at these indices


def leave_one_out_advantages(diversity: Diversity, n: int) -> np.ndarray:
    everything = list(range(n))
    total = diversity(everything)
    return np.array([total - diversity(everything[:i] + everything[i + 1:]) for i in range(n)])


def set_advantages(diversity: Diversity, rewards: Sequence[float], set_size: int) -> np.ndarray:
    n = len(rewards)
    subsets = list(combinations(range(n), set_size))
    values = np.array([np.mean([rewards[i] for i in s]) * diversity(list(s)) for s in subsets])
    centred = values - values.mean()
    advantages = np.zeros(n)
    for subset, value in zip(subsets, centred, strict=True):
        advantages[list(subset)] += value
    return advantages


class AdvantageScaler:
    """Scales a set's advantages: `none`, `running` (RMS of earlier steps), `set` (GRPO)."""

    def __init__(self, mode: str, momentum: float = 0.9, eps: float = 1e-6):
        self.mode, self.momentum, self.eps = mode, momentum, eps
        self.running_ms: float | None = None  # running mean of squared advantages

    def __call__(self, advantages: np.ndarray) -> np.ndarray:
        if self.mode == "none":
            return advantages
        if self.mode == "set":
            return (advantages - advantages.mean()) / (advantages.std() + self.eps)
        mean_square = float(np.mean(advantages ** 2))
        if mean_square == 0:  # no signal (e.g. every subset equally diverse): nothing to learn
            return advantages
        if self.running_ms is None:  # nothing earlier to scale by: calibrate, no gradient
            self.running_ms = mean_square
            return np.zeros_like(advantages)
        scaled = advantages / (np.sqrt(self.running_ms) + self.eps)
        self.running_ms = self.momentum * self.running_ms + (1 - self.momentum) * mean_square
        return scaled


REDUCTIONS = ("sum", "token_mean")


def diversity_policy_loss(token_logprobs: torch.Tensor, mask: torch.Tensor,
                          advantages: torch.Tensor, reduction: str = "sum") -> torch.Tensor:
    """-mean_i(A_i · log π(y_i)) over the samples (mask = 1 on sample tokens).

    `sum`: log π(y_i) = Σ_t log π(y_i,t); the gradient, times -1, estimates ∇E[D] / N.
    `token_mean`: Σ_t / T_i instead, exact (up to 1/T) only when every T_i is the same T.
    """
    total = (token_logprobs * mask).sum(-1)
    if reduction == "token_mean":
        total = total / mask.sum(-1).clamp(min=1)
    elif reduction != "sum":
        raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")
    return -(advantages.detach() * total).mean()
