"""Tests judged outside the program's reach, and a program's behaviour read as data.

A program and its tests share one interpreter, so a program can decide its own verdict: an
object whose `__eq__` always answers True, a replaced `exec`, an edited test list. Here a
test of the form "setup statements, then one assert" is split in two:

- **probes**, the subexpressions of the assert that only the program can compute (those
  that name something the program defines): evaluated inside the sandbox, each value sent
  out as plain data (`encode`: None, bool, int, float, complex, str, bytes, and lists,
  tuples, sets, frozensets and dicts of those). Anything else (a generator, a custom
  object) is not plain, and its test fails;
- the **verdict**: the assert's expression with each probe replaced by its decoded value,
  evaluated outside, where no code of the program runs (`judge`).

A program can still compute wrong values or refuse to answer; it cannot make a wrong value
compare equal, and the expected values never enter its process. Which names belong to the
program: the entry point (MBPP's task 126 is a function named `sum`), and every name the
assert reads that is not a builtin, not defined by the test's own setup and not a
standard-library module (`math`, `re`: imported outside as themselves, so that a program
cannot stand in for them, nor for `set` or `sorted`). Where the assert asks only for a
truth value (`assert f(x)`, `not f(x)`, `f(x) and g(y)`), the probe is `bool(...)` of it:
a regex match object is not plain data, its truth value is, and a program that decides its
own truth value could as well have returned True.
"""

from __future__ import annotations

import ast
import builtins
import hashlib
import importlib
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

# the encoder runs inside the sandbox, so it lives in the worker's file (which imports nothing
# of this package); decode() is its inverse here
from polychromic.domains.code.sandbox_worker import MAX_DEPTH, NotPlain, encode  # noqa: F401

PROBE = "__probe_{}"
BUILTIN_NAMES = frozenset(dir(builtins))


@dataclass(frozen=True)
class Plan:
    setup: str  # the statements before the assert (run inside, and again outside)
    probes: tuple[str, ...]  # expressions evaluated inside the sandbox, in order
    verdict: str  # the assert's expression, probe j replaced by PROBE.format(j)


def defined_names(statements: list[ast.stmt]) -> set[str]:
    """The names that a test's setup statements bind."""
    names: set[str] = set()
    for node in ast.walk(ast.Module(body=statements, type_ignores=[])):
        if isinstance(node, ast.Import | ast.ImportFrom):
            names.update((a.asname or a.name).split(".")[0] for a in node.names)
        elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            names.add(node.name)
        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            names.add(node.id)
    return names


def plan(test: str, entry_point: str | None = None) -> Plan | None:
    """The test split into probes and verdict; None when it is not setup + one assert (the
    test then runs inside the sandbox as a whole, unprotected). `entry_point`: the function
    under test, the program's even where a builtin has its name."""
    try:
        tree = ast.parse(test)
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return None
    if not tree.body or not isinstance(tree.body[-1], ast.Assert):
        return None
    *setup, check = tree.body
    if any(isinstance(node, ast.Assert) for node in setup):
        return None
    test_side = (BUILTIN_NAMES | defined_names(setup) | set(sys.stdlib_module_names)) - {
        entry_point}

    def of_program(node: ast.AST) -> bool:
        return any(isinstance(n, ast.Name) and n.id not in test_side for n in ast.walk(node))

    probes: list[str] = []

    def probe(node: ast.expr, truth: bool = False) -> ast.expr:
        probes.append(f"bool({ast.unparse(node)})" if truth else ast.unparse(node))
        return ast.copy_location(ast.Name(id=PROBE.format(len(probes) - 1), ctx=ast.Load()),
                                 node)

    def operand(node: ast.expr) -> ast.expr:
        return probe(node) if of_program(node) else node

    def split(node: ast.expr) -> ast.expr:
        """`node` in a truth context: the assert's expression, or an operand of not/and/or."""
        if not of_program(node):
            return node
        if isinstance(node, ast.Compare):
            node.left = operand(node.left)
            node.comparators = [operand(c) for c in node.comparators]
            return node
        if isinstance(node, ast.BoolOp):
            node.values = [split(v) for v in node.values]
            return node
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not):
            node.operand = split(node.operand)
            return node
        if isinstance(node, ast.Call) and not of_program(node.func):  # math.isclose(f(x), y)
            node.args = [operand(a) for a in node.args]
            for keyword in node.keywords:
                keyword.value = operand(keyword.value)
            return node
        return probe(node, truth=True)

    verdict = split(check.test)
    return Plan(setup="\n".join(ast.unparse(s) for s in setup), probes=tuple(probes),
                verdict=ast.unparse(verdict))


def decode(data: Any) -> Any:
    """The value that `encode` wrote, built from builtins only; ValueError when malformed
    (the data comes from the sandbox: it may be anything)."""
    def walk(item: Any, depth: int) -> Any:
        if depth > MAX_DEPTH + 1 or not isinstance(item, list) or not item:
            raise ValueError("malformed probe value")
        tag, *rest = item
        if tag == "N" and not rest:
            return None
        if tag == "b" and len(rest) == 1 and isinstance(rest[0], bool):
            return rest[0]
        if tag == "i" and len(rest) == 1 and isinstance(rest[0], str):
            return int(rest[0])
        if tag == "f" and len(rest) == 1 and isinstance(rest[0], str):
            return float(rest[0])
        if tag == "c" and len(rest) == 2 and all(isinstance(r, str) for r in rest):
            return complex(float(rest[0]), float(rest[1]))
        if tag == "s" and len(rest) == 1 and isinstance(rest[0], str):
            return rest[0]
        if tag == "y" and len(rest) == 1 and isinstance(rest[0], str):
            return bytes.fromhex(rest[0])
        kinds = {"l": list, "t": tuple, "S": set, "F": frozenset}
        if tag in kinds and len(rest) == 1 and isinstance(rest[0], list):
            return kinds[tag](walk(v, depth + 1) for v in rest[0])
        if tag == "d" and len(rest) == 1 and isinstance(rest[0], list):
            pairs = rest[0]
            if not all(isinstance(p, list) and len(p) == 2 for p in pairs):
                raise ValueError("malformed probe value")
            return {walk(k, depth + 1): walk(v, depth + 1) for k, v in pairs}
        raise ValueError("malformed probe value")

    try:
        return walk(data, 0)
    except TypeError:  # an unhashable key or set member
        raise ValueError("malformed probe value") from None


def judge(test_plan: Plan, values: list[Any]) -> bool:
    """Whether the assert holds with `values` in the probes' places: the test's setup, then
    its expression, in a fresh namespace where no code of the program ever ran."""
    namespace: dict[str, Any] = {"__builtins__": builtins}
    try:
        exec(compile(test_plan.setup, "setup.py", "exec"), namespace)  # noqa: S102 - the test's
        verdict = ast.parse(test_plan.verdict, mode="eval")
        for node in ast.walk(verdict):
            if (isinstance(node, ast.Name) and node.id in sys.stdlib_module_names
                    and node.id not in namespace):
                namespace[node.id] = importlib.import_module(node.id)
        namespace.update({PROBE.format(j): value for j, value in enumerate(values)})
        return bool(eval(compile(verdict, "verdict.py", "eval"), namespace))  # noqa: S307
    except Exception:  # noqa: BLE001 - a test that raises has not passed
        return False


# -- behaviour: what a program computes, for its equivalence class ------------------------
def canonical(value: Any) -> str:
    """A decoded value as text that equal values share: sets and dicts in sorted order, and
    numbers by value (1, 1.0 and True compare equal in a test's assert, so they do here)."""
    if isinstance(value, bool | int) or (isinstance(value, float) and value.is_integer()
                                         and abs(value) < 2**53):
        return str(int(value))
    if isinstance(value, float | complex | bytes | type(None)):
        return repr(value)
    if isinstance(value, str):
        return repr(value)
    if isinstance(value, list | tuple):
        return "[" + ",".join(canonical(v) for v in value) + "]"
    if isinstance(value, set | frozenset):
        return "{" + ",".join(sorted(canonical(v) for v in value)) + "}"
    if isinstance(value, dict):
        return "{" + ",".join(sorted(f"{canonical(k)}:{canonical(v)}"
                                     for k, v in value.items())) + "}"
    raise TypeError(f"not a decoded value: {type(value).__name__}")


def shifted(value: Any, which: int) -> Any:
    """Another input of the same type: `which` 0 or 1 picks one of two simple changes."""
    if isinstance(value, bool):
        return not value
    if isinstance(value, int):
        return value + 1 if which == 0 else (value * 2 if value else 3)
    if isinstance(value, float):
        return value + 0.5 if which == 0 else value * 2 or 1.5
    if isinstance(value, str):  # a palindrome reversed is itself: then the other change
        return value[::-1] if which == 0 and value != value[::-1] else value + (value[:1] or "a")
    if isinstance(value, list | tuple):
        if which == 0 and list(value) != list(value)[::-1]:
            return type(value)(value[::-1])
        return type(value)(value[:-1] if len(value) > 1 else value * 2)
    return value


def variants(tests: Sequence[str], entry_point: str | None, per_call: int = 2) -> list[str]:
    """Extra inputs for telling programs apart: each call `entry_point(literal, ...)` that a
    test probes, with its arguments changed (`shifted`), as probe-only tests (`assert call is
    not ...`: only the call's value is read). Calls that the tests already make, and repeats,
    are left out."""
    if not entry_point:
        return []
    seen: set[str] = set()
    calls: list[ast.Call] = []
    for test in tests:
        test_plan = plan(test, entry_point)
        for probe in test_plan.probes if test_plan else ():
            node = ast.parse(probe, mode="eval").body
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
                    and node.func.id == entry_point and not node.keywords):
                seen.add(ast.unparse(node))
                calls.append(node)
    out = []
    for call in calls:
        try:
            args = [ast.literal_eval(a) for a in call.args]
        except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
            continue  # not literals: left alone
        for which in range(per_call):
            text = f"{entry_point}({', '.join(repr(shifted(a, which)) for a in args)})"
            if text not in seen:
                seen.add(text)
                out.append(f"assert {text} is not ...")
    return out


def behaviour_label(status: str, values: Sequence[str | None]) -> str:
    """A program's equivalence class: how it ended and what each test's probes computed
    (None: a probe raised or sent nothing). Programs that never reached their tests (a
    syntax error, no function) are one class."""
    if status == "error":
        return "error"
    text = repr((status, tuple(values)))
    return hashlib.sha1(text.encode()).hexdigest()[:16]
