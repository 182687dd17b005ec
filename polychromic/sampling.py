"""Sampling from the model, shared by the generate stage and the polychromic trainer, and
the log-likelihood of given continuations (the reference outputs' perplexity).

`sample_ids` is a decode loop of its own rather than `model.generate`, for three reasons
measured on the 2-core CPU (a batch of 50 samples of code): `generate` grows the KV cache by
concatenation, a copy of the whole cache every step (60% of a decode step at 300 tokens of
context); its top-p sorts the whole 49k vocabulary and draws with `multinomial` over it
every step (a fifth of a step); and a batch runs until its longest sample ends, while the
mean sample is half as long. Here each prompt is encoded once and its n samples read its
keys and values where that pass left them (`SharedPromptLayer`: no copy per sample, which
for a few-shot prompt of 700 tokens is most of the cache), each sample's own keys and
values are written in place into preallocated buffers, a row leaves the batch as soon as it
ends (end-of-turn token or a stop string) without any cache being copied, and the next
token is drawn from the few candidates that top-k and top-p leave. The references'
likelihood continues from the same prompt pass (`score_continuations`). The next-token
distribution is exactly `generate`'s (temperature, then top-k, then top-p; tested against
its warpers); the random draws differ.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass

import torch
from transformers import AttentionInterface
from transformers.cache_utils import Cache, DynamicLayer

from polychromic.modeling import IGNORE_INDEX, PadCollator, encode_example, target_ids


class SharedPromptLayer(DynamicLayer):
    """A cache layer in which the n samples of a prompt read that prompt's keys and values
    where the prompt pass left them, instead of n copies of them.

    The prompt pass fills it as a plain `DynamicLayer` (P prompts, padded width W): `keys`
    and `values` stay the prompts' from then on. `share` gives the P x n samples buffers of
    their own, (P, heads, n, max_new_tokens, head_dim), that decode steps write in place. A decode
    step's batch holds only the live samples (`prompt_of_row`, `sample_of_row`: where each
    row's buffer is), so an ended sample leaves it without any cache being copied. `update`
    returns the layer itself, which only `shared_prompt_attention` reads."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.length: int | None = None  # None: the prompt pass

    def share(self, prompt_mask: torch.Tensor, n: int, max_new_tokens: int) -> None:
        prompts, heads, _, head_dim = self.keys.shape
        low = torch.finfo(self.keys.dtype).min  # added to the scores of padding positions
        self.prompt_bias = torch.zeros(prompt_mask.shape, dtype=self.keys.dtype,
                                       device=self.keys.device).masked_fill(prompt_mask == 0, low)
        shape = (prompts, heads, n, max_new_tokens, head_dim)
        self.sample_keys = self.keys.new_zeros(shape)
        self.sample_values = self.values.new_zeros(shape)
        self.length = 0
        self.select(torch.arange(prompts * n, device=self.keys.device) // n,
                    torch.arange(prompts * n, device=self.keys.device) % n)

    def select(self, prompt_of_row: torch.Tensor, sample_of_row: torch.Tensor) -> None:
        """The live samples, one per row of the next decode step."""
        self.prompt_of_row, self.sample_of_row = prompt_of_row, sample_of_row

    def update(self, key_states, value_states, *args, **kwargs):
        if self.length is None:
            return super().update(key_states, value_states, *args, **kwargs)
        rows = (self.prompt_of_row, slice(None), self.sample_of_row, self.length)
        self.sample_keys[rows] = key_states[:, :, 0]
        self.sample_values[rows] = value_states[:, :, 0]
        self.length += 1
        return self, self

    def get_seq_length(self) -> int:
        return self.keys.shape[-2] + (self.length or 0) if self.is_initialized else 0


SHARED_PROMPT_ATTENTION = "polychromic_shared_prompt"


def shared_prompt_attention(module, query: torch.Tensor, key: SharedPromptLayer, value,
                            attention_mask, scaling: float, **kwargs) -> tuple[torch.Tensor, None]:
    """One decode step's attention over a `SharedPromptLayer` (`key` is the layer). The
    live rows' queries are placed on the (prompt, sample) grid, so that each part is one
    product: every prompt's keys against its n samples' queries at once, and every
    sample's own keys against its query; one softmax spans both parts."""
    layer = key
    rows, heads, _, head_dim = query.shape
    prompts, kv_heads, n, _, _ = layer.sample_keys.shape
    group = heads // kv_heads  # query heads per key/value head, as in repeat_kv
    where = (layer.prompt_of_row, slice(None), layer.sample_of_row)
    grid = query.new_zeros((prompts, kv_heads, n, group, head_dim))
    grid[where] = query.view(rows, kv_heads, group, head_dim)
    own_keys = layer.sample_keys[:, :, :, :layer.length]
    own_values = layer.sample_values[:, :, :, :layer.length]
    width = layer.keys.shape[-2]
    prompt_scores = (grid.view(prompts, kv_heads, n * group, head_dim)
                     @ layer.keys.transpose(-1, -2)).float()
    prompt_scores = (prompt_scores * scaling + layer.prompt_bias[:, None, None, :]
                     ).view(prompts, kv_heads, n, group, width)
    own_scores = (grid @ own_keys.transpose(-1, -2)).float() * scaling
    top = torch.maximum(prompt_scores.amax(-1), own_scores.amax(-1)).unsqueeze(-1)
    prompt_weights, own_weights = (prompt_scores - top).exp_(), (own_scores - top).exp_()
    total = prompt_weights.sum(-1, keepdim=True) + own_weights.sum(-1, keepdim=True)
    dtype = layer.values.dtype
    out = (prompt_weights.to(dtype).view(prompts, kv_heads, n * group, width)
           @ layer.values).view(prompts, kv_heads, n, group, head_dim)
    out = (out + own_weights.to(dtype) @ own_values) / total.to(dtype)
    return out[where].reshape(rows, 1, heads, head_dim), None


AttentionInterface.register(SHARED_PROMPT_ATTENTION, shared_prompt_attention)


@contextmanager
def attention_implementation(model, name: str):
    """The model's attention function set to `name` for the block (restored after it)."""
    config = model.config
    before = config._attn_implementation
    config._attn_implementation = name
    try:
        yield
    finally:
        config._attn_implementation = before


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


@dataclass
class PromptPass:
    """The prompts' forward pass that sampling continues from: its cache (`SharedPromptLayer`s
    when `shared`), the logits at each prompt's last position, the prompts' attention mask
    and the position of each prompt's first new token."""
    cache: Cache
    logits: torch.Tensor
    mask: torch.Tensor
    next_position: torch.Tensor
    shared: bool


@torch.inference_mode()
def prompt_pass(model, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> PromptPass:
    """One forward pass over the (left-padded) prompts. Models with other than full
    attention (sliding windows) keep transformers' own cache, which decode repeats per
    sample."""
    positions = (attention_mask.cumsum(-1) - 1).clamp(min=0)
    shared = full_attention_only(model)
    cache = Cache(layer_class_to_replicate=SharedPromptLayer) if shared else None
    out = model(input_ids=input_ids, attention_mask=attention_mask, position_ids=positions,
                cache=cache, use_cache=True, logits_to_keep=1)
    return PromptPass(out.cache, out.logits[:, -1], attention_mask, positions[:, -1] + 1, shared)


@torch.inference_mode()
def decode(model, input_ids: torch.Tensor, attention_mask: torch.Tensor, n: int,
           choose: Choose, max_new_tokens: int, eos_token_id: int,
           ended: Callable[[list[int]], bool] | None = None,
           prompt: PromptPass | None = None) -> list[list[int]]:
    """The decode loop of `sample_ids`, from `prompt` (the prompts' pass, made here when
    None); `choose(logits, the rows' sample indices)` gives the next token of each row."""
    prompt = prompt or prompt_pass(model, input_ids, attention_mask)
    prompts, width = input_ids.shape
    cache, mask = prompt.cache, None
    if prompt.shared:
        for layer in cache.layers:
            layer.share(attention_mask, n, max_new_tokens)
    else:
        cache.batch_repeat_interleave(n)
        mask = torch.zeros((prompts * n, width + max_new_tokens), dtype=attention_mask.dtype,
                           device=input_ids.device)
        mask[:, :width] = attention_mask.repeat_interleave(n, 0)
    logits = prompt.logits.repeat_interleave(n, 0)
    next_position = prompt.next_position.repeat_interleave(n)
    rows = list(range(prompts * n))  # the sample each row of the batch belongs to
    samples: list[list[int]] = [[] for _ in rows]
    shared = attention_implementation(model, SHARED_PROMPT_ATTENTION) if prompt.shared \
        else nullcontext()
    with shared:
        for step in range(max_new_tokens):
            tokens = choose(logits, rows)
            live = []
            for i, (row, token) in enumerate(zip(rows, tokens.tolist(), strict=True)):
                samples[row].append(token)
                if token != eos_token_id and not (ended and ended(samples[row])):
                    live.append(i)
            if step == max_new_tokens - 1 or not live:
                break
            if len(live) < len(rows):  # ended rows leave the batch
                keep = torch.tensor(live, device=logits.device)
                rows = [rows[i] for i in live]
                tokens, next_position, logits = tokens[keep], next_position[keep], logits[keep]
                if prompt.shared:
                    ids = torch.tensor(rows, device=logits.device)
                    for layer in cache.layers:
                        layer.select(ids // n, ids % n)
                else:
                    cache.batch_select_indices(keep)
                    mask = mask[keep]
            if mask is not None:
                mask[:, width + step] = 1
            logits = model(input_ids=tokens[:, None],
                           attention_mask=None if mask is None else mask[:, :width + step + 1],
                           position_ids=next_position[:, None], cache=cache,
                           use_cache=True).logits[:, -1]
            next_position += 1
    return samples


@torch.inference_mode()
def score_continuations(model, prompt: PromptPass, owners: list[int],
                        continuations: list[list[int]]) -> tuple[list[float], list[int]]:
    """Summed negative log-likelihood (nats) and token count of each continuation (token
    ids) after prompt `owners[i]`, continuing from the prompts' pass (a shared one, before
    or after decoding from it, which leaves the prompts' keys as they are): its first token
    from the prompt's last logits, the rest from one pass over the continuations with their
    prompts' keys and values. Equal to `continuation_nll`."""
    if not continuations:
        return [], []
    device = prompt.logits.device
    owner = torch.tensor(owners, device=device)
    ids, keep = (t.to(device) for t in padded(continuations, pad_token_id=0))
    first = torch.log_softmax(prompt.logits[owner].float(), -1).gather(-1, ids[:, :1])
    logprobs = [first]
    if ids.shape[1] > 1:
        cache = Cache(layer_class_to_replicate=DynamicLayer)
        for index, layer in enumerate(prompt.cache.layers):
            cache.update(layer.keys[owner], layer.values[owner], index)
        mask = torch.cat([prompt.mask[owner], keep[:, :-1].to(prompt.mask.dtype)], 1)
        positions = prompt.next_position[owner, None] + torch.arange(ids.shape[1] - 1,
                                                                     device=device)
        logits = model(input_ids=ids[:, :-1], attention_mask=mask, position_ids=positions,
                       cache=cache, use_cache=True).logits
        logprobs.append(torch.log_softmax(logits.float(), -1).gather(-1, ids[:, 1:, None])
                        .squeeze(-1))
    nll = -(torch.cat(logprobs, 1) * keep).sum(1)
    return nll.tolist(), keep.sum(1).tolist()


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


def sample_and_score(model, tokenizer, texts: list[str], targets: list[list[str]], n: int, *,
                     temperature: float, top_p: float, max_new_tokens: int,
                     stop: Sequence[str] = (), seed: int, top_k: int = 50
                     ) -> tuple[list[list[str]], list[tuple[list[float], list[int]]]]:
    """n samples for each prompt text (already chat-formatted), in one batch, each the
    continuation cut before its stop string and stripped; and for each prompt the summed
    NLL and token count of each of its `targets` (with the end-of-turn token, as in
    training), read from the same prompt pass."""
    encoded = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)
    encoded = encoded.to(model.device)
    generator = torch.Generator().manual_seed(seed)
    prompt = prompt_pass(model, encoded["input_ids"], encoded["attention_mask"])
    ids = decode(model, encoded["input_ids"], encoded["attention_mask"], n,
                 sampler(temperature, top_k, top_p, generator), max_new_tokens,
                 tokenizer.eos_token_id, stop_check(tokenizer, stop), prompt)
    texts_out = [cut_at_stop(tokenizer.decode(row, skip_special_tokens=True), stop).strip()
                 for row in ids]
    samples = [texts_out[i * n:(i + 1) * n] for i in range(len(texts))]
    if not prompt.shared:
        return samples, [continuation_nll(model, tokenizer, text, text_targets)
                         for text, text_targets in zip(texts, targets, strict=True)]
    owners = [i for i, text_targets in enumerate(targets) for _ in text_targets]
    continuations = [target_ids(tokenizer, target)
                     for text_targets in targets for target in text_targets]
    nll, counts = score_continuations(model, prompt, owners, continuations)
    scores, start = [], 0
    for text_targets in targets:
        end = start + len(text_targets)
        scores.append((nll[start:end], counts[start:end]))
        start = end
    return samples, scores


def sample(model, tokenizer, texts: list[str], n: int, *, temperature: float, top_p: float,
           max_new_tokens: int, stop: Sequence[str] = (), seed: int,
           top_k: int = 50) -> list[list[str]]:
    """`sample_and_score`'s samples alone."""
    return sample_and_score(model, tokenizer, texts, [[] for _ in texts], n,
                            temperature=temperature, top_p=top_p, max_new_tokens=max_new_tokens,
                            stop=stop, seed=seed, top_k=top_k)[0]


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
