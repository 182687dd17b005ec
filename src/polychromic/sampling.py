"""Sampling from the model, shared by the generate stage and the polychromic trainer, and
the log-likelihood of given continuations (the reference outputs' perplexity).

`sample_ids` is a decode loop of its own rather than `model.generate`, for three reasons
measured on the 2-core CPU (a batch of 50 samples of code): `generate` grows the KV cache by
concatenation, a copy of the whole cache every step (60% of a decode step at 300 tokens of
context); its top-p sorts the whole 49k vocabulary and draws with `multinomial` over it
every step (a fifth of a step); and a batch runs until its longest sample ends, while the
mean sample is half as long. Here each prompt is encoded once and its cache copied to its n
samples, the cache is written in place into preallocated buffers, a row leaves the batch
when it ends (end-of-turn token or a stop string), and the next token is drawn from the
few candidates that top-k and top-p leave. The next-token distribution is exactly
`generate`'s (temperature, then top-k, then top-p; tested against its warpers); the random
draws differ.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from transformers.cache_utils import Cache, DynamicLayer

from polychromic.modeling import IGNORE_INDEX, PadCollator, encode_example


class PreallocatedLayer(DynamicLayer):
    """A cache layer that appends in place into buffers with room to grow (doubling when
    full): a decode step writes its keys and values instead of copying the cache."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.length = 0
        self.buffers: tuple[torch.Tensor, torch.Tensor] | None = None

    def reserve(self, total: int) -> None:
        """Room for `total` positions (call before repeating rows: one allocation)."""
        if self.buffers is not None and self.buffers[0].shape[-2] < total:
            self.buffers = tuple(self.grown(buffer, total) for buffer in self.buffers)
            self.views()

    def grown(self, buffer: torch.Tensor, total: int) -> torch.Tensor:
        bigger = buffer.new_zeros((*buffer.shape[:2], total, buffer.shape[-1]))
        bigger[:, :, :self.length] = buffer[:, :, :self.length]
        return bigger

    def views(self) -> None:
        self.keys, self.values = (buffer[:, :, :self.length] for buffer in self.buffers)

    def update(self, key_states, value_states, *args, **kwargs):
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        end = self.length + key_states.shape[-2]
        if self.buffers is None:
            self.buffers = (key_states.new_zeros((*key_states.shape[:2], end,
                                                  key_states.shape[-1])),
                            value_states.new_zeros((*value_states.shape[:2], end,
                                                    value_states.shape[-1])))
        elif end > self.buffers[0].shape[-2]:
            self.buffers = tuple(self.grown(b, max(end, 2 * b.shape[-2])) for b in self.buffers)
        self.buffers[0][:, :, self.length:end] = key_states
        self.buffers[1][:, :, self.length:end] = value_states
        self.length = end
        self.views()
        return self.keys, self.values

    def batch_repeat_interleave(self, repeats: int) -> None:
        if self.buffers is not None:
            self.buffers = tuple(b.repeat_interleave(repeats, dim=0) for b in self.buffers)
            self.views()

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        if self.buffers is not None:
            self.buffers = tuple(b[indices] for b in self.buffers)
            self.views()


def full_attention_only(model) -> bool:
    types = getattr(model.config.get_text_config(decoder=True), "layer_types", None)
    return types is None or all(t == "full_attention" for t in types)


def candidates(scaled: torch.Tensor, top_k: int, top_p: float
               ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    """(scaled logits, token ids, dropped) of the tokens that top-k and top-p leave, along
    the last dimension, as `generate` keeps them: the top_k best (0: all), then the smallest
    set of the best whose mass reaches top_p (a token is dropped when the mass of it and
    every token below it is at most 1 - top_p; the best is always kept). ids is None when
    every token is a candidate; the values keep their gradient, the cut does not have one."""
    if top_k:
        values, ids = torch.topk(scaled, min(top_k, scaled.shape[-1]), dim=-1)
    elif top_p < 1:
        values, ids = torch.sort(scaled, dim=-1, descending=True)
    else:
        return scaled, None, None
    if top_p >= 1:
        return values, ids, None
    with torch.no_grad():
        below = torch.softmax(values, dim=-1).flip(-1).cumsum(-1).flip(-1)  # it and all below
        dropped = below <= 1 - top_p
        dropped[..., 0] = False
    return values, ids, dropped


def next_token_distribution(logits: torch.Tensor, temperature: float, top_k: int, top_p: float
                            ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(probabilities, token ids) of the candidates for each row, as `generate` samples
    them: logits / temperature, then top-k and top-p (`candidates`)."""
    values, ids, dropped = candidates(logits.float() / temperature, top_k, top_p)
    probs = torch.softmax(values, dim=-1)
    if dropped is not None:
        probs = probs.masked_fill(dropped, 0.0)
        probs = probs / probs.sum(-1, keepdim=True)
    return probs, ids


def truncated_logprobs(logits: torch.Tensor, tokens: torch.Tensor, temperature: float,
                       top_k: int, top_p: float) -> torch.Tensor:
    """log of the probability with which `next_token_distribution` draws each of `tokens`
    (logits: (..., vocab), tokens: (...)), with gradient: the policy actually sampled from.

    Inside the candidate set the top-k/top-p cut is constant, so the gradient is that of
    log softmax over the candidates. A token that is not a candidate here (the sampler saw
    the same weights, but a differently ordered float sum can move a token across the cut)
    counts as one, so that its log-probability stays finite."""
    scaled = logits.float() / temperature
    chosen = scaled.gather(-1, tokens.unsqueeze(-1)).squeeze(-1)
    values, ids, dropped = candidates(scaled, top_k, top_p)
    if ids is None:
        return chosen - torch.logsumexp(scaled, dim=-1)
    if dropped is not None:
        values = values.masked_fill(dropped, float("-inf"))
    normaliser = torch.logsumexp(values, dim=-1)
    kept = ids == tokens.unsqueeze(-1)
    if dropped is not None:
        kept &= ~dropped
    outside = ~kept.any(-1)
    normaliser = torch.where(outside, torch.logaddexp(normaliser, chosen), normaliser)
    return chosen - normaliser


def draw(probs: torch.Tensor, ids: torch.Tensor | None,
         generator: torch.Generator) -> torch.Tensor:
    """One token per row from the candidates' probabilities (inverse CDF, one uniform)."""
    cdf = probs.cumsum(-1)
    # drawn by the CPU generator and then moved: the same draws on every device
    uniform = torch.rand(probs.shape[0], 1, generator=generator, dtype=cdf.dtype).to(cdf.device)
    index = torch.searchsorted(cdf, uniform * cdf[:, -1:]).clamp(max=probs.shape[-1] - 1)
    return index.squeeze(-1) if ids is None else ids.gather(-1, index).squeeze(-1)


Choose = Callable[[torch.Tensor, list[int]], torch.Tensor]


def sampler(temperature: float, top_k: int, top_p: float,
            generator: torch.Generator) -> Choose:
    """Next tokens drawn from each row's logits (the rows' sample indices are not used)."""
    def choose(logits: torch.Tensor, rows: list[int]) -> torch.Tensor:
        return draw(*next_token_distribution(logits, temperature, top_k, top_p), generator)
    return choose


def sample_ids(model, input_ids: torch.Tensor, attention_mask: torch.Tensor, n: int, *,
               temperature: float, top_k: int, top_p: float, max_new_tokens: int,
               eos_token_id: int, generator: torch.Generator,
               ended: Callable[[list[int]], bool] | None = None) -> list[list[int]]:
    """The token ids of n samples for each (left-padded) prompt, prompt-major: rows
    p*n .. p*n+n-1 are prompt p's. A sample ends with the end-of-turn token (kept), when
    `ended(its ids)` is true, or at max_new_tokens."""
    return decode(model, input_ids, attention_mask, n,
                  sampler(temperature, top_k, top_p, generator), max_new_tokens,
                  eos_token_id, ended)


@torch.inference_mode()
def decode(model, input_ids: torch.Tensor, attention_mask: torch.Tensor, n: int,
           choose: Choose, max_new_tokens: int, eos_token_id: int,
           ended: Callable[[list[int]], bool] | None = None) -> list[list[int]]:
    """The decode loop of `sample_ids`; `choose(logits, the rows' sample indices)` gives the
    next token of each row of the batch."""
    prompts, width = input_ids.shape
    positions = (attention_mask.cumsum(-1) - 1).clamp(min=0)
    preallocate = full_attention_only(model)
    cache = Cache(layer_class_to_replicate=PreallocatedLayer) if preallocate else None
    out = model(input_ids=input_ids, attention_mask=attention_mask, position_ids=positions,
                cache=cache, use_cache=True, logits_to_keep=1)
    cache = out.cache
    if preallocate:
        for layer in cache.layers:
            layer.reserve(width + max_new_tokens)
    cache.batch_repeat_interleave(n)
    logits = out.logits[:, -1].repeat_interleave(n, 0)
    mask = torch.zeros((prompts * n, width + max_new_tokens), dtype=attention_mask.dtype,
                       device=input_ids.device)
    mask[:, :width] = attention_mask.repeat_interleave(n, 0)
    next_position = positions[:, -1].repeat_interleave(n) + 1
    rows = list(range(prompts * n))  # the sample each row of the batch belongs to
    samples: list[list[int]] = [[] for _ in rows]
    live = [True] * len(rows)
    for step in range(max_new_tokens):
        tokens = choose(logits, rows)
        for i, (row, token) in enumerate(zip(rows, tokens.tolist(), strict=True)):
            if live[i]:
                samples[row].append(token)
                live[i] = token != eos_token_id and not (ended and ended(samples[row]))
        if step == max_new_tokens - 1 or not any(live):
            break
        if live.count(False) * 8 >= len(rows):  # ended rows leave (the cache is copied then)
            keep = torch.tensor([i for i, alive in enumerate(live) if alive],
                                device=logits.device)
            cache.batch_select_indices(keep)
            rows, live = [rows[i] for i in keep.tolist()], [True] * len(keep)
            tokens, mask = tokens[keep], mask[keep]
            next_position, logits = next_position[keep], logits[keep]
        mask[:, width + step] = 1
        logits = model(input_ids=tokens[:, None], attention_mask=mask[:, :width + step + 1],
                       position_ids=next_position[:, None], cache=cache,
                       use_cache=True).logits[:, -1]
        next_position += 1
    return samples


def cut_at_stop(text: str, stop: Sequence[str]) -> str:
    """The text before the first stop string (which is not part of the sample)."""
    cuts = [text.find(s) for s in stop if s in text]
    return text[:min(cuts)] if cuts else text


def stop_check(tokenizer, stop: Sequence[str]) -> Callable[[list[int]], bool] | None:
    """Whether a sample's ids end in a stop string (only its last tokens are decoded: every
    token decodes to at least one character)."""
    if not stop:
        return None
    window = max(len(s) for s in stop) + 1
    return lambda ids: any(s in tokenizer.decode(ids[-window:]) for s in stop)


def sample(model, tokenizer, texts: list[str], n: int, *, temperature: float, top_p: float,
           max_new_tokens: int, stop: Sequence[str] = (), seed: int,
           top_k: int = 50) -> list[list[str]]:
    """n samples for each prompt text (already chat-formatted), in one batch; each sample
    is the continuation, cut before its stop string and stripped."""
    encoded = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)
    encoded = encoded.to(model.device)
    generator = torch.Generator().manual_seed(seed)
    ids = sample_ids(model, encoded["input_ids"], encoded["attention_mask"], n,
                     temperature=temperature, top_k=top_k, top_p=top_p,
                     max_new_tokens=max_new_tokens, eos_token_id=tokenizer.eos_token_id,
                     generator=generator, ended=stop_check(tokenizer, stop))
    texts_out = [cut_at_stop(tokenizer.decode(row, skip_special_tokens=True), stop).strip()
                 for row in ids]
    return [texts_out[i * n:(i + 1) * n] for i in range(len(texts))]


def padded(samples: list[list[int]], pad_token_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Samples' ids right-padded into one tensor, and the mask of the sampled tokens."""
    width = max(1, max(len(s) for s in samples))
    ids = torch.full((len(samples), width), pad_token_id, dtype=torch.long)
    keep = torch.zeros((len(samples), width), dtype=torch.bool)
    for row, sample_ids_ in enumerate(samples):
        ids[row, :len(sample_ids_)] = torch.tensor(sample_ids_, dtype=torch.long)
        keep[row, :len(sample_ids_)] = True
    return ids, keep


def continuation_nll(model, tokenizer, prompt: str, continuations: list[str]
                     ) -> tuple[list[float], list[int]]:
    """Summed negative log-likelihood (nats) and token count of each continuation (with its
    end-of-turn token, as in training) after the prompt text, exactly as it is sampled from.
    `evaluate` turns them into the perplexity of the reference outputs."""
    if not continuations:  # a record without references
        return [], []
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
