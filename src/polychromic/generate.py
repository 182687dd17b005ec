"""Stage `generate`: n sampled replies per test prompt for one system.

Systems: `zero_shot` (base model, the domain's instruction), `few_shot` (base model, the
instruction and k worked examples drawn once from train with the seed), and a trained method
(base model + its LoRA adapter, the instruction as in training). Prompts and their n samples
are batched together into one `generate` call per `batch_prompts` prompts.
"""

from __future__ import annotations

import argparse
import random
from dataclasses import dataclass, field
from pathlib import Path

from polychromic.config import UserError, help_text, load_section, read_params, require, run_main
from polychromic.domains import RECORD_FIELDS, get_domain
from polychromic.io import read_jsonl, write_jsonl
from polychromic.modeling import (
    IGNORE_INDEX,
    PadCollator,
    build_messages,
    encode_example,
    load_model,
    load_tokenizer,
    prompt_text,
)

PROMPTED = ("zero_shot", "few_shot")


@dataclass
class GenerateConfig:
    n: int = field(default=10, metadata={"help": "samples per prompt (>= the largest k)"})
    temperature: float = field(default=0.7, metadata={"help": "sampling temperature"})
    top_p: float = field(default=0.95, metadata={"help": "nucleus sampling mass"})
    max_new_tokens: int = field(default=40, metadata={"help": "tokens per sample at most"})
    max_prompts: int = field(default=50, metadata={"help": "test prompts used (first ones)"})
    batch_prompts: int = field(default=4, metadata={"help": "prompts per generate call"})
    few_shot_examples: int = field(default=5, metadata={"help": "examples shown to few_shot"})

    def check(self, key: str) -> None:
        for name in ("n", "max_new_tokens", "max_prompts", "batch_prompts", "few_shot_examples"):
            require(getattr(self, name) > 0, f"{key}.{name}", "must be > 0")
        require(self.temperature > 0, f"{key}.temperature", "must be > 0")
        require(0 < self.top_p <= 1, f"{key}.top_p", "must be in (0, 1]")


def prompts_with_references(records: list[dict], limit: int) -> list[dict]:
    """Unique prompts in file order, each with all its human replies as references."""
    prompts: dict[str, dict] = {}
    for record in records:
        entry = prompts.setdefault(record["tweet_id"], {
            "tweet_id": record["tweet_id"], "prompt": record["tweet"], "references": []})
        entry["references"].append(record["reply"])
    return list(prompts.values())[:limit]


def few_shot_examples(train: list[dict], count: int, seed: int) -> list[tuple[str, str]]:
    rng = random.Random(seed)
    chosen = rng.sample(range(len(train)), min(count, len(train)))
    return [(train[i]["tweet"], train[i]["reply"]) for i in chosen]


def generate_shared_prefix(model, input_ids, attention_mask, n: int, **generate_kwargs):
    """`model.generate(..., num_return_sequences=n)`, but each prompt is encoded once, not n
    times: its KV cache is computed, then copied to its n samples. With long prompts (few-shot)
    the repeated prefill is most of the cost. Left padding; positions as `generate` sets them."""
    import torch

    positions = (attention_mask.cumsum(-1) - 1).clamp(min=0)
    with torch.inference_mode():
        prefix = model(input_ids=input_ids[:, :-1], attention_mask=attention_mask[:, :-1],
                       position_ids=positions[:, :-1], use_cache=True)
        cache = prefix.cache
        cache.batch_repeat_interleave(n)
        return model.generate(input_ids=input_ids.repeat_interleave(n, dim=0),
                              attention_mask=attention_mask.repeat_interleave(n, dim=0),
                              cache=cache, **generate_kwargs)


def sample(model, tokenizer, texts: list[str], config: GenerateConfig,
           seed: int) -> list[list[str]]:
    """n samples for each prompt text, from one batched `generate` call."""
    import torch

    torch.manual_seed(seed)
    encoded = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)
    encoded = encoded.to(model.device)
    output = generate_shared_prefix(
        model, encoded["input_ids"], encoded["attention_mask"], config.n, do_sample=True,
        temperature=config.temperature, top_p=config.top_p,
        max_new_tokens=config.max_new_tokens, pad_token_id=tokenizer.pad_token_id)
    completions = tokenizer.batch_decode(output[:, encoded["input_ids"].shape[1]:],
                                         skip_special_tokens=True)
    completions = [c.strip() for c in completions]
    return [completions[i * config.n:(i + 1) * config.n] for i in range(len(texts))]


def reference_nll(model, tokenizer, messages: list[dict[str, str]],
                  references: list[str]) -> tuple[list[float], list[int]]:
    """Summed negative log-likelihood (nats) and token count of each human reply (with its
    end-of-turn token, as in training) under the system, given the prompt exactly as it is
    sampled from. `evaluate` turns them into the perplexity of the reference."""
    import torch

    features = [encode_example(tokenizer, messages, reference, max_length=1 << 30)
                for reference in references]
    batch = PadCollator(tokenizer.pad_token_id)(features)
    batch = {k: v.to(model.device) for k, v in batch.items()}
    with torch.inference_mode():
        logits = model(input_ids=batch["input_ids"],
                       attention_mask=batch["attention_mask"]).logits[:, :-1].float()
    labels = batch["labels"][:, 1:]
    nll = torch.nn.functional.cross_entropy(logits.transpose(1, 2), labels,
                                            ignore_index=IGNORE_INDEX, reduction="none")
    return nll.sum(dim=1).tolist(), (labels != IGNORE_INDEX).sum(dim=1).tolist()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__ + "\nparams.yaml generate:\n"
                                     + help_text(GenerateConfig),
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--domain", required=True)
    parser.add_argument("--system", required=True,
                        help="zero_shot, few_shot, or a trained method (with --adapter)")
    parser.add_argument("--base", required=True, help="base model checkpoint directory")
    parser.add_argument("--adapter", help="LoRA adapter directory (trained methods)")
    parser.add_argument("--data", required=True, help="directory with train.jsonl, test.jsonl")
    parser.add_argument("--seed", type=int, required=True,
                        help="sampling seed (one of train.seeds; reseeded per batch) and "
                        "few-shot example draw")
    parser.add_argument("--out", required=True, help="generations JSONL to write")
    args = parser.parse_args(argv)
    params = read_params()
    config = load_section(GenerateConfig, params, "generate")
    ks = params.get("evaluate", {}).get("ks", [])
    if ks and isinstance(ks, list) and all(isinstance(k, int) for k in ks):
        require(config.n >= max(ks), "generate.n", f"({config.n}) must be >= the largest k in "
                f"evaluate.ks ({max(ks)})")
    if (args.system in PROMPTED) == (args.adapter is not None):
        raise UserError(f"system {args.system!r}: " + (
            "a prompted system takes no adapter" if args.adapter else
            f"unknown system (prompted systems: {', '.join(PROMPTED)}; a trained method "
            "needs --adapter)"))
    domain = get_domain(args.domain)

    from tqdm import tqdm

    examples = []
    if args.system == "few_shot":
        train = read_jsonl(Path(args.data, "train.jsonl"), RECORD_FIELDS)
        examples = few_shot_examples(train, config.few_shot_examples, args.seed)
    prompts = prompts_with_references(read_jsonl(Path(args.data, "test.jsonl"), RECORD_FIELDS),
                           config.max_prompts)
    tokenizer = load_tokenizer(args.base)
    tokenizer.padding_side = "left"  # generation continues from the right edge
    model = load_model(args.base, args.adapter).eval()

    rows = []
    with tqdm(total=len(prompts), desc=f"generate {args.domain}/{args.system}",
              unit="prompt") as progress:
        for start in range(0, len(prompts), config.batch_prompts):
            batch = prompts[start:start + config.batch_prompts]
            chats = [build_messages(domain, p["prompt"], examples) for p in batch]
            texts = [prompt_text(tokenizer, chat) for chat in chats]
            samples = sample(model, tokenizer, texts, config, args.seed + start)
            for entry, chat, entry_samples in zip(batch, chats, samples, strict=True):
                nll, tokens = reference_nll(model, tokenizer, chat, entry["references"])
                rows.append({**entry, "system": args.system, "seed": args.seed,
                             "samples": entry_samples, "reference_nll": nll,
                             "reference_tokens": tokens})
            progress.update(len(batch))
    write_jsonl(args.out, rows)
    print(f"{args.domain}/{args.system}: {len(rows)} prompts x {config.n} samples -> {args.out}")


if __name__ == "__main__":
    run_main(main)
