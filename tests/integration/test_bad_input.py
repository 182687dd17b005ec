"""Bad input stops a stage with one line naming the file:line or params key, a non-zero exit,
and no output written."""

import json

import pytest

from tests.helpers import assert_one_line_error, default_params, run_stage, write_lines


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
    assert not (tmp_path / "out").exists()


def test_a_bad_subsection_fails_where_it_is_read_and_in_the_whole_check(tmp_path):
    """A stage parses only the domain subsections it reads (and declares in dvc.yaml):
    prepare reads `code.data`, so a bad `code.checker` is not its business; the checker's
    readers and `polychromic doctor`/`profile` (params_check) refuse it."""
    from polychromic.config import UserError
    from polychromic.domains import load_domain
    from polychromic.params_check import check_all

    params = default_params()
    params["code"]["checker"]["timeout_s"] = 0
    with pytest.raises(UserError, match=r"'code\.checker\.timeout_s' must be > 0"):
        check_all(params)
    domain = load_domain("code", params)
    assert domain.settings["data"].test_set == "mbpp"
    with pytest.raises(UserError, match=r"'code\.checker\.timeout_s' must be > 0"):
        domain.checker([])


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
           "reference_nll": [3.0], "reference_tokens": [2], "precision": "fp32"}
    write_lines(tmp_path / "gen.jsonl", [json.dumps(row), json.dumps({**row, "samples": []})])
    record = {"id": "a", "prompt": "hi", "references": ["hey"], "task": {}}
    (tmp_path / "data").mkdir()
    for split in ("dev", "val"):
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
    write_lines(tmp_path / "gen.jsonl", [json.dumps(row), json.dumps({**row, "precision": "bf16"})])
    result = run_stage(tmp_path, "evaluate", args, default_params())
    assert_one_line_error(result, "gen.jsonl:2: precision 'bf16' differs from line 1's 'fp32'")
    write_lines(tmp_path / "gen.jsonl", [json.dumps({k: v for k, v in row.items()
                                                     if k != "precision"})])
    result = run_stage(tmp_path, "evaluate", args, default_params())
    assert_one_line_error(result, "gen.jsonl:1: missing field 'precision'")
    assert not (tmp_path / "m.json").exists() and not (tmp_path / "s.jsonl").exists()
    args[args.index("baseline")] = "ten_shot"
    result = run_stage(tmp_path, "evaluate", args, default_params())
    assert_one_line_error(result, "'systems' names unknown system 'ten_shot'")
