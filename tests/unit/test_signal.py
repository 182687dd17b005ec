"""The signal measurement's estimator: the norm of a gradient's mean and its noise, from
independent draws, against hand values and a simulated truth."""

import json

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


def signal_result(domain: str, method: str, weight: float, **mean) -> dict:
    values = {"signal_over_ce": 0.5, "noise_over_ce": 2.0, "signal_to_noise": 0.25,
              "cosine_mean_to_ce": -0.125, "seconds_per_update": 16.94, "ce_seconds": 0.5,
              "seconds_per_step": 9.0} | mean
    return {"domain": domain, "method": method, "weight": weight, "batches": 2, "draws": 8,
            "updates_per_run": 30, "mean": values}


def test_the_table_is_rendered_from_results_sorted_and_rounded(tmp_path):
    from polychromic.commands.signal import main, table

    rows = table([signal_result("replies", "set_objective", 1.0),
                  signal_result("qa", "passk", 0.3, signal_over_ce=1.234)]).splitlines()
    assert rows[0].startswith("| domain | method | weight | draws | ‖E[w∇term]‖ / ‖∇CE‖ |")
    assert rows[2] == ("| qa | passk | 0.3 | 2 × 8 | 1.23 | 2.00 | 0.25 | -0.12 | 16.9 | 0.50 | "
                       "9.00 | 30 |")
    assert rows[3].startswith("| replies | set_objective | 1 | 2 × 8 | 0.50 |")
    # --table --into: between the page's markers, the rest of the page kept
    for name, method in [("a.json", "passk"), ("b.json", "polychromic")]:
        (tmp_path / name).write_text(json.dumps(signal_result("qa", method, 1.0)))
    page = tmp_path / "page.md"
    page.write_text("# Page\n<!-- results:start -->\nold\n<!-- results:end -->\nafter\n")
    main(["--table", str(tmp_path / "a.json"), str(tmp_path / "b.json"), "--into", str(page)])
    text = page.read_text()
    assert text.startswith("# Page\n<!-- results:start -->\n| domain |") and "old" not in text
    assert text.endswith("| 30 |\n<!-- results:end -->\nafter\n") and text.count("| qa |") == 2
    (tmp_path / "old.json").write_text(json.dumps({"domain": "qa", "mean": {}}))
    with pytest.raises(UserError, match="old.json: lacks signal_over_ce"):
        main(["--table", str(tmp_path / "old.json")])


def test_the_objectives_page_shows_the_committed_signal_results():
    from polychromic.commands.signal import read_result, table
    from polychromic.results import block_of
    from tests.helpers import REPO

    files = sorted((REPO / "metrics" / "signal").glob("*.json"))
    assert len(files) == 11  # 3 methods in each domain, and pass@k in code and qa
    page = (REPO / "docs" / "objectives.md").read_text(encoding="utf-8")
    assert block_of(page) == table([read_result(f) for f in files]), (
        "docs/objectives.md's signal table differs from metrics/signal/: run "
        "`polychromic signal --table metrics/signal/*.json --into docs/objectives.md`")
