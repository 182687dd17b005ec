"""Gradient checkpointing under the polychromic update's split gradients, on the tiny Llama."""

import pytest
import torch

from tests.helpers import gradients, lora_parameters, on_device, setup, trainer_for


def test_gradient_checkpointing_leaves_the_split_gradients_unchanged(untied_model_dir,
                                                                       tmp_path):
    """The update differentiates the CE and diversity parts apart (autograd.grad): with
    non-reentrant checkpointing (what training_arguments asks for) both match a run
    without it."""
    tokenizer, model, data, config = setup(untied_model_dir, diversity_weight=0.5,
                                           n_generations=3)
    for name, p in model.named_parameters():
        if "lora_B" in name:
            p.data.normal_(0, 0.05)
    trainer = trainer_for(tmp_path, tokenizer, model, data, config)
    batch = on_device(model, trainer.data_collator(data[:4]))
    params = lora_parameters(model)
    results = []
    for checkpointing in (False, True):
        if checkpointing:
            model.gradient_checkpointing_enable(
                gradient_checkpointing_kwargs={"use_reentrant": False})
        model.train()
        trainer.scaler.running_ms = 0.01
        trainer.generator.manual_seed(3)
        trainer.logged.clear()
        grads = gradients(trainer.compute_loss(model, batch), params)
        results.append((grads, dict(trainer.logged)))
    (plain, plain_logged), (checkpointed, checkpointed_logged) = results
    assert model.is_gradient_checkpointing
    for name, grad in plain.items():
        torch.testing.assert_close(checkpointed[name], grad, rtol=1e-5, atol=1e-7)
    for key in ("diversity_grad_ratio", "diversity_grad_cosine", "quality_grad_norm"):
        assert checkpointed_logged[key] == pytest.approx(plain_logged[key], rel=1e-5)

