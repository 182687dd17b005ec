"""dvc.yaml's deps are honest: every file of the package that a stage runs (its module's import
closure, with the domain's package for that matrix item) is a dependency of the stage; and
stages import libraries, never other stages."""

import ast
import re
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO

PACKAGE = REPO / "src" / "polychromic"
STAGES = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
PARAMS = yaml.safe_load((REPO / "params.yaml").read_text())
STAGE_MODULES = {"base_model", "prepare", "train", "generate", "evaluate", "judge", "compare",
                 "report"}
COMMANDS = {"ablations", "bench"}  # run by hand: they may not import stages either


def module_file(name: str) -> Path | None:
    """The source file of module `polychromic...`, or None outside the package."""
    if name != "polychromic" and not name.startswith("polychromic."):
        return None
    path = PACKAGE.parent.joinpath(*name.split("."))
    if path.is_dir():
        return path / "__init__.py"
    return path.with_suffix(".py") if path.with_suffix(".py").is_file() else None


def imports_of(path: Path) -> set[str]:
    """Every module in the package that `path` imports, at any depth of its code."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
            found |= {f"{node.module}.{alias.name}" for alias in node.names}
    return {name for name in found if module_file(name) is not None}


def closure(module: str) -> set[Path]:
    """The files a module runs: itself, its packages' __init__ files, what they import."""
    seen: set[Path] = set()
    todo = [module]
    while todo:
        name = todo.pop()
        parts = name.split(".")
        for depth in range(1, len(parts) + 1):  # importing a.b.c runs a and a.b first
            path = module_file(".".join(parts[:depth]))
            if path is not None and path not in seen:
                seen.add(path)
                todo += sorted(imports_of(path))
    return seen


def matrix_items(stage: dict) -> list[dict]:
    """The matrix items of a stage, as `${item.*}` values (one empty item if none)."""
    matrix = stage.get("matrix")
    if not matrix:
        return [{}]
    items = [{}]
    for key, values in matrix.items():
        if isinstance(values, str):  # ${domains}, ${train.seeds}
            values = PARAMS
            for part in re.fullmatch(r"\$\{(.+)\}", matrix[key]).group(1).split("."):
                values = values[part]
        items = [{**item, key: value} for item in items for value in values]
    return items


def interpolate(text: str, item: dict) -> str:
    return re.sub(r"\$\{item\.(\w+)\}", lambda m: str(item[m.group(1)]), text)


def covered(path: Path, deps: list[str]) -> bool:
    relative = path.relative_to(REPO).as_posix()
    return any(relative == dep or relative.startswith(dep.rstrip("/") + "/") for dep in deps)


CASES = [(name, item) for name, stage in STAGES.items() for item in matrix_items(stage)]


@pytest.mark.parametrize("name,item", CASES, ids=[f"{n}-{i}" for n, i in CASES])
def test_stage_deps_cover_every_file_it_runs(name, item):
    stage = STAGES[name]
    module = re.search(r"python -m (polychromic\.\w+)", stage["cmd"]).group(1)
    deps = [interpolate(dep, item) for dep in stage["deps"]]
    runs = closure(module)
    if "domain" in item and module_file("polychromic.domains") in runs:
        runs |= closure(f"polychromic.domains.{item['domain']}")  # found by name at run time
    if not (PACKAGE / "__init__.py").read_text().strip():  # empty: nothing to track
        runs.discard(PACKAGE / "__init__.py")
    missing = sorted(p.relative_to(REPO).as_posix() for p in runs if not covered(p, deps))
    assert not missing, f"{name} {item}: runs files that are not in its deps: {missing}"
    # and every source dep exists (other deps are outputs of earlier stages)
    for dep in deps:
        if dep.startswith(("src/", "data/raw/")):
            assert (REPO / dep).exists(), f"{name}: dep {dep} does not exist"


def test_the_closure_sees_lazy_imports_and_the_domain_package():
    """The helper itself, on known facts: train imports the polychromic trainer inside a
    function, and the code domain imports its sandbox and the contract."""
    assert PACKAGE / "polychromic_trainer.py" in closure("polychromic.train")
    code = closure("polychromic.domains.code")
    assert PACKAGE / "domains" / "code" / "sandbox.py" in code
    assert PACKAGE / "domains" / "__init__.py" in code


@pytest.mark.parametrize("module", sorted(STAGE_MODULES | COMMANDS))
def test_stages_and_commands_import_no_stage(module):
    others = {PACKAGE / f"{stage}.py" for stage in STAGE_MODULES - {module}}
    assert not closure(f"polychromic.{module}") & others, module


def test_every_stage_module_is_a_stage():
    modules = {re.search(r"python -m polychromic\.(\w+)", s["cmd"]).group(1)
               for s in STAGES.values()}
    assert modules == STAGE_MODULES
