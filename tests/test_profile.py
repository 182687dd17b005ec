"""The Qwen3-8B profile: one `dvc exp run` whose -S values, applied as DVC applies them, give
params.yaml with the profile laid over it; and the schedule it asks for in steps."""

import copy
import math

import pytest
import yaml

from polychromic.config import UserError, override, read_params
from polychromic.profile import apply, check_params, dvc_command, leaves
from polychromic.training import fix_schedule, train_config
from tests.conftest import REPO


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


def test_qwen3_8b_profile_is_the_params_file_with_the_overlay(monkeypatch):
    monkeypatch.chdir(REPO)
    params = read_params()
    command = dvc_command("qwen3-8b", params, ["-n", "qwen3-8b"])
    assert command[-2:] == ["-n", "qwen3-8b"]
    overlay = yaml.safe_load(open("profiles/qwen3-8b.yaml"))
    profiled = applied_by_dvc(params, command)
    assert profiled == deep_merge(params, overlay)
    check_params(profiled)
    # the original design's settings, thinking off
    assert profiled["base_model"] == {**params["base_model"], "source": "Qwen/Qwen3-8B",
                                      "dtype": "bfloat16", "thinking": False}
    train = train_config(profiled, "replies")
    assert (train.lora_settings.r, train.lora_settings.alpha, train.lora_settings.dropout) == (
        16, 16, 0.1)
    assert sorted(train.lora_settings.target_modules) == sorted(
        ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"])
    assert (train.learning_rate, train.lr_schedule, train.weight_decay, train.max_grad_norm) == (
        2e-4, "cosine", 0.01, 1.0)
    assert train.batch_size * train.gradient_accumulation == 16
    assert (train.eval_every, train.early_stopping_patience, train.seeds) == (50, 3, [42, 123, 456])
    # 1,600 replies train prompts: 2 epochs at 16 = 200 steps, 3% warm-up = 6
    fix_schedule(train, 1600)
    assert (train.max_steps, train.warmup_steps) == (200, 6)
    code = fix_schedule(train_config(profiled, "code"), 119)  # epochs win over code's 30 steps
    assert (code.max_steps, code.warmup_steps, code.eval_every) == (15, 1, 5)


def test_the_default_schedule_is_in_steps(monkeypatch):
    monkeypatch.chdir(REPO)
    train = fix_schedule(train_config(read_params(), "replies"), 1600)
    assert (train.max_steps, train.warmup_steps) == (60, 10)  # epochs/warmup_ratio unset


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
