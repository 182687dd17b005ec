"""The program in a model's answer: the right code block, made parseable where a correct
program is only wrapped in noise (prose before it, a truncated line after it).

Losing a correct program here would count as the model's failure, so the rules are tested on
messy output (tests/unit/test_code_domain.py):
- fenced blocks (```lang ... ```; a closing fence may end a code line; an unclosed last
  block runs to the end of the text); blocks tagged with another language (text, output,
  bash, ...) are used only when there is nothing else;
- among the candidates, the first block that defines the entry point, else the first block;
  no fence at all: the whole text;
- Windows line ends and a common indentation are removed;
- if the code does not parse, it is cut to start at its first `def`/`class`/`import`/`from`/
  decorator line, and trailing lines are dropped one by one (a statement cut off by the token
  limit, or prose after the code) until it parses; if nothing parses, the code is returned as
  it is, and fails when run.
"""

from __future__ import annotations

import ast
import re
import textwrap

BLOCK = re.compile(r"```[ \t]*([A-Za-z0-9_+.-]*)[^\n]*\n(.*?)(?:```|\Z)", re.S)
PYTHON = {"", "python", "python3", "py", "py3"}
CODE_START = re.compile(r"^(def |async def |class |import |from |@)", re.M)


def parses(code: str) -> bool:
    try:
        ast.parse(code)
    # ValueError: null bytes; RecursionError, MemoryError: nesting beyond the parser's stack
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return False
    return True


def defines(code: str, name: str) -> bool:
    return re.search(rf"^\s*(async\s+)?def\s+{re.escape(name)}\s*\(", code, re.M) is not None


def choose_block(text: str, entry_point: str | None) -> str:
    blocks = [(lang.lower(), body) for lang, body in BLOCK.findall(text)]
    if not blocks:
        return text
    candidates = [body for lang, body in blocks if lang in PYTHON] or [b for _, b in blocks]
    if entry_point:
        for body in candidates:
            if defines(body, entry_point):
                return body
    return candidates[0]


def make_parseable(code: str) -> str:
    if parses(code):
        return code
    start = CODE_START.search(code)
    if start is not None:
        code = code[start.start():]
    lines = code.splitlines()
    for end in range(len(lines), 0, -1):
        candidate = "\n".join(lines[:end])
        if parses(candidate):
            return candidate + "\n"
    return code


def extract_code(text: str, entry_point: str | None = None) -> str:
    """The program in `text` (the whole answer, with the prefix the model continued)."""
    code = choose_block(text.replace("\r\n", "\n"), entry_point)
    return make_parseable(textwrap.dedent(code).strip("\n") + "\n")
