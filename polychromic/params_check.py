"""Every section of params.yaml, found and checked in one go, without loading a model: what
`polychromic profile` and `polychromic doctor` check before a run, and what the test that
keeps each default in one place walks (tests/unit/test_settings.py)."""

from __future__ import annotations

from typing import Any

from polychromic.config import UserError, load_section, require
from polychromic.domains import domain_class, known_domains
from polychromic.methods import get_method, known_methods
from polychromic.runtime import Runtime
from polychromic.settings import (
    BaseModelConfig,
    CompareConfig,
    EvaluateConfig,
    FrontierConfig,
    GenerateConfig,
    JudgeConfig,
    ReportConfig,
    TrainConfig,
    experiment,
    train_config,
)

SECTIONS: dict[str, type] = {"base_model": BaseModelConfig, "train": TrainConfig,
                             "generate": GenerateConfig, "evaluate": EvaluateConfig,
                             "judge": JudgeConfig, "compare": CompareConfig,
                             "report": ReportConfig, "frontier": FrontierConfig}
"""The sections whose schema lives in `polychromic.settings`."""
LISTS = ("domains", "methods", "prompting", "systems", "seeds")
"""The top-level lists (`settings.experiment`)."""


def schemas(params: dict[str, Any]) -> dict[str, type]:
    """Every section's schema by params key: this module's, `runtime`, each registered
    method's (under its name) and each domain's subsections (`<domain>.<sub>`)."""
    found: dict[str, type] = {**SECTIONS, "runtime": Runtime}
    lists = experiment(params)
    for name in lists.methods:
        found[name] = get_method(name).config
    for name in lists.domains:
        for sub, cls in domain_class(name).schemas().items():
            found[f"{name}.{sub}"] = cls
    return found


def check_all(params: dict[str, Any]) -> None:
    """Load every section a run reads, with its types and ranges (UserError on the first bad
    one), and what sections say about each other, without loading a model: what `dvc exp
    run` would otherwise find stage by stage."""
    known = {*LISTS, *SECTIONS, "runtime", *known_methods(), *known_domains()}
    for key in params:
        if key not in known:
            raise UserError(f"params.yaml: unknown section '{key}' (known: "
                            f"{', '.join(sorted(known))})")
    for key, cls in schemas(params).items():
        load_section(cls, params, key)
    for name in experiment(params).domains:
        train_config(params, name)
    n = load_section(GenerateConfig, params, "generate").n
    ks = load_section(EvaluateConfig, params, "evaluate").ks
    require(max(ks) <= n, "evaluate.ks", f"asks for pass@{max(ks)}, but 'generate.n' draws "
            f"{n} samples a prompt: raise generate.n or lower the k")

