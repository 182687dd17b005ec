"""A researcher's own data file through the stages: a bad file stops prepare with one line and
nothing written, a hub id out of reach stops base_model at once, and a user's replies and qa
files run prepare -> generate -> evaluate with the metrics known by hand."""

import json
import subprocess
import sys
import time

import pytest

from tests.helpers import USER_REPLIES_HEADER as HEADER
from tests.helpers import USER_REPLIES_ROWS as ROWS
from tests.helpers import (
    assert_one_line_error,
    default_params,
    jsonl,
    run_module,
    run_stage,
)
from tests.helpers import user_reply as reply
from tests.helpers import write_user_replies as write


def replies_params(file: str) -> dict:
    params = default_params()
    params["replies"]["data"]["file"] = file
    return params


def test_prepare_reports_too_few_tweets_not_max_prompts(tmp_path):
    write(tmp_path, "tiny.csv", "\n".join([HEADER, *ROWS]))
    result = run_stage(tmp_path, "prepare", ["--domain", "replies", "--out", "out"],
                       replies_params("data/user/replies/tiny.csv"))
    assert_one_line_error(result, "tiny.csv: 2 distinct tweets (within replies.data."
                          "max_prompt_chars and max_reply_chars) leave the val split empty")
    assert "so it needs about 24 tweets" in result.stderr
    assert "max_prompts" not in result.stderr.replace("max_prompt_chars", "")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("data,message", [
    (jsonl(reply(), reply()).encode() + b'{"tweet_id": "2", "tweet": "\xff"}\n',
     "user.jsonl:3: not valid UTF-8"),
    (jsonl(reply(reply_likes=1)) + '{"tweet_id": "2", "tweet": "a", "reply": "b", '
     '"reply_likes": NaN}\n', "user.jsonl:2: NaN is not a JSON number"),
    (jsonl(reply("7", "How are you?"), reply("7", "Where?")), "user.jsonl:2: field 'tweet_id'"),
])
def test_prepare_stops_on_a_bad_user_file_with_one_line(tmp_path, data, message):
    write(tmp_path, "user.jsonl", data)
    result = run_stage(tmp_path, "prepare", ["--domain", "replies", "--out", "out"],
                       replies_params("data/user/replies/user.jsonl"))
    assert_one_line_error(result, message)
    assert not (tmp_path / "out").exists()


def test_a_hub_id_offline_fails_at_once(tmp_path):
    """No minute of retries: the hub's endpoint is probed once, briefly."""
    params = {"base_model": {"source": "some-org/some-model", "revision": "f" * 40}}
    (tmp_path / "params.yaml").write_text(json.dumps(params))
    env = {"PATH": "/usr/bin:/bin", "HF_HOME": str(tmp_path / "hf"),
           "HF_ENDPOINT": "http://127.0.0.1:9"}
    start = time.monotonic()
    result = subprocess.run([sys.executable, "-m", "polychromic.stages.base_model", "--out", "m"],
                            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
    elapsed = time.monotonic() - start
    assert_one_line_error(result, "'base_model.source' 'some-org/some-model' is a hub id, the "
                          "hub (http://127.0.0.1:9) cannot be reached")
    assert "local checkpoint directory, or to embedded:smollm2" in result.stderr
    assert elapsed < 5, elapsed
    assert not (tmp_path / "m").exists()


def generate_and_evaluate(cwd, domain, model_dir, samples_for):
    """generate with the tiny model, then evaluate the samples `samples_for(record)` put in
    their place (the tiny model's own are noise): the numbers are then known by hand."""
    run_module(cwd, "prepare", "--domain", domain, "--out", f"data/{domain}")
    run_module(cwd, "generate", "--domain", domain, "--system", "zero_shot", "--seed", "1",
               "--base", str(model_dir), "--data", f"data/{domain}", "--out", "gen.jsonl")
    test = {r["id"]: r for r in map(json.loads, (cwd / f"data/{domain}/dev.jsonl").open())}
    rows = [json.loads(line) for line in (cwd / "gen.jsonl").open()]
    assert len(rows) == 4 and all(len(r["samples"]) == 10 for r in rows)
    for row in rows:
        row["samples"] = samples_for(test[row["id"]])
    (cwd / "gen.jsonl").write_text(jsonl(*rows))
    run_module(cwd, "evaluate", "--domain", domain, "--system", "zero_shot", "--seed", "1",
               "--generations", "gen.jsonl", "--data", f"data/{domain}", "--metrics", "m.json",
               "--scores", "s.jsonl")
    return test, rows, json.loads((cwd / "m.json").read_text())


def small_run_params(domain: str, file: str) -> dict:
    params = default_params()
    params[domain]["data"]["file"] = file
    params[domain]["sampling"].update(prompts=4, max_new_tokens=4)
    params["generate"].update(n=10, batch_prompts=4)
    return params


@pytest.mark.slow
def test_a_users_replies_file_runs_prepare_to_evaluate(tmp_path, tiny_model_dir):
    lines = [reply(f"t{i}", f"Message number {i} about topic {i % 7}", text,
                   reply_likes=float(i % 9), reply_author="u")
             for i in range(80) for text in (f"First answer to {i}", f"Another take on {i}")]
    write(tmp_path, "mine.jsonl", jsonl(*lines))
    (tmp_path / "params.yaml").write_text(json.dumps(
        small_run_params("replies", "data/user/replies/mine.jsonl")))

    def own_references(record):  # a human reply matches itself: passes if well-formed
        return [record["references"][i % 2] for i in range(10)]

    test, rows, result = generate_and_evaluate(tmp_path, "replies", tiny_model_dir,
                                               own_references)
    for record in test.values():  # each test prompt is one tweet with its two replies
        number = record["prompt"].split()[2]
        assert record["references"] == [f"First answer to {number}",
                                        f"Another take on {number}"]
    assert result["passk"]["pass@1"] == 1.0
    assert result["domain"]["well_formed"] == 1.0


@pytest.mark.slow
def test_a_users_qa_file_runs_prepare_to_evaluate(tmp_path, tiny_model_dir):
    path = tmp_path / "data" / "user" / "qa" / "mine.csv"
    path.parent.mkdir(parents=True)
    path.write_text("\n".join(["id,question,answer"] + [f"q{i},What is {i} plus {i}?,{2 * i}"
                                                         for i in range(40)]))
    (tmp_path / "params.yaml").write_text(json.dumps(
        small_run_params("qa", "data/user/qa/mine.csv")))

    def three_right(record):  # continuations of "Answer:"; the last one gives no answer
        return [f" {record['references'][0]}"] * 3 + [" -1"] * 6 + [""]

    test, rows, result = generate_and_evaluate(tmp_path, "qa", tiny_model_dir, three_right)
    assert all(r["task"] == {"family": "user", "answer": r["references"][0],
                             "check": "numeric"} for r in test.values())
    assert result["passk"]["pass@1"] == pytest.approx(0.3)
    assert result["passk"]["pass@10"] == 1.0
    assert result["passk"]["pass@3"] == pytest.approx(1 - (7 * 6 * 5) / (10 * 9 * 8))
    assert result["domain"] == {"answered": pytest.approx(0.9), "score": pytest.approx(0.3)}
    assert set(result["quality"]) == {"log_perplexity", "perplexity"}

