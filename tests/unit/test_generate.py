"""Sampling's arithmetic: the next-token distribution against transformers' own warpers, the
log-probabilities of what is drawn, the draws against their distribution, and the generate
stage's batches against the cache they hold (the decode loop on the tiny Llama:
tests/integration/test_generate.py)."""

import numpy as np
import pytest
import torch
from transformers.generation.logits_process import (
    TemperatureLogitsWarper,
    TopKLogitsWarper,
    TopPLogitsWarper,
)

from polychromic.sampling import draw, next_token_distribution, truncated_logprobs


@pytest.mark.parametrize("temperature,top_k,top_p", [
    (0.7, 50, 0.95), (1.0, 0, 0.9), (0.8, 10, 1.0), (1.0, 0, 1.0), (1.3, 200, 0.5)])
def test_next_token_distribution_is_generates(temperature, top_k, top_p):
    """The candidates' probabilities are those transformers samples from: temperature, then
    top-k, then top-p warpers, then softmax over the whole vocabulary."""
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(6, 3000, generator=generator) * 3
    logits[0, :5] += 12  # one peaked row: top-p keeps very few
    expected = TemperatureLogitsWarper(temperature)(None, logits.clone())
    if top_k:
        expected = TopKLogitsWarper(top_k)(None, expected)
    if top_p < 1:
        expected = TopPLogitsWarper(top_p)(None, expected)
    expected = torch.softmax(expected, dim=-1)
    probs, ids = next_token_distribution(logits, temperature, top_k, top_p)
    dense = probs if ids is None else torch.zeros_like(logits).scatter(-1, ids, probs)
    torch.testing.assert_close(dense, expected, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("temperature,top_k,top_p", [
    (0.7, 50, 0.95), (1.0, 0, 0.9), (0.8, 10, 1.0), (1.0, 0, 1.0)])
def test_truncated_logprobs_are_the_log_of_what_is_drawn(temperature, top_k, top_p):
    """For (rows, positions, vocab) logits, the log-probability of each candidate token is
    the log of `next_token_distribution`'s probability, and its gradient is that of log
    softmax over the candidates alone (the tokens cut off get none)."""
    generator = torch.Generator().manual_seed(2)
    logits = (torch.randn(3, 4, 500, generator=generator) * 3).requires_grad_()
    probs, ids = next_token_distribution(logits.detach().view(12, 500), temperature, top_k,
                                         top_p)
    ids = torch.arange(500).expand(12, 500) if ids is None else ids
    tokens = ids[:, 0].view(3, 4)  # the most likely candidate of each position
    logprobs = truncated_logprobs(logits, tokens, temperature, top_k, top_p)
    torch.testing.assert_close(logprobs.detach().view(-1), probs[:, 0].log(), rtol=1e-5,
                               atol=1e-6)
    (grad,) = torch.autograd.grad(logprobs[0, 0], logits)
    kept = ids[0][probs[0] > 0]
    expected = -probs[0][probs[0] > 0] / temperature  # d log p_y / d z_j = (δ_yj - p_j) / T
    expected[0] += 1 / temperature
    torch.testing.assert_close(grad[0, 0, kept], expected, rtol=1e-4, atol=1e-6)
    outside = torch.ones(500, dtype=torch.bool)
    outside[kept] = False
    assert not grad[0, 0, outside].any() and not grad[1:].any()


def test_a_token_just_outside_the_cut_keeps_a_finite_logprob():
    logits = torch.tensor([[5.0, 4.0, 0.0, -1.0]])
    probs, ids = next_token_distribution(logits, 1.0, 0, 0.5)
    assert (probs > 0).sum() == 1  # only token 0 is a candidate
    value = truncated_logprobs(logits, torch.tensor([1]), 1.0, 0, 0.5)
    assert value.item() == pytest.approx(4.0 - np.logaddexp(5.0, 4.0))


def test_draws_follow_the_distribution():
    probs = torch.tensor([[0.5, 0.3, 0.15, 0.05, 0.0]]).repeat(200_000, 1)
    ids = torch.tensor([[7, 3, 9, 1, 4]]).repeat(200_000, 1)
    tokens = draw(probs, ids, torch.Generator().manual_seed(1)).numpy()
    for token, p in zip([7, 3, 9, 1, 4], [0.5, 0.3, 0.15, 0.05, 0.0], strict=True):
        share = float(np.mean(tokens == token))
        assert abs(share - p) <= 4.5 * (p * (1 - p) / len(tokens)) ** 0.5 + 1e-12, token


def test_batches_fit_the_cache_the_sampler_keeps():
    """Shared: a batch holds each prompt's keys once (padded to its longest) and each
    sample's new tokens; unshared: every sample holds the longest prompt too. By hand, with
    4 samples of 10 new tokens: prompts of 100, 50, 300 and 20 tokens in 500 tokens."""
    from polychromic.stages.generate import batches

    lengths = [100, 50, 300, 20]
    # shared: {100, 50} -> 2*100 + 2*40 = 280; + 300 -> 3*300 + 120 > 500; {300} alone;
    # {300, 20} -> 2*300 + 80 = 680 > 500
    assert batches(lengths, 10, 8, 4, 500) == [range(0, 2), range(2, 3), range(3, 4)]
    # unshared: {100} = 440; {100, 50} = 880 > 500; {50, 300}: > 500; {20} = 120
    assert batches(lengths, 10, 8, 4, 500, shared=False) == [
        range(0, 1), range(1, 2), range(2, 3), range(3, 4)]
    assert batches(lengths, 10, 2, 4, 10**6) == [range(0, 2), range(2, 4)]  # the limit
    assert batches([5000], 10, 8, 4, 500) == [range(0, 1)]  # one prompt even past the budget

