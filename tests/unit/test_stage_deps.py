"""dvc.yaml's deps are honest and the layers hold: every file of the package that a stage
runs (its module's import closure, with the domain's package for that matrix item) is a
dependency of the stage, every source dep is run by some item of its stage, and stages and
commands import libraries only, never a stage or a command. (That each stage declares the
params it reads is checked on a real run: tests/e2e/test_pipeline.py.)"""

from __future__ import annotations

import ast
import functools
import json
import re
from pathlib import Path

import pytest
import yaml

from tests.helpers import REPO, interpolate, matrix_items, selection_outputs

PACKAGE = REPO / "polychromic"
STAGES = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
PARAMS = yaml.safe_load((REPO / "params.yaml").read_text())
# The studies' pipelines (studies/<name>/dvc.yaml): their package deps are ${root}/... (the
# sweep's sweep stage: ${top}/...), whatever folder a stage runs in
STUDY_ROOTS = {"root": "<root>", "top": "<root>"}


def study(name: str, params: dict | None = None) -> tuple[dict, dict, dict]:
    folder = REPO / "studies" / name
    stages = yaml.safe_load((folder / "dvc.yaml").read_text())["stages"]
    # a foreach stage: its `do` body, with the foreach kept for matrix_items
    stages = {n: {**s["do"], "foreach": s["foreach"]} if "foreach" in s else s
              for n, s in stages.items()}
    if params is None:
        params = yaml.safe_load((folder / "params.yaml").read_text())
    return stages, params, STUDY_ROOTS


def confirmation_params() -> dict:
    """The confirmation run's params.yaml: as committed once the selection has chosen (before,
    it runs no stage), or else as written for a selection that chose in every domain."""
    import shutil
    import tempfile

    from polychromic.studies import STUDIES, confirmation_files

    committed = yaml.safe_load((REPO / STUDIES / "confirmation/params.yaml").read_text())
    if committed["domains"]:
        return committed
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        for name in ("params.yaml", "studies/protocol/protocol.yaml",
                     "studies/confirmation/confirmation.yaml"):
            (root / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(REPO / name, root / name)
        selection_outputs(root, {"replies": "qd-1", "code": "pk-1", "qa": "pk-1"})
        files = confirmation_files(root)
    return yaml.safe_load(files[STUDIES / "confirmation/params.yaml"])


PIPELINES = {"root": (STAGES, PARAMS, {}), "protocol": study("protocol"), "sweep": study("sweep"),
             "selection": study("selection"),
             "confirmation": study("confirmation", confirmation_params())}
STAGE_MODULES = {p.stem for p in (PACKAGE / "stages").glob("*.py") if p.stem != "__init__"}
COMMAND_MODULES = {p.stem for p in (PACKAGE / "commands").glob("*.py") if p.stem != "__init__"}
LAYERED = {PACKAGE / "stages" / f"{m}.py" for m in STAGE_MODULES} | {
    PACKAGE / "commands" / f"{m}.py" for m in COMMAND_MODULES}


def module_file(name: str) -> Path | None:
    """The source file of module `polychromic...`, or None outside the package."""
    if name != "polychromic" and not name.startswith("polychromic."):
        return None
    path = REPO.joinpath(*name.split("."))
    if path.is_dir():
        return path / "__init__.py"
    return path.with_suffix(".py") if path.with_suffix(".py").is_file() else None


def imports_of(path: Path) -> set[str]:
    """Every module in the package that `path` imports, at any depth of its code (a domain or
    a method, imported by name at run time: `item_runs`)."""
    found = set()
    text = path.read_text(encoding="utf-8")
    for node in ast.walk(ast.parse(text)):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
            found |= {f"{node.module}.{alias.name}" for alias in node.names}
    return {name for name in found if module_file(name) is not None}


def runs_code(path: Path) -> bool:
    """False for an __init__ file with nothing but a docstring: nothing in it can change
    what a stage computes."""
    body = ast.parse(path.read_text(encoding="utf-8")).body
    if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
        body = body[1:]
    return bool(body)


@functools.cache
def closure(module: str) -> frozenset[Path]:
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
    return frozenset(path for path in seen if runs_code(path))


def covered(path: Path, deps: list[str]) -> bool:
    relative = path.relative_to(REPO).as_posix()
    return any(relative == dep or relative.startswith(dep.rstrip("/") + "/") for dep in deps)


def stage_modules(stage: dict) -> list[str]:
    """The stage modules its command runs (a protocol stage may run generate, then evaluate)."""
    commands = [stage["cmd"]] if isinstance(stage["cmd"], str) else stage["cmd"]
    return [m for command in commands
            for m in re.findall(r"python -m (polychromic\.stages\.\w+)", command)]


def source_deps(pipeline: str, stage: dict, item: dict) -> list[str]:
    """The stage's deps on the package, repository-relative (a protocol dep is
    ${root}/polychromic/...); its other deps are outputs of earlier stages."""
    _, params, variables = PIPELINES[pipeline]
    deps = [interpolate(dep, item, {**params, **variables}) for dep in stage["deps"]]
    if variables:
        deps = [dep.removeprefix("<root>/") for dep in deps if dep.startswith("<root>/")]
    return [dep for dep in deps if dep.startswith("polychromic/")]


def item_runs(stage: dict, item: dict) -> set[Path]:
    runs = {path for module in stage_modules(stage) for path in closure(module)}
    if "domain" in item and module_file("polychromic.domains") in runs:
        runs |= closure(f"polychromic.domains.{item['domain']}")  # found by name at run time
        runs |= set((PACKAGE / "domains" / item["domain"]).rglob("*"))  # its data files
    commands = [stage["cmd"]] if isinstance(stage["cmd"], str) else stage["cmd"]
    method = re.search(r"--method (\S+)", " ".join(commands))
    if method and module_file("polychromic.methods") in runs:  # imported by name too
        runs |= closure("polychromic.methods." + method.group(1).replace(
            "${item.method}", str(item.get("method"))))
    return runs


CASES = [(pipeline, name, item) for pipeline, (stages, params, _) in PIPELINES.items()
         for name, stage in stages.items() for item in matrix_items(stage, params)]


@pytest.mark.parametrize("pipeline,name,item", CASES,
                         ids=[f"{p}:{n}-{i}" for p, n, i in CASES])
def test_stage_deps_cover_every_file_it_runs(pipeline, name, item):
    stage = PIPELINES[pipeline][0][name]
    deps = source_deps(pipeline, stage, item)
    runs = {p for p in item_runs(stage, item) if p.is_file() and "__pycache__" not in p.parts}
    missing = sorted(p.relative_to(REPO).as_posix() for p in runs if not covered(p, deps))
    assert not missing, f"{pipeline}:{name} {item}: runs files that are not in its deps: {missing}"
    for dep in deps:  # every source dep exists (other deps are outputs of earlier stages)
        assert (REPO / dep).exists(), f"{pipeline}:{name}: dep {dep} does not exist"


STAGE_NAMES = [(pipeline, name) for pipeline, (stages, _, _) in PIPELINES.items()
               for name in stages]


@pytest.mark.parametrize("pipeline,name", STAGE_NAMES, ids=[f"{p}:{n}" for p, n in STAGE_NAMES])
def test_every_source_dep_is_run_by_some_item_of_its_stage(pipeline, name):
    """A dep that no matrix item runs reruns the stage for nothing; one that only some items
    run (a library only one domain imports) is listed for what it is."""
    stages, params, _ = PIPELINES[pipeline]
    stage = stages[name]
    items = matrix_items(stage, params)
    unused, partly = [], []
    for dep in {dep for item in items for dep in source_deps(pipeline, stage, item)}:
        users = [item for item in items if dep in source_deps(pipeline, stage, item)
                 and any(covered(p, [dep]) for p in item_runs(stage, item))]
        if not users:
            unused.append(dep)
        elif len(users) < len(items):
            partly.append(f"{dep} (by {len(users)} of {len(items)} items)")
    assert not unused, f"{pipeline}:{name}: deps no item runs: {sorted(unused)}"
    if partly:
        print(f"{pipeline}:{name}: deps only some items run: {', '.join(sorted(partly))}")


def test_the_closure_sees_lazy_imports_and_the_domain_package():
    """The helper itself, on known facts: train imports the methods, and the code domain
    imports its sandbox and the contract."""
    assert PACKAGE / "methods" / "__init__.py" in closure("polychromic.stages.train")
    assert PACKAGE / "methods" / "polychromic.py" not in closure("polychromic.stages.train")
    assert PACKAGE / "methods" / "polychromic.py" in item_runs(
        STAGES["train"], {"domain": "qa", "method": "polychromic", "seed": 42})
    code = closure("polychromic.domains.code")
    assert PACKAGE / "domains" / "code" / "sandbox.py" in code
    assert PACKAGE / "domains" / "__init__.py" in code
    assert PACKAGE / "stages" / "__init__.py" not in closure("polychromic.stages.train")


@pytest.mark.parametrize("path", sorted(PACKAGE.rglob("*.py")),
                         ids=lambda p: p.relative_to(PACKAGE).as_posix())
def test_no_module_imports_a_stage_or_a_command(path):
    """Stages and commands import libraries only, and so does every library: no exemption."""
    name = ".".join(path.relative_to(REPO).with_suffix("").parts)
    reached = closure(name.removesuffix(".__init__")) - {path}
    assert not reached & LAYERED, f"{name} imports {sorted(p.name for p in reached & LAYERED)}"


def test_every_stage_module_is_a_stage():
    """Of dvc.yaml or of a study's pipeline (studies/<name>/dvc.yaml)."""
    used = {module.rsplit(".", 1)[1] for stages, _, _ in PIPELINES.values()
            for stage in stages.values() for module in stage_modules(stage)}
    assert used == STAGE_MODULES


def test_every_command_is_reachable_from_the_console_entry():
    from polychromic.commands import COMMANDS

    assert set(COMMANDS) == COMMAND_MODULES


def test_a_traced_run_notes_each_value_it_reads(tmp_path, monkeypatch):
    from polychromic.config import TRACE_ENV, load_section, read_params
    from polychromic.settings import GenerateConfig

    (tmp_path / "params.yaml").write_text(yaml.safe_dump(
        {"generate": {"n": 3, "batch_prompts": 1, "cache_gb": 1.0, "few_shot_examples": 1},
         "seeds": [1], "unread": {"x": 1}}))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv(TRACE_ENV, str(tmp_path / "trace.jsonl"))
    params = read_params()
    load_section(GenerateConfig, params, "generate")
    assert params["seeds"] == [1] and params.get("absent") is None
    assert params.read == {"generate.n", "generate.batch_prompts", "generate.cache_gb",
                           "generate.few_shot_examples", "seeds"}


def test_an_undeclared_read_is_found(tmp_path):
    from tests.helpers import undeclared_params

    (tmp_path / "params.yaml").write_text(yaml.safe_dump({"domains": ["a", "b"], "k": 1}))
    (tmp_path / "dvc.yaml").write_text(yaml.safe_dump({"stages": {"s": {
        "matrix": {"domain": "${domains}"},
        "cmd": "python -m polychromic.stages.s --domain ${item.domain}",
        "params": ["${item.domain}.data", "k"]},
        # generate may read runtime.processes untracked (its UNTRACKED_PARAMS), not the rest
        "g": {"cmd": "python -m polychromic.stages.generate --out g", "params": ["k"]}}}))
    trace = tmp_path / "trace.jsonl"
    trace.write_text("\n".join(json.dumps(run) for run in [
        {"argv": ["--domain", "a"], "read": ["a.data.x", "k"]},
        {"argv": ["--domain", "b"], "read": ["b.data.y", "b.sampling.top_k", "a.data.x"]},
        {"argv": ["--out", "g"], "read": ["k", "runtime.processes", "runtime.tf32"]},
        {"argv": ["--other"], "read": []}]) + "\n")
    assert undeclared_params(tmp_path, trace) == [
        "s {'domain': 'b'}: b.sampling.top_k", "s {'domain': 'b'}: a.data.x",
        "g {}: runtime.tf32", "a run of no stage: ['--other']"]
