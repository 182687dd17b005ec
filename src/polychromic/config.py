"""Reading and checking `params.yaml`.

Each stage owns one section of `params.yaml`, described by a dataclass whose fields carry
help text (`metadata={"help": ...}`). `load_section` turns the YAML section into that
dataclass, refusing unknown keys and wrong types with a message naming the params key, and
each dataclass's `check()` enforces ranges the same way.
"""

from __future__ import annotations

import dataclasses
import sys
import types
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import yaml

PARAMS_FILE = "params.yaml"
T = TypeVar("T")


class UserError(Exception):
    """Bad input from the user: reported as one line, exit status 2, no traceback."""


def read_yaml_mapping(path: Path) -> dict[str, Any]:
    """A YAML file whose top level is a mapping (empty: {}); errors name the file:line."""
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark else str(path)
        raise UserError(f"{where}: malformed YAML ({getattr(err, 'problem', err)})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise UserError(f"{path}: expected a mapping at the top level")
    return data


def read_params(path: str | Path = PARAMS_FILE) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: no such params file")
    return read_yaml_mapping(path)


def _matches(value: Any, annotation: Any) -> bool:
    origin = typing.get_origin(annotation)
    if annotation is Any:
        return True
    if origin in (typing.Union, types.UnionType):
        return any(_matches(value, arg) for arg in typing.get_args(annotation))
    if origin is typing.Literal:
        return value in typing.get_args(annotation)
    if origin in (list, tuple):
        (item,) = typing.get_args(annotation)[:1] or (Any,)
        return isinstance(value, list) and all(_matches(v, item) for v in value)
    if origin is dict:
        return isinstance(value, dict)
    if annotation is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if annotation is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if annotation is type(None):
        return value is None
    return isinstance(value, annotation)


def _describe(annotation: Any) -> str:
    if typing.get_origin(annotation) is typing.Literal:
        return " | ".join(repr(a) for a in typing.get_args(annotation))
    return getattr(annotation, "__name__", str(annotation)).replace("typing.", "")


def load_section(cls: type[T], params: dict[str, Any], key: str) -> T:
    """Build dataclass `cls` from `params[key]` (a dotted key reaches nested sections)."""
    section: Any = params
    for part in key.split("."):
        if not isinstance(section, dict) or part not in section:
            raise UserError(f"{PARAMS_FILE}: missing section '{key}'")
        section = section[part]
    if not isinstance(section, dict):
        raise UserError(f"{PARAMS_FILE}: '{key}' must be a mapping")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(section) - set(fields))
    if unknown:
        raise UserError(
            f"{PARAMS_FILE}: unknown key '{key}.{unknown[0]}' (known: {', '.join(fields)})"
        )
    values = {}
    for name, field in fields.items():
        if name not in section:
            no_default = (
                field.default is dataclasses.MISSING
                and field.default_factory is dataclasses.MISSING
            )
            if no_default:
                raise UserError(f"{PARAMS_FILE}: missing key '{key}.{name}'")
            continue
        value = section[name]
        if not _matches(value, hints[name]):
            raise UserError(
                f"{PARAMS_FILE}: '{key}.{name}' must be {_describe(hints[name])}, got {value!r}"
            )
        values[name] = float(value) if hints[name] is float else value
    obj = cls(**values)
    check = getattr(obj, "check", None)
    if check is not None:
        check(key)
    return obj


def require(condition: bool, key: str, message: str) -> None:
    """Raise a UserError naming `params.yaml` key `key` unless `condition` holds."""
    if not condition:
        raise UserError(f"{PARAMS_FILE}: '{key}' {message}")


def param_list(params: dict[str, Any], key: str, kind: type) -> list:
    """The non-empty list of distinct `kind` values at dotted `key` ('train.seeds', 'systems'):
    for stages that read another stage's section without owning it."""
    value: Any = params
    for part in key.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    require(isinstance(value, list) and len(value) > 0 and len(set(value)) == len(value)
            and all(type(v) is kind for v in value), key,
            f"must be a non-empty list of distinct {kind.__name__} values")
    return value


def override(params: dict, assignment: str) -> None:
    """Apply one `dotted.key=YAML value` (a command's --set) to params; the key must
    exist."""
    key, sep, text = assignment.partition("=")
    if not sep:
        raise UserError(f"--set {assignment!r}: expected key=value")
    section, parts = params, key.split(".")
    for part in parts[:-1]:
        if not isinstance(section.get(part), dict):
            raise UserError(f"--set {assignment!r}: params.yaml has no section '{part}'")
        section = section[part]
    if parts[-1] not in section:
        raise UserError(f"--set {assignment!r}: params.yaml has no key '{key}'")
    section[parts[-1]] = yaml.safe_load(text)


def help_text(cls: type) -> str:
    """One line per field: name, default and help, for `--help` output and the README."""
    lines = []
    for field in dataclasses.fields(cls):
        default = field.default if field.default is not dataclasses.MISSING else "required"
        if field.default_factory is not dataclasses.MISSING:
            default = field.default_factory()
        lines.append(f"  {field.name} (default {default!r}): {field.metadata.get('help', '')}")
    return "\n".join(lines)


def run_main(main: Callable[[list[str] | None], None], argv: list[str] | None = None) -> None:
    """Run a stage's main; a UserError becomes one line on stderr and exit status 2."""
    try:
        main(argv)
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
