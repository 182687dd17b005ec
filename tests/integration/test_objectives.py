"""The objectives issue's methods on the tiny Llama: each samples a group per prompt, asks
the domain's checker about exactly those samples (the batch's first prompts_per_step
records), turns its answers into the advantages of `advantages.py`, and gives a term with
gradient; without a checker it refuses to build. (Each advantage's unbiasedness:
tests/unit/test_advantages.py.)"""

import numpy as np
import pytest
import torch

from polychromic import advantages as library
from polychromic.domains import Checker, Verdict
from polychromic.methods import get_method
from polychromic.modeling import PadCollator
from tests.helpers import (
    PROMPTS,
    arguments,
    domain_sampling,
    gradients,
    lora_parameters,
    on_device,
    setup,
)

RECORDS = [{"id": f"r{i}", "prompt": p, "references": ["ok"], "task": {}}
           for i, p in enumerate(PROMPTS)]


class Scripted(Checker):
    """Quality by length, class by first word, pass when the sample has an even length."""

    def __init__(self):
        self.calls = []

    def rewards(self, items):
        self.calls.append(("rewards", items))
        return [[min(1.0, len(s) / 12) for s in samples] for _, samples in items]

    def classes(self, items):
        self.calls.append(("classes", items))
        return [[(s.split() or [""])[0] for s in samples] for _, samples in items]

    def verdicts(self, items):
        self.calls.append(("verdicts", items))
        return [[Verdict(passed=len(s) % 2 == 0) for s in samples] for _, samples in items]


def trainer_of(name, model_dir, tmp_path, checker, **settings):
    method = get_method(name)
    tokenizer, model, data, _ = setup(model_dir)
    config = method.config(**{"max_new_tokens": 6, "eval_prompts": 1, "generate_every": 1,
                              "n_generations": 4, "prompts_per_step": 2,
                              "advantage_scaling": "none", **settings})
    config.check(name)
    trainer = method.trainer_class()(
        model=model, args=arguments(tmp_path), train_dataset=data,
        data_collator=PadCollator(tokenizer.pad_token_id), term=config, tokenizer=tokenizer,
        checker=checker, records=RECORDS, sampling=domain_sampling())
    return trainer, model, data, tokenizer


@pytest.mark.parametrize("name,settings,expected", [
    ("quality_diversity", {"advantage": "marginal"}, "quality_diversity_advantages"),
    ("quality_diversity", {"advantage": "darling"}, "darling_advantages"),
    ("passk", {"k": 2}, "passk_advantages"),
    ("set_objective", {"set_size": 2}, "set_objective_advantages"),
])
def test_each_method_asks_the_checker_about_its_samples(untied_model_dir, tmp_path,
                                                         monkeypatch, name, settings, expected):
    module = __import__(f"polychromic.methods.{name}", fromlist=["x"])
    seen = []
    real = getattr(library, expected)
    monkeypatch.setattr(module, expected, lambda *a: seen.append(a) or real(*a))
    checker = Scripted()
    trainer, model, data, tokenizer = trainer_of(name, untied_model_dir, tmp_path, checker,
                                                 **settings)
    batch = on_device(model, PadCollator(tokenizer.pad_token_id)(data[:4]))
    model.train()
    term, _ = trainer.sampled_term(model, batch, torch.tensor([5, 2, 7, 0]))
    asked = [items for _, items in checker.calls]
    assert all([r["id"] for r, _ in items] == ["r5", "r2"] for items in asked)
    assert all(len(samples) == 4 for items in asked for _, samples in items)
    groups = [samples for _, samples in asked[0]]
    if name == "passk":
        assert seen == [([len(s) % 2 == 0 for s in g], 2) for g in groups]
    elif name == "set_objective":
        assert seen == [([min(1.0, len(s) / 12) for s in g], [(s.split() or [""])[0] for s in g],
                         2) for g in groups]
    else:
        assert seen == [([min(1.0, len(s) / 12) for s in g], [(s.split() or [""])[0] for s in g])
                        for g in groups]
    flat, _ = trainer.advantages(groups, torch.tensor([5, 2]))
    assert np.allclose(flat, np.concatenate([real(*args) for args in seen[:2]]))
    assert term.requires_grad
    if np.any(flat):  # a group with signal moves the LoRA weights
        grads = gradients(term, lora_parameters(model))
        assert any(g.abs().sum() > 0 for g in grads.values())


def test_without_a_checker_they_refuse_to_build(untied_model_dir, tmp_path):
    for name, settings in (("quality_diversity", {}), ("passk", {"k": 2}),
                           ("set_objective", {"set_size": 2})):
        with pytest.raises(ValueError, match="needs the domain's checker"):
            trainer_of(name, untied_model_dir, tmp_path, None, **settings)


def test_passk_anneals_k_over_training(untied_model_dir, tmp_path):
    trainer, *_ = trainer_of("passk", untied_model_dir, tmp_path, Scripted(), k=3, k_end=1)
    trainer.state.max_steps = 5
    ks = []
    for step in range(5):
        trainer.state.global_step = step
        ks.append(trainer.current_k())
    assert ks == [3, 3, 2, 2, 1]  # 3 - 2·step/4, rounded half up
