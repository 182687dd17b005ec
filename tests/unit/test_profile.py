"""The Qwen3-8B profile: one `dvc exp run` that carries each of the profile's values as one
-S, which, applied as DVC applies them, give params.yaml with the profile laid over it; the
training that runs is the profile's; and the schedule it asks for in epochs, in steps."""

import copy
import math
from dataclasses import asdict

import pytest
import yaml

from polychromic.commands.profile import apply, dvc_command, leaves
from polychromic.config import UserError, override, read_params
from polychromic.params_check import check_all
from polychromic.settings import train_config
from polychromic.training import fix_schedule
from tests.helpers import REPO

PROFILE = "profiles/qwen3-8b.yaml"


def applied_by_dvc(params: dict, command: list[str]) -> dict:
    """Each `-S key=value` parsed as YAML into the key, which must exist: DVC's --set-param."""
    assert command[:3] == ["dvc", "exp", "run"]
    result = copy.deepcopy(params)
    for flag, assignment in zip(command[3::2], command[4::2], strict=False):
        if flag != "-S":
            break
        override(result, assignment)
    return result


def deep_merge(base: dict, overlay: dict) -> dict:
    merged = copy.deepcopy(base)
    for key, value in overlay.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def holds(values: dict, overlay: dict) -> bool:
    """Whether every value of `overlay` is the one in `values` (mappings: key by key)."""
    return all(holds(values[key], value) if isinstance(value, dict) else values[key] == value
               for key, value in overlay.items())


def test_qwen3_8b_profile_is_the_params_file_with_the_overlay(monkeypatch):
    monkeypatch.chdir(REPO)
    params = read_params()
    command = dvc_command("qwen3-8b", params, ["-n", "qwen3-8b"])
    assert command[-2:] == ["-n", "qwen3-8b"]
    overlay = yaml.safe_load(open(PROFILE))
    # one -S per value of the profile, whose text DVC parses back to that value
    flags, assignments = command[3:-2:2], command[4:-2:2]
    assert flags == ["-S"] * len(assignments)
    carried = [assignment.partition("=") for assignment in assignments]
    assert sorted(key for key, _, _ in carried) == sorted(leaves(overlay, PROFILE, params))
    assert {key: yaml.safe_load(text) for key, _, text in carried} == leaves(overlay, PROFILE,
                                                                             params)
    profiled = applied_by_dvc(params, command)
    assert profiled == deep_merge(params, overlay)
    check_all(profiled)
    assert profiled != params  # it changes something
    # the training that runs is the profile's: its train keys, and a domain's own keys (the
    # profile's, else params.yaml's) over them
    for domain in ("replies", "code"):
        own = {**params[domain]["train"], **overlay.get(domain, {}).get("train", {})}
        expected = {k: v for k, v in overlay["train"].items() if k not in own} | own
        assert holds(asdict(train_config(profiled, domain)), expected), domain
    # it asks for epochs and a warm-up share, which the train stage turns into steps for the
    # train set at hand (e.g. replies' 1,600 prompts); they win over the steps a domain sets
    assert overlay["train"]["epochs"] is not None and "max_steps" in params["code"]["train"]
    for domain, examples in (("replies", 1600), ("code", 119)):
        train = train_config(profiled, domain)
        per_step = train.batch_size * train.gradient_accumulation
        fix_schedule(train, examples)
        assert train.max_steps == math.ceil(overlay["train"]["epochs"] * examples / per_step)
        assert train.warmup_steps == math.ceil(overlay["train"]["warmup_ratio"]
                                               * train.max_steps)


def test_the_default_schedule_is_in_steps(monkeypatch):
    """params.yaml sets steps, not epochs or a warm-up share: the schedule is its steps."""
    monkeypatch.chdir(REPO)
    params = read_params()
    assert params["train"]["epochs"] is None and params["train"]["warmup_ratio"] is None
    train = fix_schedule(train_config(params, "replies"), 1600)
    assert (train.max_steps, train.warmup_steps) == (params["train"]["max_steps"],
                                                     params["train"]["warmup_steps"])


def test_fractional_epochs_round_up():
    params = {"train": {"epochs": 0.5, "warmup_ratio": 0.1, "batch_size": 3}}
    train = fix_schedule(train_config(params, "replies"), 10)
    assert (train.max_steps, train.warmup_steps) == (math.ceil(5 / 3), 1)


def test_profile_errors_name_the_profile_and_key(tmp_path, monkeypatch):
    params = read_params(REPO / "params.yaml")
    monkeypatch.chdir(tmp_path)
    (tmp_path / "profiles").mkdir()
    for text, message in [
        ("train:\n  nope: 1\n", "profiles/p.yaml: 'train.nope' is not a key of params.yaml"),
        ("train:\n  epochs: -1\n", "profiles/p.yaml: params.yaml: 'train.epochs' must be null"),
        ("train: [1\n", "profiles/p.yaml:2: malformed YAML"),
        ("runtime:\n  device: tpu\n", "'runtime.device' must be one of"),
    ]:
        (tmp_path / "profiles" / "p.yaml").write_text(text)
        with pytest.raises(UserError, match=message.replace(".", r"\.")):
            dvc_command("p", params, [])
    with pytest.raises(UserError, match="no such profile"):
        dvc_command("absent", params, [])


def test_leaves_keep_dict_valued_params_whole():
    params = {"a": {"b": 1, "c": {"d": 2}}, "e": 3}
    assert leaves({"a": {"c": {"d": 5}}, "e": 4}, "p", params) == {"a.c.d": 5, "e": 4}
    assert apply(params, {"a.c.d": 5}) == {"a": {"b": 1, "c": {"d": 5}}, "e": 3}
