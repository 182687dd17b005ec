"""Tests judged outside the program (domains/code/probes.py): the split of a test into probes
and verdict, plain data in and out, and the tricks that no longer make a wrong answer pass."""

import math
from collections import Counter, OrderedDict, namedtuple

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from polychromic.domains.code.probes import NotPlain, Plan, decode, encode, judge, plan


@pytest.mark.parametrize("test,expected", [
    ("assert add(2, 3) == 5", Plan("", ("add(2, 3)",), "__probe_0 == 5")),
    ("assert set(similar((3, 4), (5, 4))) == set((4,))",
     Plan("", ("set(similar((3, 4), (5, 4)))",), "__probe_0 == set((4,))")),
    ("import math\nassert math.isclose(area(2), 12.56, rel_tol=0.001)",
     Plan("import math", ("area(2)",), "math.isclose(__probe_0, 12.56, rel_tol=0.001)")),
    ("assert math.isclose(area(2), 12.56)",  # math from the standard library, not the program
     Plan("", ("area(2)",), "math.isclose(__probe_0, 12.56)")),
    ("assert not is_odd(4)", Plan("", ("bool(is_odd(4))",), "not __probe_0")),
    ("assert f(1) == 2 and f(2) != f(3)",
     Plan("", ("f(1)", "f(2)", "f(3)"), "__probe_0 == 2 and __probe_1 != __probe_2")),
    ("assert is_prime(7)", Plan("", ("bool(is_prime(7))",), "__probe_0")),  # a match object
    ("xs = [3, 1]\nassert sort_list(xs) == sorted(xs)",
     Plan("xs = [3, 1]", ("sort_list(xs)",), "__probe_0 == sorted(xs)")),
    ("assert Pair(1, 2).total() is 3", Plan("", ("Pair(1, 2).total()",), "__probe_0 is 3")),
])
def test_a_test_splits_into_probes_and_a_verdict(test, expected):
    assert plan(test) == expected


def test_the_entry_point_is_the_programs_even_with_a_builtins_name():
    """MBPP task 126 defines `sum`; a program that redefines `set` does not get to decide
    the expected side."""
    assert plan("assert sum(10, 15) == 6", "sum") == Plan("", ("sum(10, 15)",),
                                                          "__probe_0 == 6")
    assert plan("assert set(f(1)) == set((4,))", "f") == Plan("", ("set(f(1))",),
                                                              "__probe_0 == set((4,))")


@pytest.mark.parametrize("test", ["check(candidate)", "def check(c):\n    assert c(1) == 2\n",
                                  "assert f(1) == 1\nassert f(2) == 2", "assert (", ""])
def test_what_is_not_setup_and_one_assert_has_no_plan(test):
    assert plan(test) is None


plain = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text() | st.binary()
    | st.complex_numbers(),
    lambda inner: (st.lists(inner, max_size=4) | st.lists(inner, max_size=4).map(tuple)
                   | st.frozensets(st.integers() | st.text(), max_size=4)
                   | st.sets(st.integers() | st.text(), max_size=4)
                   | st.dictionaries(st.integers() | st.text(), inner, max_size=4)),
    max_leaves=12)


@settings(max_examples=300, derandomize=True)
@given(plain)
def test_plain_values_cross_unchanged(value):
    assert same(decode(encode(value)), value)


def same(a, b) -> bool:
    """Equal, and of the same types all the way down (nan and -0.0 by their repr)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, float | complex):
        return repr(a) == repr(b)
    if isinstance(a, list | tuple):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    return a == b


class AlwaysEqual:
    def __eq__(self, other):
        return True

    __hash__ = object.__hash__


class PosingAsInt:
    __class__ = property(lambda self: int)  # isinstance(x, int) says True


class LyingInt(int):
    def __eq__(self, other):
        return True

    __hash__ = int.__hash__


class LyingList(list):
    def __eq__(self, other):
        return True

    def __iter__(self):
        return iter([1, 2, 3])


def test_objects_that_lie_are_not_plain_or_are_read_as_what_they_are():
    with pytest.raises(NotPlain):
        encode(AlwaysEqual())
    with pytest.raises(NotPlain):
        encode(PosingAsInt())
    with pytest.raises(NotPlain):
        encode(x for x in [1])  # a generator
    assert decode(encode(LyingInt(4))) == 4 and type(decode(encode(LyingInt(4)))) is int
    assert decode(encode(LyingList([7]))) == [7]  # list's own iteration, not the override
    with pytest.raises(NotPlain, match="nested too deeply"):
        encode(eval("[" * 80 + "]" * 80))  # noqa: S307
    with pytest.raises(NotPlain, match="too large"):
        encode(["x" * 1_000_000] * 200)


def test_subclasses_of_plain_types_cross_as_those_types():
    Point = namedtuple("Point", "x y")
    assert decode(encode(Point(1, 2))) == (1, 2)
    assert decode(encode(Counter("aab"))) == {"a": 2, "b": 1}
    assert decode(encode(OrderedDict(b=1, a=2))) == {"b": 1, "a": 2}


@pytest.mark.parametrize("data", [[], ["i"], ["i", 3], ["q", "1"], ["l", "x"],
                                  ["d", [["l", []], ["N"]]], ["d", [[["l", []], ["N"]]]],
                                  "i", ["S", [["l", []]]]])
def test_malformed_data_from_the_sandbox_is_refused(data):
    with pytest.raises(ValueError, match="malformed probe value"):
        decode(data)


def test_the_verdict_is_taken_on_the_values_outside():
    add = plan("assert add(2, 3) == 5")
    assert judge(add, [5]) and not judge(add, [6]) and not judge(add, [])
    assert not judge(add, ["5"])
    area = plan("import math\nassert math.isclose(area(2), 12.56, rel_tol=0.001)")
    assert judge(area, [4 * math.pi]) and not judge(area, [12.0])
    stdlib = plan("assert math.isclose(area(2), 12.56, rel_tol=0.001)")
    assert judge(stdlib, [12.5664])  # math imported outside, as itself
    assert not judge(plan("assert is_prime(7)"), [[]]) and judge(plan("assert is_prime(7)"),
                                                                  [True])
