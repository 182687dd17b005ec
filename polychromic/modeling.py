"""What training and generation share: the chat prompt as text, tokenisation with the prompt
masked, padding, and loading the base model with or without an adapter."""

from __future__ import annotations

from pathlib import Path

import torch

from polychromic.config import UserError
from polychromic.hub import hub_weights
from polychromic.runtime import Runtime

IGNORE_INDEX = -100  # label value that cross-entropy skips


def prompt_text(tokenizer, messages: list[dict[str, str]], assistant_prefix: str = "") -> str:
    """The chat as the model sees it before it answers: the chat template with the generation
    prompt, then the start of the answer that the domain writes for the model (if any)."""
    return tokenizer.apply_chat_template(messages, tokenize=False,
                                         add_generation_prompt=True) + assistant_prefix


def target_ids(tokenizer, target: str) -> list[int]:
    """Token ids of a target output and the end-of-turn token, tokenised apart from the
    prompt (as training and the references' likelihood see it)."""
    return tokenizer(target + tokenizer.eos_token, add_special_tokens=False)["input_ids"]


def encode_example(tokenizer, prompt: str, target: str,
                   max_length: int) -> dict[str, list[int]] | None:
    """Token ids of prompt + target + end-of-turn, labels masked on the prompt.

    `prompt` is the text from `prompt_text`, tokenised exactly as generation sees it, so
    training and sampling condition on the same tokens. Returns None when the prompt alone
    leaves no room for the target within `max_length`.
    """
    prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    reply_ids = target_ids(tokenizer, target)
    if len(prompt_ids) >= max_length:
        return None
    input_ids = (prompt_ids + reply_ids)[:max_length]
    labels = ([IGNORE_INDEX] * len(prompt_ids) + reply_ids)[:max_length]
    return {"input_ids": input_ids, "labels": labels}


class PadCollator:
    """Right-pads input_ids/labels into a batch with an attention mask. `keep` names integer
    fields passed through as they are (the polychromic trainer's `record_index`)."""

    def __init__(self, pad_token_id: int, keep: tuple[str, ...] = ()):
        self.pad_token_id = pad_token_id
        self.keep = keep

    def __call__(self, features: list[dict[str, list[int]]]) -> dict[str, torch.Tensor]:
        width = max(len(f["input_ids"]) for f in features)
        batch = {"input_ids": [], "labels": [], "attention_mask": []}
        for f in features:
            pad = width - len(f["input_ids"])
            batch["input_ids"].append(f["input_ids"] + [self.pad_token_id] * pad)
            batch["labels"].append(f["labels"] + [IGNORE_INDEX] * pad)
            batch["attention_mask"].append([1] * len(f["input_ids"]) + [0] * pad)
        batch.update({name: [f[name] for f in features] for name in self.keep})
        return {k: torch.tensor(v, dtype=torch.long) for k, v in batch.items()}


class PackCollator:
    """A batch's examples end to end in one row, without padding: `position_ids` restart at 0
    at each example, from which transformers builds a block-diagonal causal mask (each
    example attends only to itself); the first label of each example is ignored, so that
    no example predicts from the one before it. `logits_to_keep` lists the positions that
    predict a label, so the model computes logits (49k-wide in SmolLM2) only there;
    `causal_lm_loss` is the loss of such a batch. `keep` as in PadCollator. The same loss and
    gradient as a padded batch (tests/integration/test_train.py), with no FLOPs spent on
    padding; with dropout on, its masks fall on other elements (another draw, not the padded
    run's)."""

    def __init__(self, keep: tuple[str, ...] = ()):
        self.keep = keep

    def __call__(self, features: list[dict[str, list[int]]]) -> dict:
        input_ids, labels, positions = [], [], []
        for f in features:
            input_ids += f["input_ids"]
            labels += [IGNORE_INDEX] + f["labels"][1:]
            positions += range(len(f["input_ids"]))
        batch = {"input_ids": [input_ids], "labels": [labels], "position_ids": [positions]}
        batch = {k: torch.tensor(v, dtype=torch.long) for k, v in batch.items()}
        batch["logits_to_keep"] = (batch["labels"][0, 1:] != IGNORE_INDEX).nonzero()[:, 0]
        batch["use_cache"] = False  # transformers reads packed examples only without a cache
        batch.update({name: torch.tensor([f[name] for f in features], dtype=torch.long)
                      for name in self.keep})
        return batch


def causal_lm_loss(outputs, labels: torch.Tensor, num_items_in_batch=None) -> torch.Tensor:
    """Next-token cross-entropy of a batch from PackCollator (logits at the positions that
    predict a label) or PadCollator (logits everywhere), as transformers computes it: summed
    over the labelled tokens and divided by `num_items_in_batch` (the labelled tokens of the
    whole accumulated batch) when the Trainer gives it, else their mean."""
    shifted = labels[..., 1:]
    labelled = shifted != IGNORE_INDEX
    logits = outputs.logits
    if logits.shape[1] == labels.shape[1]:  # a padded batch: every position's logits
        logits = logits[:, :-1][labelled]
    logits = logits.reshape(-1, logits.shape[-1]).float()
    total = torch.nn.functional.cross_entropy(logits, shifted[labelled], reduction="sum")
    if num_items_in_batch is None:
        return total / labelled.sum()
    return total / num_items_in_batch


def load_tokenizer(base_dir: str | Path):
    from transformers import AutoTokenizer

    if not Path(base_dir, "config.json").is_file():
        raise UserError(f"{base_dir}: no base model checkpoint (run: dvc repro base_model)")
    tokenizer = AutoTokenizer.from_pretrained(base_dir)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_model(base_dir: str | Path, adapter_dir: str | Path | None = None,
               runtime: Runtime | None = None, merge_adapter: bool = False,
               adapter_scale: float = 1.0):
    """The base model on `runtime`'s device (default: the GPU when there is one), 4-bit
    quantised if it asks, its weights in `runtime.weights_dtype()` (bf16 under bf16), with
    the LoRA adapter at `adapter_dir` applied when given. An adapter kept apart stays in
    fp32 (peft's default), as when it was trained.

    `merge_adapter` (inference only) folds the adapter into the base weights: the same
    function up to float rounding, without the adapter's extra products and Python layers
    on every linear. It folds in the weights' own dtype and stores the sum in bf16 after,
    so that the adapter is rounded once, with the weight. 4-bit weights keep it apart:
    folding it in would round it away.

    `adapter_scale` multiplies the adapter's update (WiSE-FT-style interpolation toward the
    base model: 0 is the base model, 1 the trained adapter)."""
    from transformers import AutoModelForCausalLM

    if not Path(base_dir, "config.json").is_file():
        raise UserError(f"{base_dir}: no base model checkpoint (run: dvc repro base_model)")
    runtime = runtime or Runtime()
    device, quantization = runtime.model_device(), runtime.quantization_config()
    # a hub id's pinned commit from the hub cache, or the directory's own weights
    source, kwargs = hub_weights(base_dir) or (base_dir, {})
    kwargs |= runtime.attention_kwargs()
    if quantization is not None:  # bitsandbytes places the weights itself
        model = AutoModelForCausalLM.from_pretrained(
            source, quantization_config=quantization, device_map={"": device}, **kwargs)
    else:
        model = AutoModelForCausalLM.from_pretrained(source, **kwargs).to(device)
    if adapter_dir is not None:
        from peft import PeftModel

        if not Path(adapter_dir, "adapter_config.json").is_file():
            raise UserError(f"{adapter_dir}: no LoRA adapter (run: dvc repro train)")
        model = PeftModel.from_pretrained(model, adapter_dir)
        if adapter_scale != 1.0:
            from peft.tuners.lora.layer import LoraLayer

            for module in model.modules():
                if isinstance(module, LoraLayer):
                    module.scale_layer(adapter_scale)
        if merge_adapter and quantization is None:
            model = model.merge_and_unload()
    stored = runtime.weights_dtype()
    if stored is not None:
        cast_base_weights(model, stored)
    return model


def cast_base_weights(model, dtype: torch.dtype) -> None:
    """Every floating-point parameter outside the LoRA layers to `dtype`. LoRA's weights stay
    fp32, and so do buffers (the rotary frequencies: rounding them would move every
    position's angle)."""
    for name, parameter in model.named_parameters():
        if "lora_" not in name and parameter.dtype.is_floating_point:
            parameter.data = parameter.data.to(dtype)
