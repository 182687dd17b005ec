"""Sampling on the tiny Llama: the decode loop (cache in place, rows leaving the batch) against
a plain forward, reproducible samples, stop strings, the references' NLL and a merged
adapter (the distribution's arithmetic: tests/unit/test_generate.py)."""

import numpy as np
import torch
from transformers import AutoTokenizer

from polychromic.domains.replies import Replies
from polychromic.modeling import load_model, prompt_text
from polychromic.sampling import (
    cut_at_stop,
    padded,
    sample,
    stop_check,
)

DOMAIN = Replies("replies", {})
PROMPTS = ["hi", "what are you doing this weekend? anything fun planned with the family?"]


def record(prompt):
    return {"id": prompt, "prompt": prompt, "references": ["ok"], "task": {}}


def setup(tiny_model_dir, sharp=False):
    """The tiny model, tokenizer and the prompts' texts. `sharp`: queries and keys scaled up,
    so that attention is peaked (the random model's is near uniform, under which a key at
    the wrong position changes the logits too little to be seen)."""
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    tokenizer.padding_side = "left"
    model = load_model(tiny_model_dir).eval()
    if sharp:
        with torch.no_grad():
            for name, weight in model.named_parameters():
                if name.endswith(("q_proj.weight", "k_proj.weight")):
                    weight.mul_(25)
    texts = [prompt_text(tokenizer, DOMAIN.messages(record(p))) for p in PROMPTS]
    return tokenizer, model, texts


def test_decode_loop_gives_the_logits_of_a_plain_forward_as_rows_leave(tiny_model_dir):
    """Teacher-forced through the decode loop (each prompt encoded once, its cache copied to
    its rows and written in place, rows leaving the batch as they end at different steps),
    every row's logits at every step equal those of one plain forward pass over its prompt
    and continuation, left-padded as a batch; and it stops each row where it ends."""
    from polychromic.sampling import decode

    tokenizer, model, texts = setup(tiny_model_dir, sharp=True)
    encoded = tokenizer(texts, return_tensors="pt", padding=True,
                        add_special_tokens=False).to(model.device)
    ids, mask = encoded["input_ids"], encoded["attention_mask"]
    n, steps = 3, 9
    forced = torch.randint(100, 1000, (len(texts) * n, steps),
                           generator=torch.Generator().manual_seed(0)).to(model.device)
    lengths = [2, 9, 5, 9, 1, 7]  # where each row ends (via `ended`)
    seen: dict[int, list[torch.Tensor]] = {row: [] for row in range(len(lengths))}

    def choose(logits, rows):
        for logit, row in zip(logits, rows, strict=True):
            seen[row].append(logit.clone())
        step = len(seen[rows[0]]) - 1
        return torch.stack([forced[row, step] for row in rows])

    endings = {tuple(forced[row, :length].tolist()) for row, length in enumerate(lengths)}
    assert len({forced[row, 0].item() for row in range(len(lengths))}) == len(lengths)
    out = decode(model, ids, mask, n, choose, steps, eos_token_id=-1,
                 ended=lambda sample: tuple(sample) in endings)
    assert [len(row) for row in out] == lengths
    full_ids = torch.cat([ids.repeat_interleave(n, 0), forced], 1)
    full_mask = torch.cat([mask.repeat_interleave(n, 0), torch.ones_like(forced)], 1)
    with torch.inference_mode():
        logits = model(input_ids=full_ids, attention_mask=full_mask,
                       position_ids=(full_mask.cumsum(-1) - 1).clamp(min=0)).logits
    for row, length in enumerate(lengths):
        assert out[row] == forced[row, :length].tolist()
        for step in range(length):
            torch.testing.assert_close(seen[row][step], logits[row, ids.shape[1] - 1 + step],
                                       rtol=1e-4, atol=1e-5)


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
    the stop string (`padded`)."""
    tokenizer, model, texts = setup(tiny_model_dir)
    settings = {"temperature": 1.0, "top_p": 1.0, "max_new_tokens": 8}
    free = sample(model, tokenizer, texts, 2, **settings, seed=0)
    stop = free[0][0].split()[1]  # a word the sample goes on to write
    stopped = sample(model, tokenizer, texts, 2, **settings, stop=[stop], seed=0)
    assert stopped[0][0] == free[0][0][:free[0][0].index(stop)].strip()
    assert all(stop not in s for samples in stopped for s in samples)
    assert cut_at_stop("a```b```", ["```"]) == "a" and cut_at_stop("ab", ["```"]) == "ab"

    ids = tokenizer(" x y```z w", add_special_tokens=False)["input_ids"]
    check = stop_check(tokenizer, ["```"])
    through_fence = next(t for t in range(1, len(ids) + 1) if check(ids[:t]))
    assert "```" in tokenizer.decode(ids[:through_fence])
    assert "```" not in tokenizer.decode(ids[:through_fence - 1])
    completions, keep = padded([ids[:through_fence], ids[:2]], tokenizer.pad_token_id)
    assert keep[0].tolist() == [True] * through_fence
    assert keep[1].tolist() == [True] * 2 + [False] * (through_fence - 2)
    assert completions[1, 2:].tolist() == [tokenizer.pad_token_id] * (through_fence - 2)


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
            loss = model(input_ids=torch.tensor([example["input_ids"]], device=model.device),
                         labels=torch.tensor([example["labels"]], device=model.device)).loss
        assert abs(total / count - loss.item()) < 1e-4


def test_references_scored_from_the_prompts_cache_are_a_plain_pass(tiny_model_dir):
    """The references' NLL read from the sampling batch's prompt pass (prompts left-padded
    together, references right-padded together, several per prompt and none for one) equals
    `continuation_nll`'s plain pass over each prompt and its references; the samples are
    those of `sample` with the same seed."""
    from polychromic.sampling import continuation_nll, sample_and_score

    tokenizer, model, texts = setup(tiny_model_dir, sharp=True)
    texts = texts + [texts[0] + " ok"]
    targets = [["sounds fun!", "not much, just a quiet weekend at home with a good book"],
               [], ["x"]]
    settings = {"temperature": 0.7, "top_p": 0.95, "max_new_tokens": 6, "seed": 3}
    samples, scores = sample_and_score(model, tokenizer, texts, targets, 2, **settings)
    assert samples == sample(model, tokenizer, texts, 2, **settings)
    for text, text_targets, (nll, tokens) in zip(texts, targets, scores, strict=True):
        expected_nll, expected_tokens = continuation_nll(model, tokenizer, text, text_targets)
        assert tokens == expected_tokens
        np.testing.assert_allclose(nll, expected_nll, rtol=1e-5, atol=1e-4)
    # the same from a prompt pass that no decode has run from yet
    from polychromic.modeling import target_ids
    from polychromic.sampling import prompt_pass, score_continuations

    encoded = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)
    before = score_continuations(
        model, prompt_pass(model, encoded["input_ids"], encoded["attention_mask"]), [0, 0, 2],
        [target_ids(tokenizer, target) for target in targets[0] + targets[2]])
    np.testing.assert_allclose(before[0], scores[0][0] + scores[2][0], rtol=1e-5, atol=1e-4)


def test_a_merged_adapter_is_the_adapters_function(tiny_model_dir, tmp_path):
    """generate folds the adapter into the base weights: the same logits and samples as the
    adapter applied on top of them, no LoRA layer left, and the base checkpoint untouched."""
    from polychromic.settings import LoraSettings
    from polychromic.training import add_lora

    checkpoint = tiny_model_dir / "model.safetensors"
    base_bytes = checkpoint.read_bytes()
    model = add_lora(load_model(tiny_model_dir), LoraSettings(), seed=0)
    with torch.no_grad():  # B starts at 0 (the adapter a no-op): make it a real change
        for name, weight in model.named_parameters():
            if "lora_B" in name:
                weight.copy_(torch.randn(weight.shape, generator=torch.Generator().manual_seed(1)))
    model.save_pretrained(tmp_path)
    tokenizer, _, texts = setup(tiny_model_dir)
    applied = load_model(tiny_model_dir, tmp_path).eval()
    merged = load_model(tiny_model_dir, tmp_path, merge_adapter=True).eval()
    base = load_model(tiny_model_dir).eval()
    assert not any("lora" in name for name, _ in merged.named_modules())
    encoded = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)
    with torch.no_grad():
        logits = [m(**encoded).logits for m in (applied, merged, base)]
    assert (logits[0] - logits[2]).abs().max() > 0.1  # the adapter matters
    torch.testing.assert_close(logits[1], logits[0], atol=1e-5, rtol=1e-5)
    settings = dict(temperature=1.0, top_p=0.95, max_new_tokens=8, seed=3)
    assert sample(merged, tokenizer, texts, 4, **settings) == \
        sample(applied, tokenizer, texts, 4, **settings)
    assert checkpoint.read_bytes() == base_bytes


def test_an_adapter_scale_interpolates_toward_the_base_model(tiny_model_dir, tmp_path):
    """`adapter_scale` multiplies the LoRA update before it is merged: 0 gives the base
    model's weights, 0.5 half the update, exactly (WiSE-FT-style frontier points)."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_model_dir),
                           LoraConfig(r=2, lora_alpha=4, target_modules=["q_proj"]))
    for name, parameter in model.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(parameter, std=0.5)  # trained: B is no longer zero
    model.save_pretrained(tmp_path / "adapter")
    weight = "model.layers.0.self_attn.q_proj.weight"
    weights = {scale: load_model(tiny_model_dir, tmp_path / "adapter", merge_adapter=True,
                                 adapter_scale=scale).state_dict()[weight]
               for scale in (0.0, 0.5, 1.0)}
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir).state_dict()[weight]
    torch.testing.assert_close(weights[0.0], base)
    assert not torch.allclose(weights[1.0], base)
    torch.testing.assert_close(weights[0.5], base + 0.5 * (weights[1.0] - base))
