"""`polychromic signal` on the tiny model, qa: every method with a sampled term is measured
by the same command (its own trainer, its own advantages); the numbers are the term's, so
doubling its weight doubles signal and noise exactly (same seed, same samples) and leaves
the cosine; a method without a term is refused in one line. (The estimator itself:
tests/unit/test_signal.py.)"""

import json
import math

import pytest
import yaml

from polychromic.commands import signal
from polychromic.config import UserError
from polychromic.domains import Checker, Verdict
from tests.helpers import run_module, tiny_qa_run_params

METHODS = {"polychromic": "diversity_weight", "quality_diversity": "weight",
           "set_objective": "weight", "passk": "weight"}


class Parity(Checker):
    """The tiny random model solves no qa question: pass (reward 1) when a sample's length is
    even, classes by length, so that every method's advantages have something to say."""

    def rewards(self, items):
        return [[float(len(s) % 2 == 0) for s in samples] for _, samples in items]

    def classes(self, items):
        return [[str(len(s)) for s in samples] for _, samples in items]

    def verdicts(self, items):
        return [[Verdict(passed=len(s) % 2 == 0) for s in samples] for _, samples in items]


@pytest.fixture(scope="module")
def qa_project(tmp_path_factory, tiny_model_dir):
    root = tmp_path_factory.mktemp("signal")
    params = tiny_qa_run_params()
    params["train"]["batch_size"] = 2
    for name in METHODS:
        section = params.setdefault(name, {})
        section.update(n_generations=4, prompts_per_step=2, max_new_tokens=6, generate_every=1)
        if name != "polychromic":
            section[METHODS[name]] = 0.5
    params["passk"]["k"] = params["set_objective"]["set_size"] = 2
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    run_module(root, "prepare", "--domain", "qa", "--out", "data/qa")
    return root, str(tiny_model_dir)


@pytest.fixture
def measured(qa_project, monkeypatch):
    root, base = qa_project
    monkeypatch.chdir(root)
    real = signal.load_domain

    def domain_with_parity(name, params):
        domain = real(name, params)
        monkeypatch.setattr(domain, "checker", lambda val: Parity())
        return domain

    monkeypatch.setattr(signal, "load_domain", domain_with_parity)

    def run(method: str, *settings: str) -> dict:
        out = root / f"{method}{''.join(settings)}.json"
        signal.main(["--domain", "qa", "--method", method, "--base", base, "--data", "data/qa",
                     "--batches", "1", "--draws", "3", "--calibration", "2", "--out", str(out),
                     *[f"--set={s}" for s in settings]])
        return json.loads(out.read_text())

    return run


@pytest.mark.slow
@pytest.mark.parametrize("method", sorted(METHODS))
def test_each_sampled_term_method_is_measured(measured, method):
    result = measured(method)
    assert (result["method"], result["domain"], result["draws"]) == (method, "qa", 3)
    mean = result["mean"]
    assert mean["ce_grad_norm"] > 0 and mean["noise"] > 0 and mean["seconds_per_update"] > 0
    assert mean["signal"] >= 0 and -1 <= mean["cosine_mean_to_ce"] <= 1
    assert mean["noise_over_ce"] == pytest.approx(mean["noise"] / mean["ce_grad_norm"], rel=1e-5)
    assert result["settings"]["n_generations"] == 4
    # a step: the cross-entropy's pass plus the update every generate_every (1 here) steps
    assert mean["seconds_per_step"] == pytest.approx(  # as written: 6 significant digits
        mean["ce_seconds"] + mean["seconds_per_update"], rel=1e-5)


@pytest.mark.slow
def test_a_term_that_no_sample_earns_is_measured_as_zero(measured, monkeypatch, capsys):
    """Code at the start of training: no program passes, so a quality-gated reward gives
    every sample 0 and the term no gradient; reported as such, not refused."""
    monkeypatch.setattr(Parity, "rewards", lambda self, items: [[0.0] * len(s)
                                                                 for _, s in items])
    monkeypatch.setattr(Parity, "verdicts", lambda self, items: [
        [Verdict(passed=False)] * len(s) for _, s in items])
    mean = measured("quality_diversity")["mean"]
    assert (mean["signal"], mean["noise"], mean["signal_to_noise"]) == (0.0, 0.0, 0.0)
    assert mean["ce_grad_norm"] > 0
    assert "every calibration draw had zero advantages" in capsys.readouterr().err


@pytest.mark.slow
def test_twice_the_weight_is_twice_the_gradient(measured):
    key = METHODS["quality_diversity"]
    once = measured("quality_diversity", f"quality_diversity.{key}=0.5")
    twice = measured("quality_diversity", f"quality_diversity.{key}=1.0")
    for name in ("signal", "noise", "signal_over_ce", "noise_over_ce"):
        assert twice["mean"][name] == pytest.approx(2 * once["mean"][name], rel=2e-5), name
    assert twice["mean"]["cosine_mean_to_ce"] == pytest.approx(
        once["mean"]["cosine_mean_to_ce"], abs=1e-6)
    assert twice["mean"]["ce_grad_norm"] == once["mean"]["ce_grad_norm"]
    assert math.isfinite(twice["mean"]["signal_to_noise"])


def test_a_method_without_a_term_is_refused(measured):
    with pytest.raises(UserError, match="--method baseline: a method without a sampled term"):
        measured("baseline")
