"""The Hugging Face hub as the stages see it: whether it can be reached, whether the local
cache holds a repository, and which pinned commit a base directory points to (its hub.json,
written by the base_model stage for a hub id: the weights stay in the hub cache).
`modeling.load_model` reads through here, so it lives apart from the base model's sources.
"""

from __future__ import annotations

import json
import os
import socket
import threading
from pathlib import Path
from urllib.parse import urlparse

from polychromic.config import UserError

HUB_POINTER = "hub.json"  # in models/base, for a hub id: which commit's weights to load


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


def cached_on_disk(repo_id: str, revision: str | None = None) -> bool:
    """Whether the local Hugging Face cache holds `repo_id` (at `revision`, a commit or a
    branch it has seen)."""
    from huggingface_hub import try_to_load_from_cache

    return isinstance(try_to_load_from_cache(repo_id, "config.json", revision=revision), str)


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


def hub_weights(base_dir: str | Path) -> tuple[str, dict] | None:
    """(repo id, from_pretrained keyword arguments) of the weights a base directory points
    to (its hub.json: the pinned commit, read from the hub cache), or None when it holds
    its own weights."""
    pointer = Path(base_dir, HUB_POINTER)
    if not pointer.is_file():
        return None
    import torch

    hub = json.loads(pointer.read_text(encoding="utf-8"))
    local_only = cached_on_disk(hub["repo"], hub["revision"]) or hub_access(hub["repo"])
    return hub["repo"], {"revision": hub["revision"], "dtype": getattr(torch, hub["dtype"]),
                         "local_files_only": local_only}
