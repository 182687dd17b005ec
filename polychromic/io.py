"""Reading inputs with file:line errors, writing outputs all-or-nothing."""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from polychromic.config import UserError

# Metrics and curves are written with this many significant digits: reruns with another
# thread count differ around the 7th (float32 sums in another order), and should not make
# a new file (tests/unit/test_precision.py).
SIGNIFICANT_DIGITS = 6


def at_precision(data: Any, digits: int = SIGNIFICANT_DIGITS) -> Any:
    """`data` with every finite float rounded to `digits` significant digits."""
    if isinstance(data, float):
        return float(f"{data:.{digits}g}") if math.isfinite(data) else data
    if isinstance(data, dict):
        return {key: at_precision(value, digits) for key, value in data.items()}
    if isinstance(data, (list, tuple)):
        return [at_precision(value, digits) for value in data]
    return data


def read_jsonl(path: str | Path, required: dict[str, type | tuple[type, ...]]) -> list[dict]:
    """Read a JSONL file whose records must carry `required` fields of the given types.

    Text fields (type `str`) must also be non-empty after stripping whitespace.
    """
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: no such file (run the stage that makes it: dvc repro)")
    records = []
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            where = f"{path}:{number}"
            try:
                record = json.loads(line)
            except json.JSONDecodeError as err:
                raise UserError(f"{where}: malformed JSON ({err.msg})") from None
            if not isinstance(record, dict):
                raise UserError(f"{where}: expected a JSON object")
            for name, kind in required.items():
                if name not in record:
                    raise UserError(f"{where}: missing field '{name}'")
                value = record[name]
                if not isinstance(value, kind) or isinstance(value, bool) and kind is not bool:
                    raise UserError(f"{where}: field '{name}' has the wrong type")
                if isinstance(value, str) and not value.strip():
                    raise UserError(f"{where}: field '{name}' is empty")
            records.append(record)
    if not records:
        raise UserError(f"{path}: no records")
    return records


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary sibling of `path`; move it into place only if the block succeeds.

    Works for files and directories; on failure nothing is left at `path` or beside it.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent)) / path.name
    try:
        yield tmp
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        elif path.exists() or path.is_symlink():
            path.unlink()
        os.replace(tmp, path)
    finally:
        shutil.rmtree(tmp.parent, ignore_errors=True)


def write_jsonl(path: str | Path, records: Iterable[dict[str, Any]],
                rounded: bool = False) -> None:
    """Records, one per line; `rounded`: floats at SIGNIFICANT_DIGITS (scores, not data)."""
    with atomic_path(path) as tmp, tmp.open("w", encoding="utf-8") as handle:
        for record in records:
            record = at_precision(record) if rounded else record
            handle.write(json.dumps(record, ensure_ascii=False) + "\n")


def write_json(path: str | Path, data: Any) -> None:
    """A metrics file or summary: floats at SIGNIFICANT_DIGITS."""
    with atomic_path(path) as tmp:
        text = json.dumps(at_precision(data), indent=2, ensure_ascii=False)
        tmp.write_text(text + "\n", encoding="utf-8")
