"""The `runtime` section on this CPU machine (gradient checkpointing under the polychromic
update's split gradients: tests/integration/test_runtime.py)."""

import pytest
import torch

from polychromic import runtime as runtime_module
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


CPUINFO = """processor\t: 0
vendor_id\t: GenuineIntel
model name\t: Intel(R) Xeon(R) Platinum 8488C
flags\t\t: fpu sse2 avx2 avx512f avx512_bf16 amx_tile amx_bf16

processor\t: 1
model name\t: another
flags\t\t: fpu
"""


def with_cpuinfo(monkeypatch, tmp_path, text: str) -> None:
    """/proc/cpuinfo replaced by `text` (the detection reads it once: the cache cleared)."""
    path = tmp_path / "cpuinfo"
    path.write_text(text)
    monkeypatch.setattr(runtime_module, "CPUINFO", path)
    runtime_module.cpu_info.cache_clear()
    monkeypatch.setattr(runtime_module.torch.cuda, "is_available", lambda: False)


@pytest.fixture(autouse=True)
def cpuinfo_cache_cleared():
    yield
    runtime_module.cpu_info.cache_clear()


def test_cpuinfo_is_read_from_the_first_processor(monkeypatch, tmp_path):
    with_cpuinfo(monkeypatch, tmp_path, CPUINFO)
    assert runtime_module.cpu_info()["model name"] == "Intel(R) Xeon(R) Platinum 8488C"
    assert runtime_module.cpu_flags() == {"fpu", "sse2", "avx2", "avx512f", "avx512_bf16",
                                          "amx_tile", "amx_bf16"}
    assert runtime_module.machine_description("cpu") == "Intel(R) Xeon(R) Platinum 8488C"


@pytest.mark.parametrize("text,native", [
    (CPUINFO, True),                                             # Sapphire Rapids: AMX
    ("flags\t: fpu avx2 avx512f avx512_bf16\n", True),           # Cooper Lake, Zen 4
    ("flags\t: fpu avx2 avx512f avx512bw avx512_vnni\n", False),  # AVX-512 without bf16
    ("flags\t: fpu avx2 fma\n", False),                          # AVX2 only (this VM, today)
    ("Features\t: fp asimd bf16 i8mm\n", True),                  # Arm with BF16 (Graviton 3)
    ("Features\t: fp asimd\n", False),
    ("", False),                                                 # no /proc/cpuinfo fields
])
def test_auto_resolves_by_the_cpus_native_bf16(monkeypatch, tmp_path, text, native):
    with_cpuinfo(monkeypatch, tmp_path, text)
    assert runtime_module.native_bf16("cpu") is native
    assert runtime_module.best_native_precision("cpu") == ("bf16" if native else "fp32")
    runtime = Runtime(device="cpu")
    assert runtime.mixed_precision() == runtime_module.AUTO_PRECISION[native] == "fp32"
    assert runtime.weights_dtype() is None
    bf16 = Runtime(device="cpu", precision="bf16")
    assert bf16.mixed_precision() == "bf16" and bf16.weights_dtype() == torch.bfloat16


def test_a_missing_cpuinfo_means_no_native_bf16(monkeypatch, tmp_path):
    monkeypatch.setattr(runtime_module, "CPUINFO", tmp_path / "absent")
    runtime_module.cpu_info.cache_clear()
    assert runtime_module.cpu_info() == {} and not runtime_module.native_bf16("cpu")


def test_bf16_on_a_cpu_without_it_warns_once(monkeypatch, tmp_path, capsys):
    with_cpuinfo(monkeypatch, tmp_path, "flags\t: fpu avx2\n")
    runtime_module.warn_once.cache_clear()
    runtime = Runtime(device="cpu", precision="bf16")
    assert runtime.mixed_precision() == runtime.mixed_precision() == "bf16"
    err = capsys.readouterr().err
    assert err.count("warning:") == 1
    assert "'runtime.precision' bf16: this CPU has no native bf16" in err
    with_cpuinfo(monkeypatch, tmp_path, CPUINFO)
    runtime_module.warn_once.cache_clear()
    assert Runtime(device="cpu", precision="bf16").mixed_precision() == "bf16"
    assert capsys.readouterr().err == ""


@pytest.mark.parametrize("capability,native", [((9, 0), True), ((8, 0), True),
                                               ((7, 5), False)])
def test_a_gpu_has_native_bf16_from_ampere_on(monkeypatch, capability, native):
    monkeypatch.setattr(runtime_module.torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(runtime_module.torch.cuda, "get_device_capability", lambda: capability)
    assert runtime_module.native_bf16("cuda") is native
    assert runtime_module.best_native_precision("cuda") == ("bf16" if native else "fp32")
    assert not runtime_module.native_bf16("mps")


def test_attention_is_passed_to_transformers_or_refused(monkeypatch, tiny_model_dir):
    from polychromic.modeling import load_model

    assert runtime_config({}).attention_kwargs() == {}  # auto: transformers' choice
    eager = runtime_config({"runtime": {"attention": "eager"}})
    assert eager.attention_kwargs() == {"attn_implementation": "eager"}
    assert load_model(tiny_model_dir, runtime=eager).config._attn_implementation == "eager"
    assert load_model(tiny_model_dir).config._attn_implementation == "sdpa"
    with pytest.raises(UserError, match=r"'runtime.attention' must be one of auto, eager"):
        runtime_config({"runtime": {"attention": "flash"}})
    monkeypatch.setattr(runtime_module.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(UserError, match=r"'runtime.attention'.*needs the package flash-attn"):
        runtime_config({"runtime": {"attention": "flash_attention_2"}})


@CPU_ONLY
def test_flash_attention_needs_a_cuda_device(monkeypatch):
    monkeypatch.setattr(runtime_module.importlib.util, "find_spec", lambda name: object())
    flash = runtime_config({"runtime": {"attention": "flash_attention_2"}})
    with pytest.raises(UserError, match="flash_attention_2 needs a CUDA device"):
        flash.attention_kwargs()
