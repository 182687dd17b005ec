"""Embedded encoders: a model zipped and split over several wheels is joined, checked against
its pinned SHA-256 and unpacked once into the cache, atomically; a missing part or a wrong
hash is one clear error naming the params key, and leaves nothing in the cache."""

import hashlib
import importlib.metadata
import io
import zipfile
from pathlib import Path

import pytest

from polychromic import embedding
from polychromic.config import UserError


def split_zip(tmp_path: Path, parts: int = 3) -> tuple[embedding.SplitZipModel, dict]:
    """A zip of a model folder split into `parts` files, each in its own fake distribution."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("tiny-model/config.json", '{"hidden_size": 4}')
        archive.writestr("tiny-model/1_Pooling/config.json", "{}")
        archive.writestr("tiny-model/desktop.ini", "junk")
        archive.writestr("elsewhere.txt", "not the model's")
    data = buffer.getvalue()
    size = -(-len(data) // parts)
    locations = {}
    for i in range(parts):
        path = tmp_path / "site" / f"part{i}" / f"model.zip.{i:03d}"
        path.parent.mkdir(parents=True)
        path.write_bytes(data[i * size:(i + 1) * size])
        locations[f"dist-{i}"] = path
    model = embedding.SplitZipModel(
        parts=tuple((f"dist-{i}", f"model.zip.{i:03d}") for i in range(parts)),
        sha256=hashlib.sha256(data).hexdigest(), folder="tiny-model")
    return model, locations


@pytest.fixture
def installed(monkeypatch, tmp_path):
    """Fake distributions (name -> the file it holds) and an empty cache."""
    found: dict[str, Path] = {}

    class Distribution:
        def __init__(self, name):
            if name not in found:
                raise importlib.metadata.PackageNotFoundError(name)
            self.name = name

        def locate_file(self, _):
            return found[self.name]

    monkeypatch.setattr(importlib.metadata, "distribution", Distribution)
    monkeypatch.setenv("POLYCHROMIC_CACHE", str(tmp_path / "cache"))
    return found


def test_parts_are_joined_checked_and_unpacked_once(installed, tmp_path):
    model, locations = split_zip(tmp_path)
    installed.update(locations)
    directory = model.directory("embedded:tiny", "evaluate.independent_model")
    assert directory == tmp_path / "cache" / f"tiny-model-{model.sha256[:12]}"
    files = sorted(str(p.relative_to(directory)) for p in directory.rglob("*") if p.is_file())
    assert files == ["1_Pooling/config.json", "config.json"]  # no desktop.ini, nothing else
    assert [p.name for p in (tmp_path / "cache").iterdir()] == [directory.name]  # no scratch
    installed.clear()  # unpacked: the parts are not read again
    assert model.directory("embedded:tiny", "evaluate.independent_model") == directory


def test_a_wrong_hash_is_an_error_and_leaves_nothing(installed, tmp_path):
    model, locations = split_zip(tmp_path)
    installed.update(locations)
    locations["dist-1"].write_bytes(b"x" + locations["dist-1"].read_bytes()[1:])
    with pytest.raises(UserError, match=r"'evaluate.independent_model' embedded:tiny: the "
                                        r"installed parts join to SHA-256 [0-9a-f]{64}, not "
                                        "the pinned"):
        model.directory("embedded:tiny", "evaluate.independent_model")
    assert list((tmp_path / "cache").iterdir()) == []


def test_a_missing_part_names_its_package(installed, tmp_path):
    model, locations = split_zip(tmp_path)
    installed.update({k: v for k, v in locations.items() if k != "dist-2"})
    with pytest.raises(UserError, match="'replies.checker.embedding_model' embedded:tiny "
                                        "needs the package dist-2"):
        model.directory("embedded:tiny", "replies.checker.embedding_model")


def test_the_cache_root(monkeypatch, tmp_path):
    monkeypatch.delenv("POLYCHROMIC_CACHE", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert embedding.cache_root() == tmp_path / "polychromic"
    monkeypatch.setenv("POLYCHROMIC_CACHE", str(tmp_path / "mine"))
    assert embedding.cache_root() == tmp_path / "mine"
