"""Second pipelines under studies/<name>/ (docs/protocol.md, docs/experiments.md): each has
its own dvc.yaml and reads its own params files, written from the repository's params.yaml
with the study's few keys laid over, so that a change to params.yaml reaches a study only
when its params are written again (`polychromic protocol`, `polychromic sweep`)."""

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


def header(command: str, sources: str) -> str:
    return (f"# Written by `polychromic {command}` from {sources}: do not edit.\n")


def dump(params: dict[str, Any], command: str, sources: str) -> str:
    return header(command, sources) + yaml.safe_dump(params, sort_keys=False,
                                                     allow_unicode=True)


def sweep_files(root: Path = Path(), name: str = "sweep") -> dict[Path, str]:
    """The params files of an arms study (studies/<name>/<name>.yaml: `common`, laid over
    params.yaml for every arm, and `arms`, each laid over that): the study's params.yaml
    (with `arms`, the arms' names, for its dvc.yaml's matrix) and each arm's
    arms/<arm>/params.yaml. Each arm's params pass the params check."""
    folder = STUDIES / name
    spec_path = root / folder / f"{name}.yaml"
    spec = read_yaml_mapping(spec_path)
    unknown = sorted(set(spec) - {"common", "arms"})
    if unknown:
        raise UserError(f"{spec_path}: unknown key(s) {unknown} (known: common, arms)")
    common, arms = spec.get("common") or {}, spec.get("arms")
    if not isinstance(common, dict):
        raise UserError(f"{spec_path}: 'common' must be a mapping of params")
    if not isinstance(arms, dict) or not arms:
        raise UserError(f"{spec_path}: 'arms' must map each arm's name to its params")
    shared = laid_over(read_yaml_mapping(root / "params.yaml"), common)
    files = {}
    for arm, changes in arms.items():
        if not isinstance(arm, str) or not ARM_NAME.fullmatch(arm):
            raise UserError(f"{spec_path}: arms.{arm}: a name of letters, digits, '.', '_', "
                            "'-' (it names a folder)")
        if not isinstance(changes, dict):
            raise UserError(f"{spec_path}: arms.{arm}: must be a mapping of params")
        params = laid_over(shared, changes)
        try:
            check_all(params)
        except UserError as err:
            raise UserError(f"{spec_path}: arms.{arm}: {err}") from None
        files[folder / "arms" / arm / "params.yaml"] = dump(
            params, name, f"../../../../params.yaml, {name}.yaml's common and arms.{arm}")
    files[folder / "params.yaml"] = dump(
        {**shared, "arms": list(arms)}, name, f"../../params.yaml and {name}.yaml's common "
        "(arms: the arms' names)")
    return files
