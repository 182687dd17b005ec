"""Bad input is an error naming the file:line or params key, and an interrupted write keeps the
old output (the stages' refusals, one line and nothing written: tests/integration)."""

import json

import pytest

from polychromic.config import UserError, load_section
from polychromic.io import atomic_path, read_jsonl
from polychromic.settings import TrainConfig
from tests.helpers import write_lines

FIELDS = {"tweet_id": str, "tweet": str, "reply": str}
GOOD = {"tweet_id": "a", "tweet": "hi", "reply": "hey"}


@pytest.mark.parametrize("bad_line,message", [
    ('{"tweet_id": "b", "tweet": "yo"', "malformed JSON"),
    ('{"tweet_id": "b", "tweet": "yo"}', "missing field 'reply'"),
    ('{"tweet_id": "b", "tweet": "yo", "reply": "   "}', "field 'reply' is empty"),
    ('{"tweet_id": "b", "tweet": "yo", "reply": 3}', "field 'reply' has the wrong type"),
    ('["not", "an", "object"]', "expected a JSON object"),
])
def test_read_jsonl_names_file_and_line(tmp_path, bad_line, message):
    path = write_lines(tmp_path / "train.jsonl", [json.dumps(GOOD), json.dumps(GOOD), bad_line])
    with pytest.raises(UserError, match=rf"train.jsonl:3: {message}"):
        read_jsonl(path, FIELDS)


def test_read_jsonl_missing_and_empty_files(tmp_path):
    with pytest.raises(UserError, match="no such file"):
        read_jsonl(tmp_path / "absent.jsonl", FIELDS)
    with pytest.raises(UserError, match="no records"):
        read_jsonl(write_lines(tmp_path / "empty.jsonl", [""]), FIELDS)


@pytest.mark.parametrize("section,message", [
    ({"learning_rate": -1e-4}, "'train.learning_rate' must be > 0"),
    ({"learning_rate": "fast"}, "'train.learning_rate' must be float"),
    ({"lerning_rate": 1e-4}, "unknown key 'train.lerning_rate'"),
    ({"checkpoint_every": 7, "eval_every": 5}, "'train.checkpoint_every' must be a multiple"),
    ({"lora": {"r": 0}}, "'train.lora.r' must be > 0"),
    ({"max_grad_norm": -1.0}, "'train.max_grad_norm' must be >= 0"),
])
def test_bad_params_name_the_key(section, message):
    with pytest.raises(UserError, match=message):
        load_section(TrainConfig, {"train": section}, "train")


def test_a_domain_trains_with_its_own_values_of_train_keys():
    from polychromic.settings import train_config

    params = {"train": {"max_steps": 60, "eval_every": 20, "checkpoint_every": 20},
              "code": {"train": {"max_steps": 30, "eval_every": 10, "checkpoint_every": 10}},
              "replies": {"train": {}}}
    assert train_config(params, "replies").max_steps == 60
    code = train_config(params, "code")
    assert (code.max_steps, code.eval_every, code.checkpoint_every) == (30, 10, 10)
    params["code"]["train"] = {"seeds": [1]}
    with pytest.raises(UserError, match="'code.train.seeds' is not a train key a domain can"):
        train_config(params, "code")
    params["code"]["train"] = {"max_steps": 0}
    with pytest.raises(UserError, match="'code.train.max_steps' must be > 0"):
        train_config(params, "code")
    params["code"]["train"] = {"checkpoint_every": 7}
    with pytest.raises(UserError, match="'code.train.checkpoint_every' must be a multiple"):
        train_config(params, "code")


def test_atomic_path_keeps_the_old_output_on_failure(tmp_path):
    target = tmp_path / "out.json"
    target.write_text("old")
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("crash")
    assert target.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.json"]


@pytest.mark.parametrize("params,message", [
    ({}, "'seeds' must be a non-empty list of distinct int"),
    ({"seeds": [1, 1]}, "'seeds' must be a non-empty list of distinct int"),
    ({"seeds": [True]}, "'seeds' must be a non-empty list of distinct int"),
    ({"seeds": 42}, "'seeds' must be a non-empty list of distinct int"),
])
def test_listed_names_the_key(params, message):
    from polychromic.settings import listed

    with pytest.raises(UserError, match=message):
        listed(params, "seeds")
    assert listed({"seeds": [42, 7]}, "seeds") == [42, 7]
