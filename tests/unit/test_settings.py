"""Each default lives in one place: a key that params.yaml sets has, in its schema, either no
default or that same value; every params.yaml key has a schema; and `--help` prints the
values a run will use (params.yaml's), not the code's."""

from __future__ import annotations

import copy
import dataclasses
import importlib
import re
import typing

import pytest
import yaml

from polychromic.config import UserError, help_text, load_section
from polychromic.params_check import SECTIONS, check_all, schemas
from polychromic.settings import Experiment, TrainConfig, listed
from tests.helpers import REPO

PARAMS = yaml.safe_load((REPO / "params.yaml").read_text())


def disagreements(cls: type, section: dict, key: str) -> list[str]:
    """Keys of `section` whose schema default differs from the params value (recursing into
    nested sections)."""
    found = []
    hints = typing.get_type_hints(cls)
    for field in dataclasses.fields(cls):
        if field.name not in section:
            continue
        value = section[field.name]
        if dataclasses.is_dataclass(hints[field.name]):
            found += disagreements(hints[field.name], value, f"{key}.{field.name}")
        elif field.default is not dataclasses.MISSING:
            if field.default != value:
                found.append(f"{key}.{field.name}: code {field.default!r}, params {value!r}")
        elif field.default_factory is not dataclasses.MISSING:
            if field.default_factory() != value:
                found.append(f"{key}.{field.name}: code {field.default_factory()!r}, "
                             f"params {value!r}")
    return found


def test_every_params_value_equals_its_schema_default_or_has_none():
    found = []
    for key, cls in schemas(PARAMS).items():
        section = PARAMS
        for part in key.split("."):
            section = section[part]
        found += disagreements(cls, section, key)
    found += disagreements(Experiment, PARAMS, "")
    assert not found, "a default written twice, with two values:\n" + "\n".join(found)


def test_the_check_sees_a_disagreement():
    """The helper above, on a made-up schema: it is not vacuous."""
    @dataclasses.dataclass
    class Made:
        a: int = 1
        b: list = dataclasses.field(default_factory=lambda: [1])
        c: int = dataclasses.field(default=0)

    assert disagreements(Made, {"a": 1, "b": [2]}, "made") == [
        "made.b: code [1], params [2]"]


def test_every_params_key_has_a_schema_and_the_file_checks():
    check_all(PARAMS)  # every section loads with its types and ranges
    top = set(Experiment.__dataclass_fields__) | set(SECTIONS) | {"runtime"}
    top |= set(listed(PARAMS, "domains")) | set(listed(PARAMS, "methods"))
    assert set(PARAMS) == top


def test_domain_train_keys_are_train_keys():
    for domain in listed(PARAMS, "domains"):
        assert set(PARAMS[domain]["train"]) <= {f.name for f in dataclasses.fields(TrainConfig)}


def test_a_wrong_type_in_a_nested_section_names_its_full_key():
    with pytest.raises(UserError, match=r"'train\.lora\.r' must be int"):
        load_section(TrainConfig, {"train": {"lora": {"r": "sixteen"}}}, "train")
    with pytest.raises(UserError, match=r"'train\.lora\.r' must be > 0"):
        load_section(TrainConfig, {"train": {"lora": {"r": 0}}}, "train")


def test_help_text_shows_the_params_value_where_there_is_one():
    text = help_text(TrainConfig, {"train": {"max_steps": 7}}, "train")
    assert "max_steps (7 in params.yaml)" in text
    assert "learning_rate (default 0.0002)" in text
    assert "train.lora:" in text and "r (default 16)" in text


STAGE_SECTIONS = {"base_model": "base_model", "train": "train", "generate": "generate",
                  "evaluate": "evaluate", "judge": "judge", "compare": "compare",
                  "report": "report"}


@pytest.mark.parametrize("stage", sorted(STAGE_SECTIONS))
def test_stage_help_prints_the_values_a_run_uses(stage, capsys, monkeypatch):
    monkeypatch.chdir(REPO)
    module = importlib.import_module(f"polychromic.stages.{stage}")
    with pytest.raises(SystemExit) as exit_:
        module.main(["--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    key = STAGE_SECTIONS[stage]
    for name, value in PARAMS[key].items():
        if isinstance(value, dict) and value and name != "primary":
            continue  # a nested section: its own lines follow
        assert f"{name} ({value!r} in params.yaml)" in out, (stage, name)


def test_only_reads_the_keys_asked_for():
    from polychromic.config import TracedParams
    from polychromic.settings import EvaluateConfig

    read: set[str] = set()
    params = TracedParams({"evaluate": {"ks": [1, 5], "self_bleu_order": 2}}, "", read)
    config = load_section(EvaluateConfig, params, "evaluate", only=("ks",))
    assert config.ks == [1, 5] and config.self_bleu_order == 4  # the default, not read
    assert read == {"evaluate.ks"}
    with pytest.raises(UserError, match=r"'evaluate\.ks' must be a non-empty list"):
        load_section(EvaluateConfig, {"evaluate": {"ks": []}}, "evaluate", only=("ks",))


@pytest.mark.parametrize("edit,message", [
    (lambda p: p["evaluate"].update(ks=[1, 50]),
     "'evaluate.ks' asks for pass@50, but 'generate.n' draws 10 samples a prompt"),
    (lambda p: p["generate"].update(n=5),
     "'evaluate.ks' asks for pass@10, but 'generate.n' draws 5 samples a prompt"),
    (lambda p: p["polychromic"].update(diversity_weight=float("inf")),
     "'polychromic.diversity_weight' must be a finite number, got inf"),
    (lambda p: p["train"].update(learning_rate=float("nan")),
     "'train.learning_rate' must be a finite number, got nan"),
    (lambda p: p["replies"]["sampling"].update(top_p=float("-inf")),
     "'replies.sampling.top_p' must be a finite number, got -inf"),
    (lambda p: p.update(polychromc={"diversity_weight": 1.0}),
     "unknown section 'polychromc' (known: base_model, baseline, code, compare, domains"),
    (lambda p: p.update(systems=["zero_shot", "lora"]),
     "'systems' names 'lora', which is neither in methods nor in prompting"),
    (lambda p: p["code"]["train"].update(lora={"r": 0}), "'code.train.lora.r' must be > 0"),
])
def test_the_params_check_catches_what_a_stage_would_find_later(edit, message):
    """What `doctor` and `profile` run before any stage (issue 24): cross-section limits,
    non-finite numbers, unknown sections and names, full key paths."""
    params = copy.deepcopy(PARAMS)
    edit(params)
    with pytest.raises(UserError, match=re.escape(message)):
        check_all(params)
