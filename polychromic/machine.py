"""This machine's limits and the bounds they put on the hot paths (used by `bench`).

- `matmul_peak`: FLOP/s of a large square matrix product on all threads, the compute limit;
- `read_bandwidth`: bytes/s of summing a tensor far larger than the caches, the memory limit
  of a decode step (it reads every weight once per step and writes almost nothing);
- `counted_flops`: the FLOPs that PyTorch's own counter sees in a function (matrix products
  and attention, forward and backward), so that MFU needs no hand formula per model;
- `decode_roofline`: the tokens per second a decode step at batch size b cannot beat, the
  lower of the compute bound and the bandwidth bound.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import torch


def best_seconds(run: Callable[[], object], repeats: int,
                 device: torch.device | str = "cpu") -> float:
    """The fastest of `repeats` timed calls, after one untimed call (caches, thread pool);
    on a GPU each call is waited for."""
    def timed() -> float:
        started = time.perf_counter()
        run()
        if torch.device(device).type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - started

    timed()
    return min(timed() for _ in range(repeats))


def matmul_peak(size: int = 2048, dtype: torch.dtype = torch.float32,
                device: torch.device | str = "cpu", repeats: int = 5) -> float:
    """FLOP/s of a `size` x `size` matrix product (2 size^3 FLOPs); the larger of `size`
    and twice it, where the larger still fits the caches' blocking better. A dtype that
    this machine only emulates (bf16 on a CPU without avx512_bf16: about 1 GFLOP/s) is
    measured on a product of about a second instead, so that the bench still ends."""
    probe = 512
    a = torch.randn(probe, probe, device=device).to(dtype)
    probed = 2 * probe**3 / best_seconds(lambda: torch.mm(a, a), 2, device)
    if probed < 5e9:  # native products run at tens of GFLOP/s even on one old core
        return probed
    best = 0.0
    for n in (size, 2 * size):
        a = torch.randn(n, n, device=device).to(dtype)
        b = torch.randn(n, n, device=device).to(dtype)
        out = torch.empty(n, n, dtype=dtype, device=device)
        best = max(best, 2 * n**3 / best_seconds(lambda a=a, b=b, out=out: torch.mm(a, b, out=out),
                                                  repeats, device))
    return best


def read_bandwidth(megabytes: int = 512, device: torch.device | str = "cpu",
                   repeats: int = 5) -> float:
    """Bytes/s read by summing a float32 tensor of `megabytes` (far beyond any cache)."""
    data = torch.ones(megabytes * 2**20 // 4, device=device)
    return data.numel() * 4 / best_seconds(data.sum, repeats, device)


def cpu_attention_flops(query, key, value, *args, out_shape=None, **kwargs) -> int:
    """The CPU's fused attention (which PyTorch's counter has no formula for): the scores
    and the weighted values, 2 FLOPs per multiply-add each; shapes (batch, heads, length,
    width), keys and values possibly with fewer heads (grouped queries)."""
    batch, heads, queries, width = query
    return 2 * 2 * batch * heads * queries * key[-2] * width


def cpu_attention_backward_flops(grad_out, query, key, value, *args, out_shape=None,
                                 **kwargs) -> int:
    """Its backward: the scores again, then the gradients of the weights, the values, the
    queries and the keys, each a product as large as one of the forward's two."""
    return 5 * cpu_attention_flops(query, key, value) // 2


def counted_flops(run: Callable[[], object]) -> int:
    """The FLOPs PyTorch's counter attributes to `run()` (matrix products, attention and
    convolutions; element-wise work is not counted, as in every MFU figure)."""
    from torch.utils.flop_counter import FlopCounterMode

    aten = torch.ops.aten
    mapping = {aten._scaled_dot_product_flash_attention_for_cpu: cpu_attention_flops,
               aten._scaled_dot_product_flash_attention_for_cpu_backward:
                   cpu_attention_backward_flops}
    with FlopCounterMode(display=False, custom_mapping=mapping) as counter:
        run()
    return counter.get_total_flops()


@dataclass(frozen=True)
class DecodeShape:
    """What a decode step of a decoder-only transformer reads and computes."""

    matmul_parameters: int  # weights used in matrix products, the output head included
    layers: int
    kv_width: int           # key (= value) width per token per layer: kv heads x head size
    query_width: int        # query width per token per layer: heads x head size
    bytes_per_value: int    # of weights and cache alike (4 for fp32)

    @classmethod
    def of(cls, model: torch.nn.Module) -> DecodeShape:
        config = model.config
        head = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
        kv_heads = getattr(config, "num_key_value_heads", None) or config.num_attention_heads
        matmul = sum(m.weight.numel() for m in model.modules()
                     if isinstance(m, torch.nn.Linear))
        return cls(matmul, config.num_hidden_layers, kv_heads * head,
                   config.num_attention_heads * head, next(model.parameters()).element_size())

    def flops(self, batch: int, context: int) -> float:
        """FLOPs of one decode step: the matrix products (2 per weight per row) and the
        attention over `context` cached tokens (scores and weighted values, 2 x 2 per
        query value per cached token)."""
        return batch * (2 * self.matmul_parameters + 4 * self.layers * context * self.query_width)

    def bytes(self, batch: int, context: int) -> float:
        """Bytes one decode step must read: every weight once, and each row's cached keys
        and values."""
        return self.bytes_per_value * (
            self.matmul_parameters + batch * context * 2 * self.layers * self.kv_width)


def decode_roofline(shape: DecodeShape, batch: int, context: int, flops_per_second: float,
                    bytes_per_second: float) -> float:
    """Tokens per second no decode step at this batch and context can exceed: batch
    tokens per step, in the longer of its compute time and its memory time."""
    seconds = max(shape.flops(batch, context) / flops_per_second,
                  shape.bytes(batch, context) / bytes_per_second)
    return batch / seconds


def sampling_bound_seconds(shape: DecodeShape, prompts: int, width: int, lengths: list[int],
                           flops_per_second: float, bytes_per_second: float) -> float:
    """The least time a batch of sampling can take on this machine: the prompts' forward
    (`prompts` rows of `width` padded tokens, compute-bound) and then one decode step per
    new token, each at the roofline of the rows still live (a sample of `lengths[i]`
    tokens leaves the batch after its last) and of the cache's length at that step."""
    seconds = 2 * shape.matmul_parameters * prompts * width / flops_per_second
    for step in range(max(lengths, default=0)):
        live = sum(length > step for length in lengths)
        seconds += live / decode_roofline(shape, live, width + step + 1, flops_per_second,
                                          bytes_per_second)
    return seconds
