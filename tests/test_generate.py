"""Batched sampling on the tiny Llama."""

import torch
from transformers import AutoTokenizer

from polychromic.domains.replies import Replies
from polychromic.modeling import load_model, prompt_text
from polychromic.sampling import (
    cut_at_stop,
    generate_shared_prefix,
    sample,
    sampled_tokens_mask,
)

DOMAIN = Replies("replies", {})
PROMPTS = ["hi", "what are you doing this weekend? anything fun planned with the family?"]


def record(prompt):
    return {"id": prompt, "prompt": prompt, "references": ["ok"], "task": {}}


def setup(tiny_model_dir):
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    tokenizer.padding_side = "left"
    model = load_model(tiny_model_dir).eval()
    texts = [prompt_text(tokenizer, DOMAIN.messages(record(p))) for p in PROMPTS]
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
    settings = {"temperature": 0.7, "top_p": 0.95, "max_new_tokens": 5}
    first = sample(model, tokenizer, texts, 4, **settings, seed=1)
    assert [len(s) for s in first] == [4, 4]
    assert sample(model, tokenizer, texts, 4, **settings, seed=1) == first
    assert sample(model, tokenizer, texts, 4, **settings, seed=2) != first


def test_stop_strings_end_samples_and_are_not_part_of_them(tiny_model_dir):
    """A stop string (a word the unstopped sample goes on to write, same seed) ends the
    sample and is cut off; the trainer's token mask keeps exactly the tokens up to the end of
    the stop string, or up to the end-of-turn token."""
    tokenizer, model, texts = setup(tiny_model_dir)
    settings = {"temperature": 1.0, "top_p": 1.0, "max_new_tokens": 8}
    free = sample(model, tokenizer, texts, 2, **settings, seed=0)
    stop = free[0][0].split()[1]  # a word the sample goes on to write
    stopped = sample(model, tokenizer, texts, 2, **settings, stop=[stop], seed=0)
    assert stopped[0][0] == free[0][0][:free[0][0].index(stop)].strip()
    assert all(stop not in s for samples in stopped for s in samples)
    assert cut_at_stop("a```b```", ["```"]) == "a" and cut_at_stop("ab", ["```"]) == "ab"

    ids = tokenizer(" x y```z w", add_special_tokens=False)["input_ids"]
    eos = tokenizer.eos_token_id
    completions = torch.tensor([ids + [eos, eos], ids[:2] + [eos] + [eos] * (len(ids) - 1)])
    keep = sampled_tokens_mask(tokenizer, completions, ["```"])
    through_fence = next(t for t in range(1, len(ids) + 1)
                         if "```" in tokenizer.decode(ids[:t]))
    assert keep[0].tolist() == [True] * through_fence + [False] * (len(ids) + 2 - through_fence)
    assert keep[1].tolist() == [True] * 3 + [False] * (len(ids) - 1)  # up to its end token


def test_reference_nll_matches_the_models_own_loss(tiny_model_dir):
    """Summed NLL / tokens of each reference (batched, right-padded together with a longer
    one) equals the model's own cross-entropy on that reference alone with the prompt masked,
    so exp of it is the reference's perplexity."""
    from polychromic.modeling import encode_example
    from polychromic.sampling import continuation_nll

    tokenizer, model, texts = setup(tiny_model_dir)
    references = ["sounds fun!", "not much, just a quiet weekend at home with a good book"]
    nll, tokens = continuation_nll(model, tokenizer, texts[1], references)
    for reference, total, count in zip(references, nll, tokens, strict=True):
        example = encode_example(tokenizer, texts[1], reference, max_length=1000)
        assert count == sum(label != -100 for label in example["labels"])
        with torch.inference_mode():
            loss = model(input_ids=torch.tensor([example["input_ids"]]),
                         labels=torch.tensor([example["labels"]])).loss
        assert abs(total / count - loss.item()) < 1e-4
