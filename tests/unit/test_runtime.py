"""The `runtime` section on this CPU machine (gradient checkpointing under the polychromic
update's split gradients: tests/integration/test_runtime.py)."""

import pytest
import torch

from polychromic.config import UserError, load_section
from polychromic.runtime import Runtime, runtime_config
from polychromic.settings import TrainConfig
from polychromic.training import training_arguments


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


RESOLVED = ("model_device", "metrics_device", "mixed_precision", "quantization_config")
"""What a stage resolves from the section, in this order."""


@CPU_ONLY
@pytest.mark.parametrize("section,refused_by,message", [
    ({"device": "cuda"}, "model_device", "'runtime.device' cuda: no such device on this machine"),
    ({"metric_device": "cuda"}, "metrics_device", "'runtime.metric_device' cuda: no such device"),
    ({"precision": "fp16"}, "mixed_precision", "'runtime.precision' fp16 needs a CUDA device"),
    ({"quantization": "4bit"}, "quantization_config",
     "'runtime.quantization' 4bit needs a CUDA device"),
])
def test_what_this_machine_cannot_do_is_one_clear_error(section, refused_by, message):
    """Each setting is refused where it is resolved, and not before."""
    runtime = runtime_config({"runtime": section})
    for name in RESOLVED[:RESOLVED.index(refused_by)]:
        getattr(runtime, name)()
    with pytest.raises(UserError, match=message):
        getattr(runtime, refused_by)()


@pytest.mark.parametrize("section,message", [
    ({"device": "tpu"}, "'runtime.device' must be one of auto, cuda, mps, cpu"),
    ({"precision": "int8"}, "'runtime.precision' must be one of"),
    ({"quantization": "8bit"}, "'runtime.quantization' must be one of none, 4bit"),
    ({"tf32": "yes"}, "'runtime.tf32' must be"),
])
def test_bad_runtime_params(section, message):
    with pytest.raises(UserError, match=message):
        load_section(Runtime, {"runtime": section}, "runtime")
