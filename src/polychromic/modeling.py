"""What training and generation share: the chat prompt, tokenisation with the prompt masked,
padding, and loading the base model with or without an adapter."""

from __future__ import annotations

from pathlib import Path

import torch

from polychromic.config import UserError
from polychromic.domains import Domain

IGNORE_INDEX = -100  # label value that cross-entropy skips


def build_messages(domain: Domain, prompt: str,
                   examples: list[tuple[str, str]] = ()) -> list[dict[str, str]]:
    """The chat for one prompt: the domain's instruction, optional worked examples, the prompt."""
    messages = [{"role": "system", "content": domain.instruction}]
    for example_prompt, example_reply in examples:
        messages += [{"role": "user", "content": example_prompt},
                     {"role": "assistant", "content": example_reply}]
    messages.append({"role": "user", "content": prompt})
    return messages


def prompt_text(tokenizer, messages: list[dict[str, str]]) -> str:
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


def encode_example(tokenizer, messages: list[dict[str, str]], reply: str,
                   max_length: int) -> dict[str, list[int]] | None:
    """Token ids of prompt + reply + end-of-turn, labels masked on the prompt.

    The prompt is tokenised exactly as generation sees it (the chat template with the
    generation prompt), so training and sampling condition on the same tokens. Returns None
    when the prompt alone leaves no room for the reply within `max_length`.
    """
    prompt_ids = tokenizer(prompt_text(tokenizer, messages), add_special_tokens=False)["input_ids"]
    reply_ids = tokenizer(reply + tokenizer.eos_token, add_special_tokens=False)["input_ids"]
    if len(prompt_ids) >= max_length:
        return None
    input_ids = (prompt_ids + reply_ids)[:max_length]
    labels = ([IGNORE_INDEX] * len(prompt_ids) + reply_ids)[:max_length]
    return {"input_ids": input_ids, "labels": labels}


class PadCollator:
    """Right-pads input_ids/labels into a batch with an attention mask."""

    def __init__(self, pad_token_id: int):
        self.pad_token_id = pad_token_id

    def __call__(self, features: list[dict[str, list[int]]]) -> dict[str, torch.Tensor]:
        width = max(len(f["input_ids"]) for f in features)
        batch = {"input_ids": [], "labels": [], "attention_mask": []}
        for f in features:
            pad = width - len(f["input_ids"])
            batch["input_ids"].append(f["input_ids"] + [self.pad_token_id] * pad)
            batch["labels"].append(f["labels"] + [IGNORE_INDEX] * pad)
            batch["attention_mask"].append([1] * len(f["input_ids"]) + [0] * pad)
        return {k: torch.tensor(v, dtype=torch.long) for k, v in batch.items()}


def load_tokenizer(base_dir: str | Path):
    from transformers import AutoTokenizer

    if not Path(base_dir, "config.json").is_file():
        raise UserError(f"{base_dir}: no base model checkpoint (run: dvc repro base_model)")
    tokenizer = AutoTokenizer.from_pretrained(base_dir)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_model(base_dir: str | Path, adapter_dir: str | Path | None = None):
    """The base model on the GPU when there is one, with the LoRA adapter at `adapter_dir`
    applied when given."""
    from transformers import AutoModelForCausalLM

    if not Path(base_dir, "config.json").is_file():
        raise UserError(f"{base_dir}: no base model checkpoint (run: dvc repro base_model)")
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model = AutoModelForCausalLM.from_pretrained(base_dir).to(device)
    if adapter_dir is not None:
        from peft import PeftModel

        if not Path(adapter_dir, "adapter_config.json").is_file():
            raise UserError(f"{adapter_dir}: no LoRA adapter (run: dvc repro train)")
        model = PeftModel.from_pretrained(model, adapter_dir)
    return model
