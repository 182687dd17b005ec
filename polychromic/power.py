"""Power by design: how many prompts, and samples per prompt, a paired test needs, from the
variances measured on val (docs/protocol.md).

A prompt's pass@1 is a mean of m Bernoulli draws, so the paired difference between two
systems on a prompt has two parts: the true difference between their pass rates (which
varies over prompts) and the draws' noise, p(1-p)/m per system. More samples per prompt
shrink only the second. `pass_rate_variance` splits the observed variance of the
differences into the two (p̂(1-p̂)/(m-1) is unbiased for p(1-p)/m), and `prompts_for`
gives the prompts that a one-sided paired test needs at a given number of samples.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from polychromic import stats


def pass_rate_variance(a_passed: Sequence[int], b_passed: Sequence[int],
                       samples: int) -> dict:
    """Per prompt, passing samples out of `samples` for two systems: the variance of the
    paired differences of pass rates, split into prompts' true differences and the draws'
    noise at this many samples."""
    a = np.asarray(a_passed, float) / samples
    b = np.asarray(b_passed, float) / samples
    observed = float(np.var(a - b, ddof=1))
    noise = float(np.mean(a * (1 - a) + b * (1 - b)) / (samples - 1))
    return {"observed": observed, "noise": noise, "between": max(observed - noise, 0.0),
            "samples": samples}


def sd_at(variance: dict, samples: int) -> float:
    """The SD of the paired pass-rate differences with `samples` draws per prompt."""
    return float(np.sqrt(variance["between"] + variance["noise"] * variance["samples"]
                         / samples))


def prompts_for(effect: float, sd: float, alpha: float, power: float = 0.8) -> int | None:
    """Prompts for a one-sided paired test to find a mean difference `effect` (raw units)
    with `power`, at SD `sd` of the differences."""
    if sd <= 0:
        return 2
    return stats.pairs_needed(effect / sd, alpha, power)
