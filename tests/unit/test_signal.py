"""The signal measurement's estimator: the norm of a gradient's mean and its noise, from
independent draws, against hand values and a simulated truth."""

import pytest
import torch

from polychromic.commands.signal import gradient_signal
from polychromic.config import UserError, override


def test_two_draws_hand_values():
    draws = torch.tensor([[3.0, 0.0], [1.0, 2.0]])
    signal, noise = gradient_signal(draws)
    assert signal == pytest.approx(3.0 ** 0.5)  # g1·g2 = 3
    assert noise == pytest.approx(2.0)  # ḡ = (2, 1): Σ‖g - ḡ‖² / (K-1) = (2 + 2) / 1


def test_signal_is_not_inflated_by_noise():
    """‖mean of 8 draws‖ overstates ‖μ‖ when the noise is large; the pair estimator does not:
    over 2,000 repetitions with ‖μ‖ = 0.3 and per-draw noise norm 3 (σ = 0.3 in each of 100
    dimensions) its mean square is ‖μ‖² within 4.5 standard errors."""
    generator = torch.Generator().manual_seed(0)
    mu = torch.zeros(100)
    mu[0] = 0.3
    squares, noises, naive = [], [], []
    for _ in range(2000):
        draws = mu + 0.3 * torch.randn(8, 100, generator=generator, dtype=torch.float64)
        k, total = 8, draws.sum(0)
        squares.append(float((total @ total - (draws * draws).sum()) / (k * (k - 1))))
        signal, noise = gradient_signal(draws)
        noises.append(noise)
        naive.append(float(draws.mean(0).norm()))
    squares = torch.tensor(squares)
    error = squares.std() / len(squares) ** 0.5
    assert abs(squares.mean() - 0.09) < 4.5 * error
    assert torch.tensor(naive).mean() > 1.0  # the naive norm: mostly noise (≈ 3 / sqrt(8))
    assert torch.tensor(noises).pow(2).mean() == pytest.approx(9.0, rel=0.02)


def test_negative_pair_estimate_reports_zero_signal():
    draws = torch.tensor([[1.0, 0.0], [-1.0, 0.0]])
    assert gradient_signal(draws)[0] == 0.0


def test_override_sets_existing_keys_only():
    params = {"polychromic": {"diversity_weight": 0.3}, "train": {"lora": {"r": 16}}}
    override(params, "polychromic.diversity_weight=1.5")
    override(params, "train.lora.r=8")
    assert params == {"polychromic": {"diversity_weight": 1.5}, "train": {"lora": {"r": 8}}}
    with pytest.raises(UserError, match="no key 'polychromic.lambda'"):
        override(params, "polychromic.lambda=1")
    with pytest.raises(UserError, match="expected key=value"):
        override(params, "polychromic.diversity_weight")
