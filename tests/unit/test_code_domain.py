"""The code domain: MBPP's split and no leak into training, the prompt, code extraction from
messy answers, and the checker on canonical and wrong solutions."""

import os
import sys

import pytest

from polychromic.domains import load_domain
from polychromic.domains.code import Code, normalised
from polychromic.domains.code.extract import extract_code
from polychromic.modeling import prompt_text

UID = 1_990_200_000
needs_sandbox = pytest.mark.skipif(not sys.platform.startswith("linux") or os.geteuid() != 0,
                                   reason="the namespaced sandbox needs root on Linux")


def domain(test_set="mbpp", visible_tests=1, **checker):
    params = {"code": {"data": {"test_set": test_set},
                       "prompt": {"visible_tests": visible_tests}, "sampling": {},
                       "checker": {"workers": 2, "uid": UID, **checker}, "train": {}}}
    return load_domain("code", params)


@pytest.fixture(scope="module")
def mbpp():
    return domain().load_splits()


@pytest.fixture(scope="module")
def humaneval():
    return domain("humaneval").load_splits()


def task_id(record):
    return int(record["id"].removeprefix("mbpp-"))


def test_mbpp_split_follows_its_own_convention(mbpp):
    sizes = {name: len(records) for name, records in mbpp.items()}
    # 120 training problems, less 608 (a copy of test problem 67); MBPP's 257 test problems
    # held out: the first 40 by task id are dev, the other 217 the sealed confirmation split
    # less 104 and 141 (worded as val's 569 and dev's 71)
    assert sizes == {"train": 119, "val": 43, "dev": 40, "confirmation": 215, "fewshot": 7}
    assert not {"mbpp-104", "mbpp-141"} & {r["id"] for r in mbpp["confirmation"]}
    assert all(601 <= task_id(r) for r in mbpp["train"])
    assert all(511 <= task_id(r) <= 600 for r in mbpp["val"])
    assert all(11 <= task_id(r) <= 510 for r in mbpp["dev"] + mbpp["confirmation"])
    assert max(map(task_id, mbpp["dev"])) < min(map(task_id, mbpp["confirmation"]))
    assert all(task_id(r) <= 10 for r in mbpp["fewshot"])
    assert "mbpp-608" not in {r["id"] for r in mbpp["train"]}


@pytest.mark.parametrize("test_set", ["mbpp", "humaneval"])
def test_no_test_problem_is_trained_on_or_shown(mbpp, humaneval, test_set):
    """Neither by id, nor by its text, nor by its reference solution (up to case and
    spaces) does a held-out problem (dev, confirmation) appear in train or among the
    few-shot examples."""
    splits = mbpp if test_set == "mbpp" else humaneval
    test = splits["dev"] + splits["confirmation"]
    assert len(splits["dev"]) == (40 if test_set == "mbpp" else 164)
    ids = {r["id"] for r in test}
    texts = {normalised(t) for r in test for t in [r["prompt"], *r["references"]]}
    for name in ("train", "fewshot"):
        for record in splits[name]:
            assert record["id"] not in ids
            assert not {normalised(t) for t in [record["prompt"], *record["references"]]} & texts


def test_prompt_shows_visible_tests_and_opens_the_code_block(mbpp, tokenizer_dir):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    record = mbpp["dev"][0]
    one, three = domain(visible_tests=1), domain(visible_tests=3)
    text = prompt_text(tokenizer, one.messages(record), one.assistant_prefix(record))
    asserts = record["task"]["shown_tests"]
    assert record["prompt"] in text and asserts[0] in text and asserts[1] not in text
    assert text.endswith("<|im_start|>assistant\n```python\n")
    assert all(a in prompt_text(tokenizer, three.messages(record)) for a in asserts[:3])
    # few-shot: each example answers inside a closed block, as the model is asked to
    shots = one.messages(record, mbpp["fewshot"][:2])
    assert [m["role"] for m in shots] == ["system", "user", "assistant", "user", "assistant",
                                          "user"]
    assert shots[2]["content"] == "```python\n" + mbpp["fewshot"][0]["references"][0] + "\n```"
    # training target: the continuation after the prefix, closed by the fence
    assert one.target(record, "def f():\n    pass\n") == "def f():\n    pass\n```"


def test_humaneval_answer_is_the_whole_function_after_its_prompt(humaneval):
    record = humaneval["dev"][0]
    code = domain("humaneval")
    assert code.assistant_prefix(record) == "```python\n"
    assert record["prompt"] in code.user_message(record)
    assert record["references"][0].startswith(record["task"]["header"])
    name = record["task"]["entry_point"]
    assert len(record["task"]["tests"]) == 7  # HumanEval/0's check: 7 asserts, one test each
    assert all(t.split("\n")[-1].startswith(f"assert {name}(") for t in record["task"]["tests"])


MESSY = [
    # (answer as the model continued it, after the "```python\n" prefix)
    ("def add(a, b):\n    return a + b\n```\n\nThis adds two numbers.", "prefix + closing"),
    ("def add(a, b):\n    return a + b\n\nprint(add(1, ", "truncated usage line"),
    ("def add(a, b):\n    return a + b```", "fence at the end of a code line"),
    ("Here is the function:\ndef add(a, b):\n    return a + b\n", "prose before the code"),
    ("def add(a, b):\r\n    return a + b\r\n", "Windows line ends"),
    ("    def add(a, b):\n        return a + b\n", "indented block"),
    ("```\n\nUse it like this:\n```py\nprint(add(2, 3))\n```\n\n```python\ndef add(a, b):\n"
     "    return a + b\n```", "empty block, usage block, then the function"),
    ("```\n```text\n5\n```\n```python3\ndef add(a, b):\n    return a + b\n", "output block"),
]


@pytest.mark.parametrize("answer,case", MESSY, ids=[case for _, case in MESSY])
def test_extraction_recovers_the_program_from_messy_answers(answer, case):
    code = extract_code("```python\n" + answer, "add")
    namespace = {}
    exec(code, namespace)  # noqa: S102 - our own fixed strings
    assert namespace["add"](2, 3) == 5, (case, code)


def test_extraction_without_fences_and_of_broken_code():
    assert extract_code("def add(a, b): return a + b", "add") == "def add(a, b): return a + b\n"
    broken = "def add(a, b)\n    return a +\n"
    assert extract_code("```python\n" + broken, "add") == broken  # nothing parses: as it is


@needs_sandbox
def test_canonical_solutions_pass_and_wrong_ones_fail(mbpp, humaneval):
    """Every MBPP reference solution (all splits) and every HumanEval canonical solution
    passes the checker with the prefix it would follow; a wrong one fails. (A generous
    timeout: MBPP 123's reference takes ~6 s on this machine, over the default 3 s.)"""
    records = [r for split in mbpp.values() for r in split] + humaneval["dev"]
    code = domain(timeout_s=30.0, cpu_s=30.0)
    with code.checker([]) as checker:
        right = checker.verdicts([(r, [r["references"][0]]) for r in records])
        wrong = checker.verdicts([(r, [f"def {r['task']['entry_point']}(*args):\n"
                                       "    return None\n"])
                                  for r in records[::25]])
    failed = [r["id"] for r, [v] in zip(records, right, strict=True) if not v.passed]
    assert failed == []
    assert all(v.values == {"parses": 1.0, "tests_passed": 1.0} for [v] in right)
    assert not any(v.passed for [v] in wrong)


@needs_sandbox
def test_reward_is_the_share_of_visible_tests_and_check_needs_all(mbpp):
    """The set objective's reward runs the visible tests only; the checker runs all."""
    def simple(record):  # 3 tests, one call each, no recursion, no expected None
        name, tests = record["task"]["entry_point"], record["task"]["tests"]
        return (len(tests) == 3 and record["references"][0].count(name) == 1
                and all(t.count(name) == 1 and "None" not in t for t in tests))

    record = next(r for r in mbpp["train"] if simple(r))
    name = record["task"]["entry_point"]
    # the reference answers its first call (the first test) and nothing after
    cheat = (f"{record['references'][0]}\n_real, _calls = {name}, []\n"
             f"def {name}(*args, **kwargs):\n    _calls.append(1)\n"
             "    return _real(*args, **kwargs) if len(_calls) == 1 else None\n")
    with domain(visible_tests=1).checker([]) as one, domain(visible_tests=2).checker([]) as two:
        assert one.reward(record, cheat + "```") == 1.0
        assert two.reward(record, cheat + "```") == 0.5
        assert one.check(record, cheat + "```") is False
        assert one.reward(record, record["references"][0]) == 1.0
        assert one.check(record, record["references"][0]) is True


def test_stop_strings_keep_the_function_and_drop_its_demonstration():
    from polychromic.sampling import cut_at_stop

    answer = ("def add(a, b):\n    # sum\n    return a + b\n\n# Example usage:\n"
              "print(add(2, 3))\nassert add(1, 1) == 2\n```\nThat is all.")
    kept = cut_at_stop(answer, Code.stop)
    assert kept == "def add(a, b):\n    # sum\n    return a + b\n"
    indented = "def f():\n    print(1)\n    assert True\n    return 2\n"
    assert cut_at_stop(indented, Code.stop) == indented  # only top-level lines stop it


def test_code_domain_declares_its_metrics():
    assert Code.quality_metrics == ("log_perplexity",)
    assert set(Code.domain_metrics) == {"parses", "tests_passed"}
    assert Code.judge_rubric is None and Code.stop[0] == "```"


def test_humaneval_checks_become_one_test_per_assert():
    """So that each is judged outside the program (probes.py); a check with a loop of
    asserts stays whole, judged inside, as before."""
    from polychromic.domains.code import humaneval_tests

    test = ("METADATA = {'author': 'x'}\n\ndef check(candidate):\n    import math\n"
            "    assert candidate(2) == 4, 'doubles'\n"
            "    assert math.isclose(candidate(0.5), 1.0)\n")
    assert humaneval_tests(test, "double") == [
        "METADATA = {'author': 'x'}\nimport math\nassert double(2) == 4, 'doubles'",
        "METADATA = {'author': 'x'}\nimport math\nassert math.isclose(double(0.5), 1.0)"]
    looped = "def check(candidate):\n    for x in range(3):\n        assert candidate(x) == 2 * x\n"
    assert humaneval_tests(looped, "double") == [f"{looped}\ncheck(double)"]
    uses = "def check(candidate):\n    f = candidate\n    assert f(1) == 2\n"
    assert humaneval_tests(uses, "double") == [f"{uses}\ncheck(double)"]
