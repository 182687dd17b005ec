"""The bench's decode-step model against the tiny Llama: its shape read from the model, and
its FLOPs against what PyTorch counts for a real decode step."""

import torch

from polychromic.machine import DecodeShape, counted_flops


def test_the_decode_shape_of_the_tiny_llama(tiny_model_dir):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    shape = DecodeShape.of(model)
    hidden, inner, vocab = 32, 64, model.config.vocab_size
    head = hidden // 4
    per_layer = hidden * hidden * 2 + 2 * hidden * (2 * head) + 3 * hidden * inner  # q,o; k,v
    assert shape == DecodeShape(2 * per_layer + vocab * hidden, 2, 2 * head, hidden, 4)


def test_decode_flops_are_what_pytorch_counts_for_a_decode_step(tiny_model_dir):
    """One new token per row after `cached` tokens: the counter's FLOPs are the shape's."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    batch, cached = 3, 7
    ids = torch.randint(0, 1000, (batch, cached))
    with torch.no_grad():
        cache = model(input_ids=ids, use_cache=True).past_key_values
        step = lambda: model(input_ids=ids[:, :1], past_key_values=cache, use_cache=True)  # noqa: E731
        counted = counted_flops(step)
    assert counted == DecodeShape.of(model).flops(batch, cached + 1)

