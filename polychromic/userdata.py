"""A researcher's own data file (JSONL or CSV), read and checked one line at a time.

Each domain documents a schema (field -> `Field`) and reads its user file through `read_rows`,
which returns the rows with their line numbers, or stops at the first bad line with one
`UserError` naming file:line and field. Encoding is checked per line, so invalid UTF-8 or a
NUL byte is reported where it is; a UTF-8 byte-order mark and CRLF line ends (a spreadsheet's
export) are read as plain UTF-8.

User files live under `data/user/<domain>/`, a dependency of that domain's `prepare` stage in
dvc.yaml, so that a new or edited file reruns the pipeline.
"""

from __future__ import annotations

import csv
import io
import json
import math
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from polychromic.config import UserError

USER_DIR = Path("data/user")
BOM = b"\xef\xbb\xbf"


@dataclass(frozen=True)
class Field:
    kind: str
    """id: a non-empty string or an integer (read as a string); text: a non-empty string;
    number: a finite number (a numeric string in CSV); answer: text or a finite number,
    read as text."""
    required: bool = True
    help: str = ""


@dataclass(frozen=True)
class Row:
    line: int
    values: dict[str, Any]


def user_file(value: str, domain: str, key: str) -> Path:
    """The params value `key` as a path under data/user/<domain>/ (DVC tracks that folder)."""
    path = Path(value)
    folder = USER_DIR / domain
    if path.is_absolute() or folder not in path.parents:
        raise UserError(f"params.yaml: '{key}' ({value}) must be a file under {folder}/, the "
                        f"folder that dvc.yaml tracks for the {domain} domain's prepare stage")
    if path.suffix.lower() not in (".jsonl", ".csv"):
        raise UserError(f"params.yaml: '{key}' ({value}) must end in .jsonl or .csv")
    if not path.is_file():
        raise UserError(f"params.yaml: '{key}': {value}: no such file")
    return path


def decoded_lines(path: Path) -> list[str]:
    """The file's lines as text: UTF-8, an optional BOM, LF or CRLF ends, no NUL bytes."""
    data = path.read_bytes()
    if data.startswith(BOM):
        data = data[len(BOM):]
    lines = []
    for number, raw in enumerate(data.split(b"\n"), start=1):
        if b"\x00" in raw:
            raise UserError(f"{path}:{number}: NUL byte in the line (a binary or UTF-16 file? "
                            "save it as UTF-8)")
        try:
            lines.append(raw.decode("utf-8").removesuffix("\r"))
        except UnicodeDecodeError as err:
            raise UserError(f"{path}:{number}: not valid UTF-8 (byte 0x{raw[err.start]:02x} "
                            f"at column {err.start + 1}; save the file as UTF-8)") from None
    return lines


def parse_value(value: Any, field: Field, name: str, where: str, from_csv: bool) -> Any:
    """The checked value of one field, or a UserError naming file:line and field."""
    def fail(reason: str) -> UserError:
        return UserError(f"{where}: field '{name}' {reason}")

    if field.kind == "number":
        if from_csv and isinstance(value, str):
            try:
                value = float(value)
            except ValueError:
                raise fail(f"is not a number ({value!r})") from None
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise fail("must be a number")
        if not is_finite(value):
            raise fail(f"must be a finite number, not {short(value)}")
        return value
    if field.kind == "id" and isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    if field.kind == "answer" and isinstance(value, int | float) and not isinstance(value, bool):
        if not is_finite(value):
            raise fail(f"must be a finite number, not {short(value)}")
        return str(value)
    if not isinstance(value, str):
        raise fail("must be a string" + (" or an integer" if field.kind == "id" else ""))
    if not value.strip():
        raise fail("is empty")
    return value


def is_finite(value: int | float) -> bool:
    """A float that is not inf or nan, or an int that a float can hold."""
    try:
        return math.isfinite(value)
    except OverflowError:  # an int beyond 1.8e308
        return False


def short(value: Any) -> str:
    text = repr(value) if not isinstance(value, int) or abs(value) < 10**30 else "a huge integer"
    return text if len(text) <= 40 else text[:37] + "..."


def json_rows(path: Path, lines: list[str]) -> Iterator[tuple[int, dict]]:
    """Each line's JSON object, one at a time (so that the first bad line is the one
    reported, whatever is wrong with it)."""
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        where = f"{path}:{number}"
        try:
            # NaN and Infinity are not JSON; Python's parser takes them unless told not to
            record = json.loads(line, parse_constant=_reject_constant,
                                object_pairs_hook=_unique_keys)
        except _Refused as err:
            raise UserError(f"{where}: {err}") from None
        except json.JSONDecodeError as err:
            raise UserError(f"{where}: malformed JSON ({err.msg})") from None
        except RecursionError:
            raise UserError(f"{where}: JSON nested too deeply") from None
        except ValueError:  # Python's limit on the digits of an integer it converts
            raise UserError(f"{where}: a JSON integer of more than "
                            f"{sys.get_int_max_str_digits()} digits") from None
        if not isinstance(record, dict):
            raise UserError(f"{where}: expected a JSON object")
        check_strings(record, where)
        yield number, record


class _Refused(Exception):
    pass


def _reject_constant(name: str) -> None:
    raise _Refused(f"{name} is not a JSON number (not finite)")


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict:
    """A JSON object whose keys are distinct: with a repeated key, which value was meant?"""
    record = dict(pairs)
    if len(record) != len(pairs):
        seen: set[str] = set()
        repeated = next(key for key, _ in pairs if key in seen or seen.add(key))
        raise _Refused(f"key {short(repeated)} appears twice in one object")
    return record


def check_strings(record: dict, where: str) -> None:
    """No NUL character and no lone surrogate (a `\\ud800` escape, which no UTF-8 file can
    write back) in any key or string of the record, used or not."""
    stack: list[Any] = [record]
    while stack:  # not recursive: the parser allows deeper nesting than a recursive walk
        item = stack.pop()
        if isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
        elif isinstance(item, str):
            if "\x00" in item:
                raise UserError(f"{where}: a NUL character (\\u0000) in a string")
            try:
                item.encode("utf-8")
            except UnicodeEncodeError:
                raise UserError(f"{where}: a lone surrogate (an escape such as \\ud800 that "
                                "is half of a character) in a string") from None


def csv_rows(path: Path, lines: list[str]) -> Iterator[tuple[int, dict]]:
    """Each row as a mapping from the header, one at a time."""
    reader = csv.reader(io.StringIO("\n".join(lines), newline=""), strict=True)
    try:
        header = next(reader)
    except StopIteration:
        return
    except csv.Error as err:
        raise UserError(f"{path}:1: malformed CSV header ({err})") from None
    header = [name.strip() for name in header]
    if len(set(header)) != len(header):
        raise UserError(f"{path}:1: a column name repeats in the header {header}")
    start = reader.line_num + 1
    while True:
        try:
            cells = next(reader)
        except StopIteration:
            break
        except csv.Error as err:
            raise UserError(f"{path}:{start}: malformed CSV ({err})") from None
        if cells and any(cell.strip() for cell in cells):
            if len(cells) != len(header):
                raise UserError(f"{path}:{start}: {len(cells)} cells, the header has "
                                f"{len(header)}")
            # an empty cell is an absent value (optional fields) in CSV
            yield start, {k: v for k, v in zip(header, cells, strict=True) if v != ""}
        start = reader.line_num + 1


def read_rows(path: Path, schema: dict[str, Field]) -> list[Row]:
    """The rows of a user file in `schema`: required fields present, every value checked."""
    lines = decoded_lines(path)
    from_csv = path.suffix.lower() == ".csv"
    raw = csv_rows(path, lines) if from_csv else json_rows(path, lines)
    rows = []
    for number, record in raw:
        where = f"{path}:{number}"
        values = {}
        for name, field in schema.items():
            if name not in record or record[name] is None:
                if field.required:
                    raise UserError(f"{where}: missing field '{name}'")
                continue
            values[name] = parse_value(record[name], field, name, where, from_csv)
        rows.append(Row(number, values))
    if not rows:
        raise UserError(f"{path}: no records (expected fields: {', '.join(schema)})")
    return rows
