"""Every section of params.yaml, found and checked in one go, without loading a model: what
`polychromic profile` and `polychromic doctor` check before a run, and what the test that
keeps each default in one place walks (tests/unit/test_settings.py)."""

from __future__ import annotations

from typing import Any

from polychromic.config import load_section
from polychromic.domains import domain_class
from polychromic.methods import get_method
from polychromic.runtime import Runtime
from polychromic.settings import (
    BaseModelConfig,
    CompareConfig,
    EvaluateConfig,
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
                             "report": ReportConfig}
"""The sections whose schema lives in `polychromic.settings`."""


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
    one), without loading a model: what `dvc exp run` would otherwise find stage by stage."""
    for key, cls in schemas(params).items():
        load_section(cls, params, key)
    for name in experiment(params).domains:
        train_config(params, name)

