"""The objectives issue's advantages against the exact gradients of their objectives.

Policy: a categorical over 4 outcomes (logits θ, float64); a group is n = 4 samples, and
every one of the 4^4 groups is enumerated, so E[Σ_j A_j ∇log π(y_j)] is computed exactly
(the gradient of Σ_Y π(Y) Σ_j A_j(Y) log π_θ(y_j) with π(Y) held fixed) and compared with
∇J by autograd: equal to float precision where the estimator is unbiased, not where it is
biased. Each outcome has a quality, an equivalence class and a correctness."""

import itertools
from math import comb

import numpy as np
import pytest
import torch

from polychromic.advantages import (
    annealed_k,
    darling_advantages,
    other_class_shares,
    passk_advantages,
    quality_diversity,
    quality_diversity_advantages,
    set_objective_advantages,
    set_value,
    subset_advantages,
)

N = 4
QUALITY = [1.0, 0.5, 0.0, 0.8]
CLASS = ["a", "a", "b", "c"]
CORRECT = [1, 0, 0, 1]
GROUPS = list(itertools.product(range(len(QUALITY)), repeat=N))


def logits():
    torch.manual_seed(0)
    return (torch.randn(len(QUALITY), dtype=torch.float64) * 1.2).requires_grad_()


def exact_gradient(theta, objective):
    """∇ Σ_Y π(Y) objective(Y)."""
    logp = torch.log_softmax(theta, -1)
    value = sum(torch.exp(logp[list(group)].sum()) * objective(group) for group in GROUPS)
    return torch.autograd.grad(value, theta)[0]


def expected_estimate(theta, advantages):
    """E over groups of Σ_j A_j ∇log π(y_j), exactly."""
    logp = torch.log_softmax(theta, -1)
    weights = torch.exp(torch.stack([logp[list(g)].sum() for g in GROUPS])).detach()
    surrogate = sum(w * sum(a * logp[y] for a, y in zip(advantages(g), g, strict=True))
                    for w, g in zip(weights, GROUPS, strict=True))
    return torch.autograd.grad(surrogate, theta)[0]


def quality_diversity_of(group):
    return quality_diversity([QUALITY[y] for y in group], [CLASS[y] for y in group])


def test_quality_diversity_marginal_advantages_are_unbiased():
    theta = logits()
    exact = exact_gradient(theta, quality_diversity_of)
    assert exact.abs().max() > 0.02  # not a flat spot
    estimate = expected_estimate(theta, lambda g: quality_diversity_advantages(
        [QUALITY[y] for y in g], [CLASS[y] for y in g]))
    torch.testing.assert_close(estimate, exact, rtol=1e-10, atol=1e-12)


def test_darlings_per_sample_advantages_are_not_the_gradient_of_the_mean_reward():
    theta = logits()
    exact = exact_gradient(theta, quality_diversity_of)
    estimate = expected_estimate(theta, lambda g: darling_advantages(
        [QUALITY[y] for y in g], [CLASS[y] for y in g]))
    assert (estimate - exact).abs().max() > 0.1 * exact.abs().max()


@pytest.mark.parametrize("k", [1, 2, 3])
def test_passk_advantages_are_unbiased_for_pass_at_k(k):
    theta = logits()
    p = torch.softmax(theta, -1)[[i for i, c in enumerate(CORRECT) if c]].sum()
    exact = torch.autograd.grad(1 - (1 - p) ** k, theta)[0]  # pass@k of the policy
    estimate = expected_estimate(theta, lambda g: passk_advantages([CORRECT[y] for y in g], k))
    torch.testing.assert_close(estimate, exact, rtol=1e-10, atol=1e-12)


def test_passk_closed_form_matches_the_subsets():
    rng = np.random.default_rng(0)
    for n, k in [(5, 2), (6, 3), (8, 4), (8, 1)]:
        correct = rng.integers(0, 2, n).tolist()
        subsets = list(itertools.combinations(range(n), k))
        by_subset = []
        for j in range(n):
            with_j = np.mean([max(correct[i] for i in s) for s in subsets if j in s])
            without_j = np.mean([max(correct[i] for i in s) for s in subsets if j not in s])
            by_subset.append(k / n * (with_j - without_j))
        assert passk_advantages(correct, k) == pytest.approx(by_subset)


def test_passk_hand_values():
    # k = 1: RLOO, (c_j - mean of the others) / n
    assert passk_advantages([1, 0, 0, 1], 1) == pytest.approx(
        [(1 - 1 / 3) / 4, (0 - 2 / 3) / 4, (0 - 2 / 3) / 4, (1 - 1 / 3) / 4])
    # n = 4, k = 2, one correct: the correct one 2/4 (1 - 0); a wrong one 2/4 ((1/3) - (2/3))
    wrong_with = 1 - comb(2, 1) / comb(3, 1)
    wrong_without = 1 - comb(2, 2) / comb(3, 2)
    assert passk_advantages([1, 0, 0, 0], 2) == pytest.approx(
        [0.5 * (1 - 0.0)] + [0.5 * (wrong_with - wrong_without)] * 3)
    assert not passk_advantages([0, 0, 0, 0], 2).any()  # no signal: nothing to learn
    assert not passk_advantages([1, 1, 1, 1], 3).any()
    with pytest.raises(ValueError, match="1 <= k < n"):
        passk_advantages([1, 0], 2)


def test_quality_diversity_hand_values():
    assert other_class_shares(["a", "a", "b"]).tolist() == [0.5, 0.5, 1.0]
    assert other_class_shares(["a"]).tolist() == [0.0]
    # r = q · div = [1 · 0.5, 0 · 0.5, 0.5 · 1]; R = mean r = 1/3
    assert quality_diversity([1.0, 0.0, 0.5], ["a", "a", "b"]) == pytest.approx(1 / 3)
    # without sample 0: q [0, .5], classes [a, b]: r = [0, .5], R = .25; without 1:
    # q [1, .5], [a, b]: R = .75; without 2: classes [a, a], no diversity: R = 0
    assert quality_diversity_advantages([1.0, 0.0, 0.5], ["a", "a", "b"]) == pytest.approx(
        [1 / 3 - 0.25, 1 / 3 - 0.75, 1 / 3 - 0.0])
    assert darling_advantages([1.0, 0.0, 0.5], ["a", "a", "b"]) == pytest.approx(
        [0.5 - 1 / 3, 0.0 - 1 / 3, 0.5 - 1 / 3])


def test_annealed_k_runs_linearly_from_start_to_end():
    assert [annealed_k(step, 5, 4) for step in range(5)] == [4, 3, 3, 2, 1]  # 2.5 -> 3
    assert annealed_k(0, 1, 4) == 4 and annealed_k(99, 10, 4, 2) == 2


@pytest.mark.parametrize("size", [2, 3])
def test_set_objective_advantages_are_unbiased(size):
    """J = E[f(S)] over sets of `size` samples: the exact expectation enumerates them."""
    theta = logits()
    logp = torch.log_softmax(theta, -1)
    outcomes = range(len(QUALITY))
    objective = sum(torch.exp(logp[list(s)].sum()) * set_value(
        [QUALITY[y] for y in s], [CLASS[y] for y in s], range(size))
        for s in itertools.product(outcomes, repeat=size))
    exact = torch.autograd.grad(objective, theta)[0]
    estimate = expected_estimate(theta, lambda g: set_objective_advantages(
        [QUALITY[y] for y in g], [CLASS[y] for y in g], size))
    torch.testing.assert_close(estimate, exact, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("size", [2, 3])
def test_the_subsets_with_and_without_each_sample_give_the_same_expectation(size):
    theta = logits()
    shared = expected_estimate(theta, lambda g: set_objective_advantages(
        [QUALITY[y] for y in g], [CLASS[y] for y in g], size))
    split = expected_estimate(theta, lambda g: subset_advantages(
        lambda s: set_value([QUALITY[y] for y in g], [CLASS[y] for y in g], s), N, size))
    torch.testing.assert_close(shared, split, rtol=1e-10, atol=1e-12)


def test_set_hand_values():
    # f(S) = mean q x distinct share; n = 3, sets of 2: {01}: .5 x .5, {02}: .75 x 1, {12}: .25
    q, c = [1.0, 0.0, 0.5], ["a", "a", "b"]
    assert set_value(q, c, (0, 1)) == 0.25 and set_value(q, c, (0, 2)) == 0.75
    f = np.array([0.25, 0.75, 0.25])
    centred = f - f.mean()
    assert set_objective_advantages(q, c, 2) == pytest.approx(
        np.array([centred[0] + centred[1], centred[0] + centred[2],
                  centred[1] + centred[2]]) / comb(2, 2))


def test_pass_at_k_is_the_subset_estimator_of_the_best_correctness():
    correct = [1, 0, 0, 1, 0, 0]
    for k in (1, 2, 4):
        by_subsets = subset_advantages(lambda s: max(correct[i] for i in s), len(correct), k)
        assert passk_advantages(correct, k) == pytest.approx(by_subsets)
