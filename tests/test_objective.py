"""The diversity gradient estimator against the exact gradient of E[D], by enumeration.

Policy: an autoregressive categorical over a 3-token vocabulary, sequences of exactly 2
tokens (9 outcomes), N = 3 samples per set (729 sets). D: mean pairwise Hamming distance
(a pairwise mean, like semantic diversity) or the share of distinct sequences (like
Distinct-n). Each estimate averages 200,000 sets; the tolerance is 4.5 standard errors.
"""

import itertools

import numpy as np
import pytest
import torch

from polychromic.objective import (
    AdvantageScaler,
    diversity_policy_loss,
    leave_one_out_advantages,
    set_advantages,
)

V, T, N = 3, 2, 3
OUTCOMES = list(itertools.product(range(V), repeat=T))  # 9 sequences
TUPLES = list(itertools.product(range(len(OUTCOMES)), repeat=N))  # 729 sample sets


def hamming_diversity(sequences):
    """D of a set: mean pairwise Hamming distance / T; 0 for fewer than two samples."""
    pairs = list(itertools.combinations(sequences, 2))
    if not pairs:
        return 0.0
    return float(np.mean([sum(a != b for a, b in zip(x, y, strict=True)) / T for x, y in pairs]))


def distinct_share(sequences):
    """D of a set: distinct sequences / samples."""
    return len(set(sequences)) / len(sequences) if sequences else 0.0


METRICS = {"hamming": hamming_diversity, "distinct": distinct_share}


def policy():
    torch.manual_seed(0)
    first = (torch.randn(V) * 1.5).requires_grad_()
    second = (torch.randn(V, V) * 1.5).requires_grad_()
    return first, second


def token_logprobs(first, second, sequences: torch.Tensor) -> torch.Tensor:
    """log π of each token of each sequence, shape (len(sequences), T)."""
    lp1 = torch.log_softmax(first, -1)[sequences[:, 0]]
    lp2 = torch.log_softmax(second, -1)[sequences[:, 0], sequences[:, 1]]
    return torch.stack([lp1, lp2], dim=1)


def exact_gradient(first, second, diversity):
    outcomes = torch.tensor(OUTCOMES)
    logp = token_logprobs(first, second, outcomes).sum(-1)  # log π(y) per outcome
    expected = 0.0
    for t in TUPLES:
        expected = expected + torch.exp(logp[list(t)].sum()) * diversity(
            [OUTCOMES[i] for i in t])
    return torch.autograd.grad(expected, [first, second])


def estimator_gradients(first, second, advantage_of, draws=200_000, batches=20, seed=1):
    """Per-batch estimates of ∇E[D] from `diversity_policy_loss`, rescaled by N·T."""
    probs = torch.exp(token_logprobs(first, second, torch.tensor(OUTCOMES)).sum(-1)).detach()
    generator = torch.Generator().manual_seed(seed)
    table = torch.tensor(np.array([advantage_of(t) for t in TUPLES]), dtype=torch.float32)
    estimates = []
    for _ in range(batches):
        idx = torch.multinomial(probs, (draws // batches) * N, replacement=True,
                                generator=generator).view(-1, N)
        code = (idx * torch.tensor([len(OUTCOMES) ** (N - 1 - k) for k in range(N)])).sum(-1)
        advantages = table[code].reshape(-1)
        sequences = torch.tensor(OUTCOMES)[idx.reshape(-1)]
        loss = diversity_policy_loss(token_logprobs(first, second, sequences),
                                     torch.ones(len(sequences), T), advantages)
        grads = torch.autograd.grad(loss, [first, second])
        estimates.append(torch.cat([-g.flatten() * N * T for g in grads]))
    estimates = torch.stack(estimates)
    return estimates.mean(0), estimates.std(0) / batches ** 0.5


def loo(t, diversity=hamming_diversity):
    return leave_one_out_advantages(lambda idx: diversity([OUTCOMES[t[i]] for i in idx]), N)


@pytest.fixture(scope="module", params=sorted(METRICS))
def case(request):
    diversity = METRICS[request.param]
    first, second = policy()
    exact = torch.cat([g.flatten() for g in exact_gradient(first, second, diversity)])
    assert exact.abs().max() > 0.05  # the check is not on a flat spot
    return diversity, exact


def test_leave_one_out_estimator_is_unbiased(case):
    diversity, exact = case
    mean, stderr = estimator_gradients(*policy(), lambda t: loo(t, diversity))
    z = (mean - exact).abs() / (stderr + 1e-4)
    assert z.max() < 4.5, (mean, exact, z)
    torch.testing.assert_close(mean, exact, atol=0.01, rtol=0.05)


def test_running_scale_keeps_the_direction_unbiased(case):
    """A scale fixed before the step's samples are drawn multiplies the gradient, no more."""
    diversity, exact = case
    mean, _ = estimator_gradients(*policy(), lambda t: loo(t, diversity) / 0.37)
    torch.testing.assert_close(mean * 0.37, exact, atol=0.01, rtol=0.05)


def test_baseline_that_includes_the_sample_is_biased():
    """Centring the LOO advantages on the set's mean puts y_i into its own baseline. (For a
    pairwise-mean D such as Hamming the set mean of LOO advantages is exactly 0, so the
    Distinct-like D is the one that shows it.)"""
    first, second = policy()
    exact = torch.cat([g.flatten() for g in exact_gradient(first, second, distinct_share)])
    centred = lambda t: loo(t, distinct_share) - loo(t, distinct_share).mean()  # noqa: E731
    mean, stderr = estimator_gradients(first, second, centred)
    z = (mean - exact).abs() / (stderr + 1e-4)
    assert z.max() > 10, (mean, exact, z)


def test_set_standardisation_is_biased():
    """GRPO-style scaling by the set's own std also leaves the true gradient."""
    first, second = policy()
    exact = torch.cat([g.flatten() for g in exact_gradient(first, second, hamming_diversity)])
    mean, stderr = estimator_gradients(first, second, lambda t: AdvantageScaler("set")(loo(t)))
    assert ((mean - exact).abs() / (stderr + 1e-4)).max() > 10
    assert torch.nn.functional.cosine_similarity(mean, exact, dim=0) < 0.99  # direction too


def test_leave_one_out_hand_values():
    # D = number of distinct items; LOO advantage = did removing y_i lose a distinct item?
    items = ["a", "a", "b"]
    advantages = leave_one_out_advantages(lambda idx: len({items[i] for i in idx}), 3)
    assert advantages.tolist() == [0, 0, 1]


def test_set_advantages_hand_values():
    # N = 3, sets of 2: {01} {02} {12}; D(S) = 1 unless the set is {0, 1} (duplicates)
    rewards = [1.0, 1.0, 0.0]
    diversity = {(0, 1): 0.0, (0, 2): 1.0, (1, 2): 1.0}
    advantages = set_advantages(lambda idx: diversity[tuple(idx)], rewards, 2)
    f = np.array([1.0 * 0.0, 0.5 * 1.0, 0.5 * 1.0])  # mean reward × diversity
    centred = f - f.mean()
    assert advantages == pytest.approx([centred[0] + centred[1], centred[0] + centred[2],
                                        centred[1] + centred[2]])


def test_advantage_scaler_modes():
    a = np.array([0.02, -0.01, 0.05])
    assert AdvantageScaler("none")(a) is a
    standard = AdvantageScaler("set")(a)
    assert standard.mean() == pytest.approx(0) and standard.std() == pytest.approx(1, rel=1e-4)
    running = AdvantageScaler("running", momentum=0.5)
    first = running(a)
    rms = np.sqrt(np.mean(a ** 2))
    assert first == pytest.approx(a / rms, rel=1e-4)
    second = running(a * 10)  # scaled by earlier steps only: the blend of 1 step, not this one
    assert second == pytest.approx(a * 10 / rms, rel=1e-4)
