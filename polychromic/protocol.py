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
from dataclasses import dataclass, fields, is_dataclass
from pathlib import Path
from typing import Any

from polychromic.config import UserError
from polychromic.domains import Domain, Record

SEALED = Path("protocol/sealed")
SPLITS_ANSWERED = ("dev", "val", "confirmation")
"""What generate and evaluate answer and score: dev and val from the prepared splits, the
confirmation split only from the unseal stage's records (`--unsealed`)."""
HEADER = "# polychromic seal: the {domain} confirmation split (docs/protocol.md); never edit"


def record_hash(record: Record) -> str:
    text = json.dumps(record, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def plain(value: Any) -> Any:
    """`value` as plain JSON types: a dataclass as the mapping of its fields (as `asdict`
    gives, also where a mapping inside is a dict subclass, such as traced params)."""
    if is_dataclass(value) and not isinstance(value, type):
        return {f.name: plain(getattr(value, f.name)) for f in fields(value)}
    if isinstance(value, dict):
        return {key: plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(item) for item in value]
    return value


def data_hash(domain: Domain) -> str:
    """The domain's data settings (`<domain>.data`), hashed: what the split was drawn with."""
    text = json.dumps(plain(domain.settings["data"]), sort_keys=True, separators=(",", ":"))
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


def split_path(data: str | Path, split: str, unsealed: str | Path | None) -> Path:
    """The records file of `split`: <data>/<split>.jsonl, or, for the confirmation split,
    the unseal stage's file (no stage writes it anywhere else)."""
    if split == "confirmation":
        if unsealed is None:
            raise UserError("--split confirmation: answers only the records the unseal stage "
                            "wrote (--unsealed; studies/confirmation, docs/protocol.md)")
        return Path(unsealed)
    if unsealed is not None:
        raise UserError("--unsealed: only with --split confirmation")
    return Path(data, f"{split}.jsonl")


def uncommitted(paths: list[Path], cwd: Path = Path()) -> list[str]:
    """Which of `paths` (files or folders) git does not hold as committed, unchanged: the
    confirmation run reads the sealed split only once the protocol, the power plan and the
    selection are in git's history (docs/protocol.md). Each entry says why."""
    import subprocess

    def git(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True,
                              check=False)

    try:
        top = git("rev-parse", "--show-toplevel")
    except FileNotFoundError:
        return ["git is not installed: the confirmation run needs the protocol in git"]
    if top.returncode != 0:
        return [f"{Path(cwd).resolve()}: not in a git repository (the confirmation run needs "
                "the protocol committed)"]
    problems = []
    for path in paths:
        if not (Path(cwd) / path).exists():
            problems.append(f"{path}: no such file")
        elif not git("ls-files", "--", str(path)).stdout.strip():
            problems.append(f"{path}: not committed")
        elif git("status", "--porcelain", "--untracked-files=all", "--", str(path)).stdout.strip():
            problems.append(f"{path}: changed since its last commit")
    return problems
