"""The sealed confirmation split (docs/protocol.md).

Each domain holds back a confirmation split (`Domain.load_splits()["confirmation"]`) that no
stage writes or reads: results are developed on the dev split and on val, and the frozen
protocol is evaluated on confirmation once. What is sealed is committed before any result
on it exists: `protocol/sealed/<domain>.sha256` holds the SHA-256 of each confirmation record
(its canonical JSON: id, prompt, references, task) in split order, and of the domain's data
settings it was drawn with, so that git's history shows which prompts the confirmation run
must use and that they did not change.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path

from polychromic.domains import Domain, Record

SEALED = Path("protocol/sealed")
HEADER = "# polychromic seal: the {domain} confirmation split (docs/protocol.md); never edit"


def record_hash(record: Record) -> str:
    text = json.dumps(record, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def data_hash(domain: Domain) -> str:
    """The domain's data settings (`<domain>.data`), hashed: what the split was drawn with."""
    text = json.dumps(asdict(domain.settings["data"]), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


@dataclass(frozen=True)
class Seal:
    data: str
    hashes: tuple[str, ...]


def seal_text(domain: Domain, records: list[Record]) -> str:
    lines = [HEADER.format(domain=domain.name), f"# records: {len(records)}",
             f"# data: {data_hash(domain)}", *map(record_hash, records)]
    return "\n".join(lines) + "\n"


def read_seal(path: Path) -> Seal:
    """A seal file; ValueError naming the line when it is not one."""
    lines = path.read_text(encoding="utf-8").splitlines()
    if len(lines) < 3 or not lines[0].startswith("# polychromic seal:"):
        raise ValueError(f"{path}:1: not a seal file")
    count, data = lines[1].removeprefix("# records: "), lines[2].removeprefix("# data: ")
    hashes = tuple(lines[3:])
    if not count.isdigit() or int(count) != len(hashes):
        raise ValueError(f"{path}:2: says {count!r} records, the file holds {len(hashes)}")
    for number, value in enumerate(hashes, start=4):
        if len(value) != 64 or any(c not in "0123456789abcdef" for c in value):
            raise ValueError(f"{path}:{number}: not a SHA-256")
    return Seal(data, hashes)


def check_seal(domain: Domain, confirmation: list[Record], root: Path = Path()) -> str | None:
    """What is wrong with the domain's confirmation split against its seal, or None."""
    path = root / SEALED / f"{domain.name}.sha256"
    if not path.is_file():
        return f"{path}: no seal (polychromic seal --write)"
    seal = read_seal(path)
    if seal.data != data_hash(domain):
        return (f"{path}: sealed with other '{domain.name}.data' settings (the confirmation "
                "split belongs to the default data)")
    if tuple(map(record_hash, confirmation)) != seal.hashes:
        return f"{path}: the confirmation records differ from the sealed ones"
    return None
