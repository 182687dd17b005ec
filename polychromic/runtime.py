"""Where and how the models run: params.yaml's `runtime` section, read by every stage that
loads a model (train, generate, evaluate) and by the benchmarks.

The defaults suit any machine: the GPU when there is one (TF32 matrix products), else the
CPU; the model computes in its weights' own dtype (`base_model.dtype`: bfloat16 for an 8B
model on a GPU); the metric models (sentence encoder, BERTScore) on the CPU, where they are
fast enough and give the same numbers on every machine. Autocast (`precision: bf16`) is a
choice, not the default: on an H200, SmolLM2-135M's fp32 LoRA step took 0.18 s and 0.97 s
under bf16 autocast (a small model's time is kernel launches, which autocast multiplies).
"""

from __future__ import annotations

import contextlib
import importlib.util
from dataclasses import dataclass, field

import torch

from polychromic.config import UserError, load_section, require

DEVICES = ("auto", "cuda", "mps", "cpu")
PRECISIONS = ("auto", "bf16", "fp16", "fp32")
QUANTIZATIONS = ("none", "4bit")


@dataclass
class Runtime:
    device: str = field(default="auto", metadata={
        "help": "where the LLM runs: auto (cuda, then mps, then cpu) | cuda | mps | cpu"})
    precision: str = field(default="auto", metadata={
        "help": "autocast of training and sampling: auto (none: the weights' own dtype, "
                "base_model.dtype) | bf16 | fp16 (CUDA only) | fp32 (none)"})
    tf32: bool = field(default=True, metadata={
        "help": "TF32 matrix products on NVIDIA GPUs from Ampere on (no effect elsewhere)"})
    gradient_checkpointing: bool = field(default=False, metadata={
        "help": "recompute activations in the backward pass: less memory, more time"})
    metric_device: str = field(default="cpu", metadata={
        "help": "the sentence encoder and BERTScore: cpu | auto | cuda | mps"})
    quantization: str = field(default="none", metadata={
        "help": "none | 4bit (QLoRA: NF4 base weights through bitsandbytes; CUDA only)"})
    processes: int = field(default=1, metadata={
        "help": "training processes (DDP through torch.distributed.run: one per GPU, gloo on "
                "the CPU); each takes train.batch_size examples a step"})

    def check(self, key: str) -> None:
        require(self.processes >= 1, f"{key}.processes", "must be >= 1")
        for name, allowed in (("device", DEVICES), ("metric_device", DEVICES),
                              ("precision", PRECISIONS), ("quantization", QUANTIZATIONS)):
            require(getattr(self, name) in allowed, f"{key}.{name}",
                    f"must be one of {', '.join(allowed)}")

    def model_device(self) -> str:
        return available(self.device, "runtime.device")

    def metrics_device(self) -> str:
        return available(self.metric_device, "runtime.metric_device")

    def mixed_precision(self) -> str:
        """The autocast dtype: bf16, fp16, or fp32 for none (what auto means)."""
        device = self.model_device()
        if self.precision == "fp16" and device != "cuda":
            raise UserError(f"params.yaml: 'runtime.precision' fp16 needs a CUDA device "
                            f"(the model runs on {device}): use bf16 or fp32")
        if self.precision == "bf16" and device == "cuda" and not torch.cuda.is_bf16_supported():
            raise UserError("params.yaml: 'runtime.precision' bf16: this GPU has no bf16 "
                            "(before Ampere): use fp16 or fp32")
        return "fp32" if self.precision == "auto" else self.precision

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


def runtime_config(params: dict) -> Runtime:
    """The checked `runtime` section (all defaults where params.yaml has none), applied."""
    runtime = load_section(Runtime, params, "runtime") if "runtime" in params else Runtime()
    runtime.apply()
    return runtime
