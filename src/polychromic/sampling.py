"""Sampling from the model, shared by the generate stage and the polychromic trainer: n
samples per prompt with each prompt encoded once, stop strings, and the log-likelihood of a
given continuation (the reference outputs' perplexity)."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from polychromic.modeling import IGNORE_INDEX, PadCollator, encode_example


def generate_shared_prefix(model, input_ids, attention_mask, n: int, **generate_kwargs):
    """`model.generate(..., num_return_sequences=n)`, but each prompt is encoded once, not n
    times: its KV cache is computed, then copied to its n samples. With long prompts (few-shot)
    the repeated prefill is most of the cost. Left padding; positions as `generate` sets them."""
    positions = (attention_mask.cumsum(-1) - 1).clamp(min=0)
    with torch.inference_mode():
        prefix = model(input_ids=input_ids[:, :-1], attention_mask=attention_mask[:, :-1],
                       position_ids=positions[:, :-1], use_cache=True)
        cache = prefix.cache
        cache.batch_repeat_interleave(n)
        return model.generate(input_ids=input_ids.repeat_interleave(n, dim=0),
                              attention_mask=attention_mask.repeat_interleave(n, dim=0),
                              cache=cache, **generate_kwargs)


def stop_kwargs(tokenizer, stop: Sequence[str]) -> dict:
    """generate() arguments that end a sample at the first of the `stop` strings."""
    return {"stop_strings": list(stop), "tokenizer": tokenizer} if stop else {}


def cut_at_stop(text: str, stop: Sequence[str]) -> str:
    """The text before the first stop string (which is not part of the sample)."""
    cuts = [text.find(s) for s in stop if s in text]
    return text[:min(cuts)] if cuts else text


def sample(model, tokenizer, texts: list[str], n: int, *, temperature: float, top_p: float,
           max_new_tokens: int, stop: Sequence[str] = (), seed: int) -> list[list[str]]:
    """n samples for each prompt text (already chat-formatted), from one batched `generate`
    call; each sample is the continuation, cut before its stop string and stripped."""
    torch.manual_seed(seed)
    encoded = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)
    encoded = encoded.to(model.device)
    output = generate_shared_prefix(
        model, encoded["input_ids"], encoded["attention_mask"], n, do_sample=True,
        temperature=temperature, top_p=top_p, max_new_tokens=max_new_tokens,
        pad_token_id=tokenizer.pad_token_id, **stop_kwargs(tokenizer, stop))
    completions = tokenizer.batch_decode(output[:, encoded["input_ids"].shape[1]:],
                                         skip_special_tokens=True)
    completions = [cut_at_stop(c, stop).strip() for c in completions]
    return [completions[i * n:(i + 1) * n] for i in range(len(texts))]


def sampled_tokens_mask(tokenizer, completions: torch.Tensor,
                        stop: Sequence[str] = ()) -> torch.Tensor:
    """Which tokens of each completion were sampled: up to and including the end-of-turn
    token, or up to the token that completed a stop string (generate pads after both, and
    the pad may be the end-of-turn token itself)."""
    is_end = (completions == tokenizer.eos_token_id).int()
    keep = (is_end.cumsum(-1) - is_end) == 0
    if not stop:
        return keep
    for row, ids in enumerate(completions.tolist()):
        length = int(keep[row].sum())
        if not any(s in tokenizer.decode(ids[:length]) for s in stop):
            continue
        low, high = 1, length  # the shortest prefix that holds a stop string
        while low < high:
            middle = (low + high) // 2
            if any(s in tokenizer.decode(ids[:middle]) for s in stop):
                high = middle
            else:
                low = middle + 1
        keep[row, low:] = False
    return keep


def continuation_nll(model, tokenizer, prompt: str, continuations: list[str]
                     ) -> tuple[list[float], list[int]]:
    """Summed negative log-likelihood (nats) and token count of each continuation (with its
    end-of-turn token, as in training) after the prompt text, exactly as it is sampled from.
    `evaluate` turns them into the perplexity of the reference outputs."""
    features = [encode_example(tokenizer, prompt, continuation, max_length=1 << 30)
                for continuation in continuations]
    batch = PadCollator(tokenizer.pad_token_id)(features)
    batch = {k: v.to(model.device) for k, v in batch.items()}
    with torch.inference_mode():
        logits = model(input_ids=batch["input_ids"],
                       attention_mask=batch["attention_mask"]).logits[:, :-1].float()
    labels = batch["labels"][:, 1:]
    nll = torch.nn.functional.cross_entropy(logits.transpose(1, 2), labels,
                                            ignore_index=IGNORE_INDEX, reduction="none")
    return nll.sum(dim=1).tolist(), (labels != IGNORE_INDEX).sum(dim=1).tolist()
