"""The `runtime` section on this CPU machine, and gradient checkpointing under the polychromic
update's split gradients."""

import pytest
import torch

from polychromic.config import UserError, load_section
from polychromic.runtime import Runtime, runtime_config
from polychromic.training import TrainConfig, training_arguments
from tests.test_polychromic import gradients, lora_parameters, on_device, setup, trainer_for


@pytest.fixture(autouse=True)
def tf32_restored():
    """runtime_config sets TF32 process-wide: leave the other tests' fp32 matmuls alone."""
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


CPU_ONLY = pytest.mark.skipif(torch.cuda.is_available() or torch.backends.mps.is_available(),
                              reason="checks what a machine without an accelerator resolves")


@CPU_ONLY
def test_defaults_resolve_to_the_cpu_in_fp32(tmp_path):
    runtime = runtime_config({})
    assert (runtime.model_device(), runtime.metrics_device()) == ("cpu", "cpu")
    assert runtime.mixed_precision() == "fp32" and runtime.quantization_config() is None
    args = training_arguments(TrainConfig(), tmp_path, seed=0, runtime=runtime)
    assert args.use_cpu and not args.bf16 and not args.fp16 and not args.gradient_checkpointing
    with runtime.autocast():
        assert not torch.is_autocast_enabled("cpu")


@CPU_ONLY
def test_bf16_asked_for_on_the_cpu_is_autocast(tmp_path):
    runtime = runtime_config({"runtime": {"precision": "bf16", "gradient_checkpointing": True}})
    args = training_arguments(TrainConfig(), tmp_path, seed=0, runtime=runtime)
    assert args.bf16 and args.gradient_checkpointing
    assert args.gradient_checkpointing_kwargs == {"use_reentrant": False}
    with runtime.autocast():
        assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == torch.bfloat16


@CPU_ONLY
@pytest.mark.parametrize("section,message", [
    ({"device": "cuda"}, "'runtime.device' cuda: no such device on this machine"),
    ({"metric_device": "cuda"}, "'runtime.metric_device' cuda: no such device"),
    ({"precision": "fp16"}, "'runtime.precision' fp16 needs a CUDA device"),
    ({"quantization": "4bit"}, "'runtime.quantization' 4bit needs a CUDA device"),
])
def test_what_this_machine_cannot_do_is_one_clear_error(section, message):
    runtime = runtime_config({"runtime": section})
    with pytest.raises(UserError, match=message):
        runtime.model_device(), runtime.metrics_device(), runtime.mixed_precision()
        runtime.quantization_config()


@pytest.mark.parametrize("section,message", [
    ({"device": "tpu"}, "'runtime.device' must be one of auto, cuda, mps, cpu"),
    ({"precision": "int8"}, "'runtime.precision' must be one of"),
    ({"quantization": "8bit"}, "'runtime.quantization' must be one of none, 4bit"),
    ({"tf32": "yes"}, "'runtime.tf32' must be"),
])
def test_bad_runtime_params(section, message):
    with pytest.raises(UserError, match=message):
        load_section(Runtime, {"runtime": section}, "runtime")


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
