"""Reading and checking `params.yaml`.

Each stage owns one section of `params.yaml`, described by a dataclass whose fields carry
help text (`metadata={"help": ...}`). `load_section` turns the YAML section into that
dataclass, refusing unknown keys and wrong types with a message naming the params key, and
each dataclass's `check()` enforces ranges the same way.
"""

from __future__ import annotations

import atexit
import dataclasses
import json
import math
import os
import sys
import types
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import yaml

PARAMS_FILE = "params.yaml"
TRACE_ENV = "POLYCHROMIC_PARAMS_TRACE"
"""When set, a file to which each process appends the params keys it read (as a JSON line):
how tests/e2e/test_pipeline.py checks that every stage declares the params it reads."""
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
    params = read_yaml_mapping(path)
    if os.environ.get(TRACE_ENV):
        params = TracedParams.start(params, Path(os.environ[TRACE_ENV]))
    return params


class TracedParams(dict):
    """params.yaml's mapping, noting the dotted key of every value read that is not itself a
    mapping (a section): what a stage reads, to compare with what dvc.yaml declares."""

    def __init__(self, data: dict, path: str, read: set[str]):
        super().__init__(data)
        self.path, self.read = path, read

    @classmethod
    def start(cls, params: dict, trace: Path) -> TracedParams:
        read: set[str] = set()

        def save() -> None:
            with trace.open("a", encoding="utf-8") as out:
                out.write(json.dumps({"argv": sys.argv[1:], "read": sorted(read)}) + "\n")

        atexit.register(save)
        return cls(params, "", read)

    def _seen(self, key: str, value: Any) -> Any:
        where = dotted(self.path, key)
        if isinstance(value, dict):
            return TracedParams(value, where, self.read)
        self.read.add(where)
        return value

    def __getitem__(self, key: str) -> Any:
        return self._seen(key, super().__getitem__(key))

    def get(self, key: str, default: Any = None) -> Any:
        return self[key] if key in self else default


def matches(value: Any, annotation: Any) -> bool:
    origin = typing.get_origin(annotation)
    if annotation is Any:
        return True
    if origin in (typing.Union, types.UnionType):
        return any(matches(value, arg) for arg in typing.get_args(annotation))
    if origin is typing.Literal:
        return value in typing.get_args(annotation)
    if origin in (list, tuple):
        (item,) = typing.get_args(annotation)[:1] or (Any,)
        return isinstance(value, list) and all(matches(v, item) for v in value)
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


def finite(value: Any) -> bool:
    """No inf or nan in a value (or the items of a list)."""
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, list):
        return all(map(finite, value))
    return True


def dotted(key: str, name: str) -> str:
    """`name` inside section `key` ('' is the top level of params.yaml)."""
    return f"{key}.{name}" if key else name


def load_section(cls: type[T], params: dict[str, Any], key: str,
                 only: tuple[str, ...] | None = None) -> T:
    """Build dataclass `cls` from `params[key]` (a dotted key reaches nested sections; ''
    is the top level). A field whose type is a dataclass is a nested section, built the same
    way. `only`: read just these keys of the section (the others keep their defaults), for
    a stage that reads, and declares in dvc.yaml, one key of another stage's section."""
    section: Any = params
    for part in key.split(".") if key else ():
        if not isinstance(section, dict) or part not in section:
            raise UserError(f"{PARAMS_FILE}: missing section '{key}'")
        section = section[part]
    if only is not None and isinstance(section, dict):
        section = {name: section[name] for name in only if name in section}
    return build_section(cls, section, key)


def build_section(cls: type[T], section: Any, key: str) -> T:
    """Dataclass `cls` from the mapping `section`, which is params key `key`."""
    if not isinstance(section, dict):
        raise UserError(f"{PARAMS_FILE}: '{key}' must be a mapping")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(section) - set(fields))
    if unknown:
        raise UserError(f"{PARAMS_FILE}: unknown key '{dotted(key, unknown[0])}' "
                        f"(known: {', '.join(fields)})")
    values = {}
    for name, field in fields.items():
        if name not in section:
            no_default = (
                field.default is dataclasses.MISSING
                and field.default_factory is dataclasses.MISSING
            )
            if no_default:
                raise UserError(f"{PARAMS_FILE}: missing key '{dotted(key, name)}'")
            continue
        value = section[name]
        if dataclasses.is_dataclass(hints[name]):
            values[name] = build_section(hints[name], value, dotted(key, name))
            continue
        if not matches(value, hints[name]):
            raise UserError(f"{PARAMS_FILE}: '{dotted(key, name)}' must be "
                            f"{_describe(hints[name])}, got {value!r}")
        if not finite(value):  # YAML's .inf and .nan are floats that no setting means
            raise UserError(f"{PARAMS_FILE}: '{dotted(key, name)}' must be a finite number, "
                            f"got {value!r}")
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


def help_text(cls: type, params: dict[str, Any] | None = None, key: str = "") -> str:
    """One line per field: name, the value a run uses and help, for `--help` output. The
    value is params.yaml's where it sets one (`params`, the whole file; `key`, the section),
    else the schema's default."""
    section: Any = params or {}
    for part in key.split(".") if key else ():
        section = section.get(part, {}) if isinstance(section, dict) else {}
    lines = []
    hints = typing.get_type_hints(cls)
    for field in dataclasses.fields(cls):
        if dataclasses.is_dataclass(hints[field.name]):
            lines.append(f"  {dotted(key, field.name)}:")
            lines.append(help_text(hints[field.name], params, dotted(key, field.name)))
            continue
        if isinstance(section, dict) and field.name in section:
            value = f"{section[field.name]!r} in {PARAMS_FILE}"
        elif field.default is not dataclasses.MISSING:
            value = f"default {field.default!r}"
        elif field.default_factory is not dataclasses.MISSING:
            value = f"default {field.default_factory()!r}"
        else:
            value = "required"
        lines.append(f"  {field.name} ({value}): {field.metadata.get('help', '')}")
    return "\n".join(lines)


def stage_help(description: str, *sections: tuple[type, str]) -> str:
    """A stage's --help text: its docstring, then each of its params sections with the
    values params.yaml gives (or the defaults, where there is no readable params.yaml)."""
    try:
        params = read_params()
    except UserError:
        params = {}
    parts = [description]
    for cls, key in sections:
        parts.append(f"params.yaml {key}:\n" + help_text(cls, params, key))
    return "\n\n".join(parts)


def run_main(main: Callable[[list[str] | None], None], argv: list[str] | None = None) -> None:
    """Run a stage's main; a UserError becomes one line on stderr and exit status 2."""
    try:
        main(argv)
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
