"""Batched sampling on the tiny Llama."""

import torch
from transformers import AutoTokenizer

from polychromic.domains import get_domain
from polychromic.generate import (
    GenerateConfig,
    generate_shared_prefix,
    prompts_with_references,
    sample,
)
from polychromic.modeling import build_messages, load_model, prompt_text

DOMAIN = get_domain("replies")
PROMPTS = ["hi", "what are you doing this weekend? anything fun planned with the family?"]


def setup(tiny_model_dir):
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    tokenizer.padding_side = "left"
    model = load_model(tiny_model_dir).eval()
    texts = [prompt_text(tokenizer, build_messages(DOMAIN, p)) for p in PROMPTS]
    return tokenizer, model, texts


def test_shared_prefix_generation_equals_plain_generate(tiny_model_dir):
    """Encoding each prompt once and copying its cache to its n rows must give what plain
    `generate` gives on the n-fold repeated prompts (prompts of unequal length, so left
    padding and positions are exercised): token for token when greedy, and under sampling
    with the same seed."""
    tokenizer, model, texts = setup(tiny_model_dir)
    encoded = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)
    ids, mask = encoded["input_ids"], encoded["attention_mask"]
    kwargs = {"do_sample": False, "max_new_tokens": 8, "pad_token_id": tokenizer.pad_token_id,
              "output_logits": True, "return_dict_in_generate": True}
    with torch.inference_mode():
        plain = model.generate(input_ids=ids.repeat_interleave(3, dim=0),
                               attention_mask=mask.repeat_interleave(3, dim=0), **kwargs)
    shared = generate_shared_prefix(model, ids, mask, 3, **kwargs)
    assert torch.equal(shared.sequences, plain.sequences)
    for step_shared, step_plain in zip(shared.logits, plain.logits, strict=True):
        torch.testing.assert_close(step_shared, step_plain, rtol=1e-4, atol=1e-5)
    kwargs.update(output_logits=False, return_dict_in_generate=False)

    kwargs.update(do_sample=True, temperature=1.0, top_p=0.9)
    torch.manual_seed(5)
    with torch.inference_mode():
        plain = model.generate(**encoded, num_return_sequences=3, **kwargs)
    torch.manual_seed(5)
    assert torch.equal(generate_shared_prefix(model, ids, mask, 3, **kwargs), plain)


def test_sample_returns_n_samples_per_prompt_reproducibly(tiny_model_dir):
    tokenizer, model, texts = setup(tiny_model_dir)
    config = GenerateConfig(n=4, max_new_tokens=5)
    first = sample(model, tokenizer, texts, config, seed=1)
    assert [len(s) for s in first] == [4, 4]
    assert sample(model, tokenizer, texts, config, seed=1) == first
    assert sample(model, tokenizer, texts, config, seed=2) != first


def test_test_prompts_groups_references_in_file_order():
    records = [{"tweet_id": "b", "tweet": "B", "reply": "b1"},
               {"tweet_id": "a", "tweet": "A", "reply": "a1"},
               {"tweet_id": "b", "tweet": "B", "reply": "b2"}]
    assert prompts_with_references(records, 5) == [
        {"tweet_id": "b", "prompt": "B", "references": ["b1", "b2"]},
        {"tweet_id": "a", "prompt": "A", "references": ["a1"]}]
    assert len(prompts_with_references(records, 1)) == 1


def test_reference_nll_matches_the_models_own_loss(tiny_model_dir):
    """Summed NLL / tokens of each reference (batched, right-padded together with a longer
    one) equals the model's own cross-entropy on that reference alone with the prompt masked,
    so exp of it is the reference's perplexity."""
    from polychromic.generate import reference_nll
    from polychromic.modeling import encode_example

    tokenizer, model, _ = setup(tiny_model_dir)
    messages = build_messages(DOMAIN, PROMPTS[1])
    references = ["sounds fun!", "not much, just a quiet weekend at home with a good book"]
    nll, tokens = reference_nll(model, tokenizer, messages, references)
    for reference, total, count in zip(references, nll, tokens, strict=True):
        example = encode_example(tokenizer, messages, reference, max_length=1000)
        assert count == sum(label != -100 for label in example["labels"])
        with torch.inference_mode():
            loss = model(input_ids=torch.tensor([example["input_ids"]]),
                         labels=torch.tensor([example["labels"]])).loss
        assert abs(total / count - loss.item()) < 1e-4
