"""The polychromic method's settings: the configurations refused (and why they are), and the
training samples' settings (the trainer on the tiny Llama: tests/integration)."""

import pytest

from polychromic.config import UserError, load_section
from polychromic.domains import Sampling
from polychromic.methods.polychromic import PolychromicConfig


@pytest.mark.parametrize("values,message", [
    ({"diversity_weight": -0.1}, "'polychromic.diversity_weight' must be >= 0"),
    ({"n_generations": 1}, "'polychromic.n_generations' must be >= 2"),
    ({"diversity_metric": "rouge"}, "'polychromic.diversity_metric' must be one of"),
    ({"logprob_reduction": "mean"}, "'polychromic.logprob_reduction' must be one of"),
    ({"advantage_scaling": "set", "n_generations": 2},
     "'polychromic.advantage_scaling' 'set' needs n_generations >= 3"),
    ({"objective": "set", "set_size": 4, "n_generations": 4},
     "'polychromic.set_size' must be in \\[2, n_generations - 1\\]"),
    ({"top_p": 0.0}, "'polychromic.top_p' must be in"),
])
def test_bad_polychromic_params(values, message):
    with pytest.raises(UserError, match=message):
        load_section(PolychromicConfig, {"polychromic": values}, "polychromic")


def test_zero_gradient_configurations_are_the_ones_rejected():
    """Why the two rejections above: set-standardised LOO advantages of 2 samples are equal
    (any pairwise D gives both the same), and one subset of N has a zero set advantage."""
    from polychromic.objective import AdvantageScaler, leave_one_out_advantages, set_advantages

    pair = leave_one_out_advantages(lambda idx: 0.7 if len(idx) == 2 else 0.0, 2)
    assert not AdvantageScaler("set")(pair).any()
    assert not set_advantages(lambda idx: 0.5, [1.0, 0.3, 0.8], 3).any()


def test_training_samples_use_the_domains_settings_unless_set():
    domain = Sampling(prompts=30, max_new_tokens=20, temperature=0.6, top_k=40,
                      top_p=0.9)
    assert PolychromicConfig().sampling(domain) == domain
    own = PolychromicConfig(temperature=1.0, top_p=1.0).sampling(domain)
    assert (own.temperature, own.top_k, own.top_p, own.max_new_tokens) == (1.0, 40, 1.0, 20)

