"""Property-based tests of every parser of user input (Hypothesis): a user's data file for
each domain, in JSONL and CSV, and edits of params.yaml. Whatever the input, the result is
a valid load or one clear line (a UserError naming the file, or the params key), never a
traceback. 1,500 generated cases a run in all (the `max_examples` below)."""

from __future__ import annotations

import contextlib
import copy
import csv
import io
import json
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from polychromic.config import UserError
from polychromic.domains import code, qa, replies
from polychromic.params_check import check_all
from polychromic.settings import listed
from tests.helpers import REPO

PARAMS = yaml.safe_load((REPO / "params.yaml").read_text())
SETTINGS = settings(max_examples=250, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

# values a field may hold: the right kinds and the wrong ones, with the characters that broke
# parsers before (lone surrogates, NUL, huge integers, deep nesting)
scalars = (st.none() | st.booleans() | st.integers() | st.integers(min_value=10**300)
           | st.floats() | st.text() | st.sampled_from(["", " ", "\ud800", "a\x00b", "1e999",
                                                        "nan", "assert f(1) == 1", "def f(:"]))
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=3)
                      | st.dictionaries(st.text(max_size=6), inner, max_size=3), max_leaves=8)


def records(fields: list[str]) -> st.SearchStrategy[dict]:
    """Mostly the domain's own fields (sometimes missing), now and then a stranger."""
    return st.fixed_dictionaries({}, optional={name: values for name in fields}) | st.dictionaries(
        st.sampled_from([*fields, "extra"]), values, max_size=len(fields) + 1)


def jsonl_text(rows: list[dict], broken: list[str]) -> str:
    lines = []
    for row in rows:
        try:
            lines.append(json.dumps(row, ensure_ascii=False, allow_nan=True))
        except ValueError:  # a string json cannot encode (it can encode lone surrogates)
            lines.append("{")
    return "\n".join(lines + broken) + "\n"


def csv_text(fields: list[str], rows: list[dict]) -> str:
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(fields)
    for row in rows:
        writer.writerow(["" if row.get(name) is None else row.get(name) for name in fields])
    return out.getvalue()


@contextlib.contextmanager
def in_folder() -> Iterator[Path]:
    """A fresh working folder (user files must be under data/user/<domain>/, relative)."""
    before = os.getcwd()
    with tempfile.TemporaryDirectory() as folder:
        os.chdir(folder)
        try:
            yield Path(folder)
        finally:
            os.chdir(before)


def loads_or_one_clear_line(domain: str, name: str, data: bytes,
                            load: Callable[[str], object]) -> None:
    with in_folder():
        path = Path("data/user", domain, name)
        path.parent.mkdir(parents=True)
        path.write_bytes(data)
        try:
            load(str(path))
        except UserError as err:
            message = str(err)
            assert "\n" not in message and message.startswith(str(path)), message


LOADERS = {
    "replies": (list(replies.USER_SCHEMA), lambda file: replies.user_pairs(Path(file))),
    "code": (list(code.USER_SCHEMA),
             lambda file: code.user_splits(code.CodeData(file=file), "code.data")),
    "qa": (list(qa.USER_SCHEMA), lambda file: qa.user_splits(qa.QaData(file=file), "qa.data")),
}


def file_contents(fields: list[str]) -> st.SearchStrategy[tuple[str, bytes]]:
    rows = st.lists(records(fields), max_size=6)
    broken = st.lists(st.text(max_size=20) | st.sampled_from(["[" * 3000, "{]", "NaN"]),
                      max_size=2)
    as_jsonl = st.builds(lambda r, b: ("user.jsonl", jsonl_text(r, b).encode("utf-8",
                                                                             "surrogatepass")),
                         rows, broken)
    as_csv = st.builds(lambda r: ("user.csv", csv_text(fields, r).encode("utf-8",
                                                                         "surrogatepass")),
                       rows)
    raw = st.tuples(st.sampled_from(["user.jsonl", "user.csv"]), st.binary(max_size=200))
    return as_jsonl | as_csv | raw


@pytest.mark.parametrize("domain", list(LOADERS))
def test_any_user_file_loads_or_stops_with_one_line(domain):
    fields, load = LOADERS[domain]

    @SETTINGS
    @given(file_contents(fields))
    def check(named: tuple[str, bytes]) -> None:
        name, data = named
        loads_or_one_clear_line(domain, name, data, load)

    check()


def key_paths(tree: dict, prefix: str = "") -> list[str]:
    paths = []
    for key, value in tree.items():
        path = f"{prefix}{key}"
        paths.append(path)
        if isinstance(value, dict):
            paths += key_paths(value, f"{path}.")
    return paths


@SETTINGS
@given(st.lists(st.tuples(st.sampled_from(key_paths(PARAMS)), values), min_size=1, max_size=3))
def test_any_params_edit_is_checked_or_refused_with_one_line(edits):
    params = copy.deepcopy(PARAMS)
    for path, value in edits:
        *parents, last = path.split(".")
        section = params
        for part in parents:
            if not isinstance(section.get(part), dict):
                break
            section = section[part]
        else:
            section[last] = value
    try:
        check_all(params)
        listed(params, "systems")
    except UserError as err:
        message = str(err)
        assert "\n" not in message and message.startswith("params.yaml"), message
