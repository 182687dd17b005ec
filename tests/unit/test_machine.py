"""The bench's bounds against closed forms: PyTorch's FLOP count of a linear layer, the
decode step's FLOPs and bytes from the model's shape, and the roofline's two regimes."""

import pytest
import torch

from polychromic.machine import (
    DecodeShape,
    counted_flops,
    decode_roofline,
    sampling_bound_seconds,
)


def test_counted_flops_of_a_linear_layer_forward_and_backward():
    layer = torch.nn.Linear(8, 5, bias=False)
    x = torch.randn(3, 8, requires_grad=True)
    assert counted_flops(lambda: layer(x)) == 2 * 3 * 8 * 5
    # backward: the input's gradient and the weight's, each as costly as the forward
    assert counted_flops(lambda: layer(x).sum().backward()) == 3 * (2 * 3 * 8 * 5)


def test_the_roofline_is_bandwidth_bound_at_small_batches_and_compute_bound_at_large():
    shape = DecodeShape(matmul_parameters=1_000_000, layers=2, kv_width=8, query_width=16,
                        bytes_per_value=4)
    flops, bandwidth = 1e11, 1e10
    # batch 1, context 10: 2.00064e6 FLOPs (20 us) vs 4.00064e6 bytes (400 us): memory
    assert shape.flops(1, 10) == 2_000_000 + 4 * 2 * 10 * 16
    assert shape.bytes(1, 10) == 4 * (1_000_000 + 10 * 2 * 2 * 8)
    assert decode_roofline(shape, 1, 10, flops, bandwidth) == pytest.approx(
        1 / (shape.bytes(1, 10) / bandwidth))
    # batch 1000: 2.00064e9 FLOPs (20 ms) vs 4.64e6 bytes (0.46 ms): compute
    assert decode_roofline(shape, 1000, 10, flops, bandwidth) == pytest.approx(
        1000 / (shape.flops(1000, 10) / flops))


def test_the_sampling_bound_sums_the_roofline_of_the_rows_still_live():
    shape = DecodeShape(matmul_parameters=1000, layers=1, kv_width=2, query_width=2,
                        bytes_per_value=1)
    flops, bandwidth = 1e6, 1e4  # bandwidth-bound at these sizes
    # 2 prompts of width 3; samples of 2, 1 and 0 tokens: step 0 has 2 live rows at context
    # 4, step 1 one row at context 5
    expected = (2 * 1000 * 2 * 3 / flops
                + shape.bytes(2, 4) / bandwidth + shape.bytes(1, 5) / bandwidth)
    assert shape.bytes(2, 4) / bandwidth > shape.flops(2, 4) / flops
    assert sampling_bound_seconds(shape, 2, 3, [2, 1, 0], flops, bandwidth) == pytest.approx(
        expected)


def test_the_cpu_fused_attention_counts_as_the_math_kernel_does():
    """The counter sees the math kernel's two batched products; the fused CPU kernel gets
    the same count from machine.cpu_attention_flops (grouped keys: 2 heads for 4 queries)."""
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.nn.functional import scaled_dot_product_attention as attention

    q, k, v = torch.randn(2, 4, 5, 8), torch.randn(2, 2, 7, 8), torch.randn(2, 2, 7, 8)
    with sdpa_kernel(SDPBackend.MATH):
        math = counted_flops(lambda: attention(q, k, v, enable_gqa=True))
    with sdpa_kernel(SDPBackend.FLASH_ATTENTION):
        fused = counted_flops(lambda: attention(q, k, v, enable_gqa=True))
    assert math == fused == 2 * (2 * 2 * 4 * 5 * 7 * 8)
