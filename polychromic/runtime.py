"""Where and how the models run: params.yaml's `runtime` section, read by every stage that
loads a model (train, generate, evaluate) and by the benchmarks.

The defaults suit any machine: the GPU when there is one (TF32 matrix products), else the
CPU; the metric models (sentence encoder, BERTScore) on the CPU, where they are fast enough
and give the same numbers on every machine.

Precision. `fp32` computes in the weights' own dtype (`base_model.dtype`: bfloat16 for an
8B model on a GPU). `bf16` stores the frozen base weights in bfloat16 (the LoRA weights,
their gradients and the optimiser state stay fp32) and runs training and sampling under
bf16 autocast, so that no product casts a weight and the KV cache is bf16. `auto` resolves
to fp32 on every machine until the fp32-vs-bf16 study on validation prompts has been run
on a machine with native bf16 (docs/precision.md); a CPU without native bf16 (no
avx512_bf16 or amx_bf16) runs bf16 emulated, several times slower than fp32. The resolved
precision is written into every metrics file and MLflow run: results computed in
different precisions are different draws.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import os
import platform
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import torch

from polychromic.config import UserError, load_section, require

DEVICES = ("auto", "cuda", "mps", "cpu")
PRECISIONS = ("auto", "bf16", "fp16", "fp32")
QUANTIZATIONS = ("none", "4bit")
# transformers' attn_implementation: auto leaves it to transformers (sdpa where the model
# supports it); flash_attention_2 needs the flash-attn package and a CUDA GPU
ATTENTIONS = ("auto", "eager", "sdpa", "flash_attention_2")
# CPU flags (Linux's /proc/cpuinfo) of native bf16 products: x86's AVX-512 BF16 and AMX, Arm's
# BF16 extension. Without them bf16 is emulated (6-140x slower than fp32, docs/precision.md).
NATIVE_BF16_CPU_FLAGS = frozenset({"avx512_bf16", "amx_bf16", "bf16"})
# What `auto` resolves to, by whether the device has native bf16: fp32 on both until the
# precision study says bf16 leaves the answer where it is (docs/precision.md).
AUTO_PRECISION = {True: "fp32", False: "fp32"}
CPUINFO = Path("/proc/cpuinfo")


@functools.cache
def cpu_info() -> dict[str, str]:
    """The first processor's fields of Linux's /proc/cpuinfo (empty elsewhere)."""
    try:
        text = CPUINFO.read_text()
    except OSError:
        return {}
    fields: dict[str, str] = {}
    for line in text.splitlines():
        if not line.strip() and fields:
            break
        name, _, value = line.partition(":")
        fields.setdefault(name.strip(), value.strip())
    return fields


def cpu_flags() -> frozenset[str]:
    """This CPU's feature flags (x86: flags, Arm: Features)."""
    info = cpu_info()
    return frozenset((info.get("flags") or info.get("Features") or "").split())


def native_bf16(device: str) -> bool:
    """Whether `device` multiplies bf16 matrices in hardware: a CUDA GPU from Ampere on, a
    CPU with the flags above; MPS no (an M1 has no bf16, and is not told apart here)."""
    if device == "cuda":
        return torch.cuda.is_available() and torch.cuda.get_device_capability()[0] >= 8
    if device == "cpu":
        return bool(cpu_flags() & NATIVE_BF16_CPU_FLAGS)
    return False


def best_native_precision(device: str) -> str:
    """The precision with the highest matrix-product peak that `device` runs natively."""
    return "bf16" if native_bf16(device) else "fp32"


@dataclass
class Runtime:
    device: str = field(default="auto", metadata={
        "help": "where the LLM runs: auto (cuda, then mps, then cpu) | cuda | mps | cpu"})
    precision: str = field(default="auto", metadata={
        "help": "auto (fp32 for now: docs/precision.md) | bf16 (base weights stored in bf16, "
                "bf16 autocast; LoRA weights fp32) | fp16 (autocast, CUDA only) | fp32 (the "
                "weights' own dtype, base_model.dtype)"})
    tf32: bool = field(default=True, metadata={
        "help": "TF32 matrix products on NVIDIA GPUs from Ampere on (no effect elsewhere)"})
    gradient_checkpointing: bool = field(default=False, metadata={
        "help": "recompute activations in the backward pass: less memory, more time"})
    metric_device: str = field(default="cpu", metadata={
        "help": "the sentence encoder and BERTScore: cpu | auto | cuda | mps"})
    quantization: str = field(default="none", metadata={
        "help": "none | 4bit (QLoRA: NF4 base weights through bitsandbytes; CUDA only)"})
    attention: str = field(default="auto", metadata={
        "help": "the LLM's attention kernel: auto (transformers' choice: sdpa) | eager | sdpa | "
                "flash_attention_2 (pip install flash-attn; CUDA only)"})
    processes: int = field(default=1, metadata={
        "help": "processes, one per GPU (gloo on the CPU), under torch.distributed.run: train "
                "runs DDP (each takes train.batch_size examples a step); generate shares out "
                "its batches of prompts (the same samples as one process)"})

    def check(self, key: str) -> None:
        require(self.processes >= 1, f"{key}.processes", "must be >= 1")
        for name, allowed in (("device", DEVICES), ("metric_device", DEVICES),
                              ("precision", PRECISIONS), ("quantization", QUANTIZATIONS),
                              ("attention", ATTENTIONS)):
            require(getattr(self, name) in allowed, f"{key}.{name}",
                    f"must be one of {', '.join(allowed)}")
        if self.attention == "flash_attention_2":
            require(importlib.util.find_spec("flash_attn") is not None, f"{key}.attention",
                    "flash_attention_2 needs the package flash-attn (pip install flash-attn "
                    "--no-build-isolation, on a CUDA machine)")

    def model_device(self) -> str:
        return available(self.device, "runtime.device")

    def metrics_device(self) -> str:
        return available(self.metric_device, "runtime.metric_device")

    def mixed_precision(self) -> str:
        """The precision the model computes in: bf16, fp16 or fp32, auto resolved."""
        device = self.model_device()
        if self.precision == "fp16" and device != "cuda":
            raise UserError(f"params.yaml: 'runtime.precision' fp16 needs a CUDA device "
                            f"(the model runs on {device}): use bf16 or fp32")
        if self.precision == "bf16" and device == "cuda" and not torch.cuda.is_bf16_supported():
            raise UserError("params.yaml: 'runtime.precision' bf16: this GPU has no bf16 "
                            "(before Ampere): use fp16 or fp32")
        if self.precision == "auto":
            return AUTO_PRECISION[native_bf16(device)]
        if self.precision == "bf16" and device == "cpu" and not native_bf16(device):
            warn_once("params.yaml: 'runtime.precision' bf16: this CPU has no native bf16 "
                      f"({'/'.join(sorted(NATIVE_BF16_CPU_FLAGS))}): it runs emulated, "
                      "several times slower than fp32")
        return self.precision

    def weights_dtype(self) -> torch.dtype | None:
        """The dtype to store the frozen base weights in, or None for their own: bf16 under
        bf16, so that no product casts a weight (unquantised weights only)."""
        if self.mixed_precision() == "bf16" and self.quantization == "none":
            return torch.bfloat16
        return None

    def apply(self) -> None:
        """Process-wide settings: TF32 for matrix products and cuDNN."""
        if torch.cuda.is_available():
            torch.backends.cuda.matmul.allow_tf32 = self.tf32
            torch.backends.cudnn.allow_tf32 = self.tf32

    def autocast(self):
        """The context that sampling and scoring run in: autocast to the mixed precision on
        the model's device, nothing in fp32."""
        precision = self.mixed_precision()
        if precision == "fp32":
            return contextlib.nullcontext()
        dtype = torch.bfloat16 if precision == "bf16" else torch.float16
        return torch.autocast(self.model_device(), dtype=dtype)

    def attention_kwargs(self) -> dict:
        """from_pretrained's attn_implementation, when not left to transformers."""
        if self.attention == "auto":
            return {}
        if self.attention == "flash_attention_2" and self.model_device() != "cuda":
            raise UserError("params.yaml: 'runtime.attention' flash_attention_2 needs a CUDA "
                            f"device (the model runs on {self.model_device()}): use auto")
        return {"attn_implementation": self.attention}

    def quantization_config(self):
        """transformers' BitsAndBytesConfig for 4-bit loading, or None; bitsandbytes is only
        imported when asked for."""
        if self.quantization == "none":
            return None
        if self.model_device() != "cuda":
            raise UserError("params.yaml: 'runtime.quantization' 4bit needs a CUDA device "
                            f"(the model runs on {self.model_device()}): set it to none")
        if importlib.util.find_spec("bitsandbytes") is None:
            raise UserError("params.yaml: 'runtime.quantization' 4bit needs the package "
                            "bitsandbytes: pip install bitsandbytes")
        from transformers import BitsAndBytesConfig

        compute = torch.bfloat16 if self.mixed_precision() == "bf16" else torch.float16
        return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4",
                                  bnb_4bit_use_double_quant=True,
                                  bnb_4bit_compute_dtype=compute)


@functools.cache
def warn_once(message: str) -> None:
    print(f"warning: {message}", file=sys.stderr)


def machine_description(device: str) -> str:
    """The device in words, for the records of a result: results from different machines
    (and precisions) are different draws."""
    if device == "cuda":
        return torch.cuda.get_device_name()
    return cpu_info().get("model name") or platform.processor() or platform.machine()


def available(device: str, key: str) -> str:
    """`device` with auto resolved; an explicit device that this machine lacks is an error."""
    has = {"cuda": torch.cuda.is_available(), "mps": torch.backends.mps.is_available(),
           "cpu": True}
    if device == "auto":
        return next(name for name in ("cuda", "mps", "cpu") if has[name])
    if not has[device]:
        build = f"torch {torch.__version__}"
        raise UserError(f"params.yaml: '{key}' {device}: no such device on this machine "
                        f"({build}); use auto or cpu")
    return device


def runtime_config(params: dict, only: tuple[str, ...] | None = None) -> Runtime:
    """The checked `runtime` section (all defaults where params.yaml has none), applied.
    `only`: read just these keys (the rest keep their defaults), those a stage tracks."""
    runtime = (load_section(Runtime, params, "runtime", only=only) if "runtime" in params
               else Runtime())
    runtime.apply()
    return runtime


def relaunch(module: str, processes: int, argv: list[str]) -> int:
    """Stage `module` again under torch.distributed.run (what `accelerate launch --multi_gpu`
    runs), one process per GPU or, on the CPU, per share of the cores; its exit status."""
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone",
               f"--nproc_per_node={processes}", "-m", module, *argv]
    return subprocess.run(command).returncode


def launched() -> bool:
    """Whether this process is one of torch.distributed.run's (or accelerate's)."""
    return "LOCAL_RANK" in os.environ
