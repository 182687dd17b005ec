"""Bad input stops a stage with one line naming the file:line or params key, a non-zero exit,
and no output written."""

import json
import os
import subprocess
import sys

import pytest
import yaml

from polychromic.config import UserError, load_section
from polychromic.io import atomic_path, read_jsonl
from polychromic.training import TrainConfig
from tests.conftest import REPO

FIELDS = {"tweet_id": str, "tweet": str, "reply": str}
GOOD = {"tweet_id": "a", "tweet": "hi", "reply": "hey"}


def write_lines(path, lines):
    path.write_text("".join(line + "\n" for line in lines))
    return path


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
    from polychromic.training import train_config

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


def run_stage(tmp_path, module, args, params):
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    return subprocess.run([sys.executable, "-m", f"polychromic.{module}", *args], cwd=tmp_path,
                          env=env, capture_output=True, text=True, timeout=300)


def default_params():
    return yaml.safe_load((REPO / "params.yaml").read_text())


def assert_one_line_error(result, expected):
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert expected in lines[0]


def test_stage_bad_param_exits_with_one_line_and_writes_nothing(tmp_path):
    params = default_params()
    params["replies"]["data"]["val_fraction"] = 1.5
    result = run_stage(tmp_path, "prepare", ["--domain", "replies", "--out", "out"], params)
    assert_one_line_error(result, "'replies.data.val_fraction' must be in (0, 1)")
    assert not (tmp_path / "out").exists()


def test_unknown_domain_and_missing_domain_section(tmp_path):
    result = run_stage(tmp_path, "prepare", ["--domain", "poems", "--out", "out"],
                       default_params())
    assert_one_line_error(result, "unknown domain 'poems' (known: code, qa, replies)")
    params = default_params()
    del params["code"]
    result = run_stage(tmp_path, "prepare", ["--domain", "code", "--out", "out"], params)
    assert_one_line_error(result, "params.yaml: missing section 'code'")
    params = default_params()
    params["code"]["sandbox"] = {}
    result = run_stage(tmp_path, "prepare", ["--domain", "code", "--out", "out"], params)
    assert_one_line_error(result, "'code.sandbox' is not a domain section")
    params = default_params()
    params["code"]["checker"]["timeout_s"] = 0
    result = run_stage(tmp_path, "prepare", ["--domain", "code", "--out", "out"], params)
    assert_one_line_error(result, "'code.checker.timeout_s' must be > 0")
    assert not (tmp_path / "out").exists()


def test_generate_rejects_n_below_largest_k_and_unknown_system(tmp_path):
    params = default_params()
    params["generate"]["n"] = 5
    args = ["--domain", "replies", "--seed", "1", "--base", "b", "--data", "d", "--out", "g.jsonl"]
    result = run_stage(tmp_path, "generate", [*args, "--system", "zero_shot"], params)
    assert_one_line_error(result, "'generate.n' (5) must be >= the largest k")
    result = run_stage(tmp_path, "generate", [*args, "--system", "ten_shot"], default_params())
    assert_one_line_error(result, "unknown system")
    assert not (tmp_path / "g.jsonl").exists()


def test_base_model_unknown_path(tmp_path):
    params = default_params()
    params["base_model"]["source"] = str(tmp_path / "no-such-model")
    result = run_stage(tmp_path, "base_model", ["--out", "models/base"], params)
    assert_one_line_error(result, "'base_model.source'")
    assert not (tmp_path / "models").exists()


def test_evaluate_names_the_bad_generation_line(tmp_path):
    row = {"id": "a", "prompt": "hi", "references": ["hey"], "samples": ["yo"] * 10,
           "reference_nll": [3.0], "reference_tokens": [2]}
    write_lines(tmp_path / "gen.jsonl", [json.dumps(row), json.dumps({**row, "samples": []})])
    record = {"id": "a", "prompt": "hi", "references": ["hey"], "task": {}}
    (tmp_path / "data").mkdir()
    for split in ("test", "val"):
        write_lines(tmp_path / "data" / f"{split}.jsonl", [json.dumps(record)])
    args = ["--domain", "replies", "--system", "baseline", "--seed", "1",
            "--generations", "gen.jsonl",
            "--data", "data", "--metrics", "m.json", "--scores", "s.jsonl"]
    result = run_stage(tmp_path, "evaluate", args, default_params())
    assert_one_line_error(result, "gen.jsonl:2: 'samples' must be a non-empty list")
    write_lines(tmp_path / "gen.jsonl", [json.dumps({**row, "samples": ["yo"] * 3})])
    result = run_stage(tmp_path, "evaluate", args, default_params())
    assert_one_line_error(result, "gen.jsonl:1: 3 samples but evaluate.ks asks for k=10")
    write_lines(tmp_path / "gen.jsonl", [json.dumps({**row, "reference_tokens": [2, 3]})])
    result = run_stage(tmp_path, "evaluate", args, default_params())
    assert_one_line_error(result, "gen.jsonl:1: 'reference_nll' and 'reference_tokens' must")
    write_lines(tmp_path / "gen.jsonl", [json.dumps({**row, "id": "elsewhere"})])
    result = run_stage(tmp_path, "evaluate", args, default_params())
    assert_one_line_error(result, "gen.jsonl:1: id 'elsewhere' is not in the prepared split")
    assert not (tmp_path / "m.json").exists() and not (tmp_path / "s.jsonl").exists()
    args[args.index("baseline")] = "ten_shot"
    result = run_stage(tmp_path, "evaluate", args, default_params())
    assert_one_line_error(result, "'systems' names unknown system 'ten_shot'")


@pytest.mark.parametrize("params,message", [
    ({"train": {}}, "'train.seeds' must be a non-empty list of distinct int"),
    ({"train": {"seeds": [1, 1]}}, "'train.seeds' must be a non-empty list of distinct int"),
    ({"train": {"seeds": [True]}}, "'train.seeds' must be a non-empty list of distinct int"),
    ({"train": [42]}, "'train.seeds' must be a non-empty list of distinct int"),
])
def test_param_list_names_the_dotted_key(params, message):
    from polychromic.config import param_list

    with pytest.raises(UserError, match=message):
        param_list(params, "train.seeds", int)
    assert param_list({"train": {"seeds": [42, 7]}}, "train.seeds", int) == [42, 7]
