"""Second pipelines under studies/<name>/ (docs/protocol.md, docs/experiments.md): each has
its own dvc.yaml and reads its own params files, written from the repository's params.yaml
with the study's few keys laid over, so that a change to params.yaml reaches a study only
when its params are written again (`polychromic protocol`, `polychromic study <name>`)."""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

import yaml

from polychromic.config import UserError, read_yaml_mapping
from polychromic.params_check import check_all

STUDIES = Path("studies")
ARM_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


def laid_over(base: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
    """`changes` over `base`: mappings merged key by key, anything else replaced."""
    out = copy.deepcopy(base)
    for key, value in changes.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = laid_over(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def dump(params: dict[str, Any], name: str, sources: str) -> str:
    """A study's params file: what wrote it and from what, then the params."""
    return (f"# Written by `polychromic study {name}` from {sources}: do not edit.\n"
            + yaml.safe_dump(params, sort_keys=False, allow_unicode=True))


def arm_file(name: str, arm: str, params: dict[str, Any]) -> tuple[Path, str]:
    """studies/<name>/arms/<arm>/params.yaml and its text."""
    return (STUDIES / name / "arms" / arm / "params.yaml",
            dump(params, name, f"../../../../params.yaml, {name}.yaml's common and arms.{arm}"))


def read_spec(root: Path, name: str, known: set[str]) -> tuple[Path, dict]:
    """studies/<name>/<name>.yaml, with its keys checked against `known`."""
    spec_path = root / STUDIES / name / f"{name}.yaml"
    spec = read_yaml_mapping(spec_path)
    unknown = sorted(set(spec) - known)
    if unknown:
        raise UserError(f"{spec_path}: unknown key(s) {unknown} (known: "
                        f"{', '.join(sorted(known))})")
    common, arms = spec.get("common") or {}, spec.get("arms")
    if not isinstance(common, dict):
        raise UserError(f"{spec_path}: 'common' must be a mapping of params")
    if not isinstance(arms, dict) or not arms:
        raise UserError(f"{spec_path}: 'arms' must map each arm's name to its params")
    return spec_path, spec


def arm_params(spec_path: Path, shared: dict, arm: Any, changes: Any,
               method: str | None = None) -> dict[str, Any]:
    """One arm's params: `changes` over `shared`; with `method`, that method is among the
    arm's `methods` and has its section (its defaults where the arm sets none)."""
    if not isinstance(arm, str) or not ARM_NAME.fullmatch(arm):
        raise UserError(f"{spec_path}: arms.{arm}: a name of letters, digits, '.', '_', "
                        "'-' (it names a folder)")
    if not isinstance(changes, dict):
        raise UserError(f"{spec_path}: arms.{arm}: must be a mapping of params")
    params = laid_over(shared, changes)
    if method is not None:
        params["methods"] = list(dict.fromkeys([*params.get("methods", []), method]))
        params.setdefault(method, {})
    try:
        check_all(params)
    except UserError as err:
        raise UserError(f"{spec_path}: arms.{arm}: {err}") from None
    return params


def sweep_files(root: Path = Path(), name: str = "sweep") -> dict[Path, str]:
    """The params files of an arms study (studies/<name>/<name>.yaml: `common`, laid over
    params.yaml for every arm, and `arms`, each laid over that): the study's params.yaml
    (with `arms`, the arms' names, for its dvc.yaml's matrix) and each arm's
    arms/<arm>/params.yaml. Each arm's params pass the params check."""
    folder = STUDIES / name
    spec_path, spec = read_spec(root, name, {"common", "arms"})
    shared = laid_over(read_yaml_mapping(root / "params.yaml"), spec.get("common") or {})
    files = {}
    for arm, changes in spec["arms"].items():
        path, text = arm_file(name, arm, arm_params(spec_path, shared, arm, changes))
        files[path] = text
    files[folder / "params.yaml"] = dump(
        {**shared, "arms": list(spec["arms"])}, name,
        f"../../params.yaml and {name}.yaml's common (arms: the arms' names)")
    return files


def selection_files(root: Path = Path(), name: str = "selection") -> dict[Path, str]:
    """The params files of the selection study (docs/objectives.md): as `sweep_files`, but
    each arm trains the method it names (`method:`, beside its params) in each domain it
    lists (`domains:`, default every domain of `common`), and the study's params.yaml holds
    `runs`, one entry per arm, domain and seed ({arm, method, domain, seed}) for its
    dvc.yaml's foreach, and `arms`, each arm's method and domains."""
    folder = STUDIES / name
    spec_path, spec = read_spec(root, name, {"common", "arms"})
    shared = laid_over(read_yaml_mapping(root / "params.yaml"), spec.get("common") or {})
    files, runs, arms = {}, {}, {}
    for arm, entry in spec["arms"].items():
        entry = dict(entry) if isinstance(entry, dict) else entry
        if not isinstance(entry, dict) or not isinstance(entry.get("method"), str):
            raise UserError(f"{spec_path}: arms.{arm}: needs 'method: <a method>'")
        method = entry.pop("method")
        domains = entry.pop("domains", None) or shared.get("domains") or []
        params = arm_params(spec_path, shared, arm, entry, method)
        unknown = sorted(set(domains) - set(shared.get("domains") or []))
        if unknown:
            raise UserError(f"{spec_path}: arms.{arm}.domains: {unknown} not in common "
                            "'domains'")
        params["domains"] = list(domains)
        arms[arm] = {"method": method, "domains": list(domains)}
        for domain in domains:
            for seed in params.get("seeds") or []:
                runs[f"{arm}-{domain}-{seed}"] = {"arm": arm, "method": method,
                                                  "domain": domain, "seed": seed}
        path, text = arm_file(name, arm, params)
        files[path] = text
    files[folder / "params.yaml"] = dump(
        {**shared, "arms": arms, "runs": runs}, name,
        f"../../params.yaml and {name}.yaml's common (arms, runs: the arms)")
    return files


ARMS_STUDIES = {"sweep": sweep_files, "selection": selection_files}
"""Each arms study's params writer, by the study's name (`polychromic study <name>`)."""
