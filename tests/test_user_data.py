"""A researcher's own data file for each domain: read line by line, every bad line stopped with
one error naming file:line and field, nothing written; spreadsheet exports read as meant."""

import json
import subprocess
import sys
import time

import pytest

from polychromic.config import UserError
from polychromic.domains.replies import USER_SCHEMA as REPLIES_SCHEMA
from polychromic.domains.replies import RepliesData, split_records, user_pairs
from polychromic.userdata import read_rows, user_file
from tests.conftest import REPO, run_module
from tests.test_bad_input import assert_one_line_error, default_params, run_stage

HEADER = "tweet_id,tweet,reply,reply_likes,reply_author"
ROWS = ["1,How was the game?,We won!,5,ann", "1,How was the game?,Lost again,2,bob",
        '2,"Coffee, or tea?",Coffee always,0,cy']


def write(tmp_path, name, data: bytes | str):
    path = tmp_path / "data" / "user" / "replies" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data if isinstance(data, bytes) else data.encode())
    return path


def jsonl(*records) -> str:
    return "".join(json.dumps(r) + "\n" for r in records)


def reply(tweet_id="1", tweet="hi", text="hey", **extra):
    return {"tweet_id": tweet_id, "tweet": tweet, "reply": text, **extra}


def test_bom_and_crlf_read_like_plain_utf8(tmp_path):
    plain = write(tmp_path, "plain.csv", "\n".join([HEADER, *ROWS]) + "\n")
    excel = write(tmp_path, "excel.csv", b"\xef\xbb\xbf" + ("\r\n".join([HEADER, *ROWS])
                                                           + "\r\n").encode())
    rows = read_rows(plain, REPLIES_SCHEMA)
    assert [r.values for r in rows] == [r.values for r in read_rows(excel, REPLIES_SCHEMA)]
    assert rows[2].values == {"tweet_id": "2", "tweet": "Coffee, or tea?",
                              "reply": "Coffee always", "reply_likes": 0.0,
                              "reply_author": "cy"}
    assert [r.line for r in rows] == [2, 3, 4]


@pytest.mark.parametrize("name,data,message", [
    ("bad.jsonl", jsonl(reply(), reply()).encode() + b'{"tweet_id": "2", "tweet": "caf\xe9"}\n',
     "bad.jsonl:3: not valid UTF-8 (byte 0xe9 at column 32"),
    ("nul.csv", (HEADER + "\n" + ROWS[0] + "\n").encode() + b"3,a\x00b,c,1,d\n",
     "nul.csv:3: NUL byte"),
    ("nan.jsonl", jsonl(reply(reply_likes=1)) + '{"tweet_id": "2", "tweet": "a", "reply": "b", '
     '"reply_likes": NaN}\n', "nan.jsonl:2: NaN is not a JSON number"),
    ("inf.jsonl", jsonl(reply(reply_likes=1)) + '{"tweet_id": "2", "tweet": "a", "reply": "b", '
     '"reply_likes": Infinity}\n', "inf.jsonl:2: Infinity is not a JSON number"),
    ("nan.csv", "\n".join([HEADER, ROWS[0], "2,a,b,nan,c"]),
     "nan.csv:3: field 'reply_likes' must be a finite number, not nan"),
    ("inf.csv", "\n".join([HEADER, "2,a,b,-inf,c"]),
     "inf.csv:2: field 'reply_likes' must be a finite number, not -inf"),
    ("word.csv", "\n".join([HEADER, "2,a,b,many,c"]),
     "word.csv:2: field 'reply_likes' is not a number ('many')"),
    ("missing.jsonl", jsonl(reply(), {"tweet_id": "2", "tweet": "a"}),
     "missing.jsonl:2: missing field 'reply'"),
    ("empty.csv", "\n".join([HEADER, '3," ",b,1,c']), "empty.csv:2: field 'tweet' is empty"),
    ("cells.csv", "\n".join([HEADER, "3,a,b"]), "cells.csv:2: 3 cells, the header has 5"),
    ("list.jsonl", jsonl(reply(tweet=["a"])), "list.jsonl:1: field 'tweet' must be a string"),
])
def test_bad_lines_name_file_line_and_field(tmp_path, name, data, message):
    with pytest.raises(UserError, match=message.replace("(", r"\(").replace(")", r"\)")):
        user_pairs(write(tmp_path, name, data))


def test_one_tweet_id_for_two_tweets_is_an_error(tmp_path):
    path = write(tmp_path, "ids.jsonl", jsonl(reply("7", "How are you?"), reply("8", "Yo"),
                                              reply("7", "Where are you?")))
    with pytest.raises(UserError, match=r"ids.jsonl:3: field 'tweet_id' '7' was a different "
                       r"tweet on line 1"):
        user_pairs(path)
    # the same tweet under its id again, up to spaces, is one prompt with two replies
    path = write(tmp_path, "same.jsonl", jsonl(reply("7", "How are you?"),
                                               reply("7", "How  are you? ", "fine")))
    pairs = user_pairs(path)
    assert len({p["id"] for p in pairs}) == 1


def test_likes_on_some_lines_only_or_negative(tmp_path):
    path = write(tmp_path, "some.jsonl", jsonl(reply(reply_likes=3), reply("2", "a")))
    with pytest.raises(UserError, match="some.jsonl:2: field 'reply_likes' is missing here but "
                       "given on line 1"):
        user_pairs(path)
    path = write(tmp_path, "neg.jsonl", jsonl(reply(reply_likes=-1)))
    with pytest.raises(UserError, match="neg.jsonl:1: field 'reply_likes' must be >= 0"):
        user_pairs(path)


def test_equal_engagement_warns_and_splits(tmp_path, capsys):
    path = write(tmp_path, "flat.jsonl", jsonl(*[reply(str(i), f"message {i}", f"reply {i}")
                                                 for i in range(60)]))
    pairs = user_pairs(path)
    assert "every reply has the same engagement (0)" in capsys.readouterr().err
    splits = split_records(pairs, RepliesData())
    # each stratum of 15 gives round(1.5) = 2 to val and to test
    assert sorted(len(s) for s in splits.values()) == [8, 8, 44]


def test_user_file_must_live_where_dvc_tracks_it(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "elsewhere.csv").write_text(HEADER)
    with pytest.raises(UserError, match="'replies.data.file' .* must be a file under "
                       "data/user/replies/"):
        user_file("elsewhere.csv", "replies", "replies.data.file")
    with pytest.raises(UserError, match="no such file"):
        user_file("data/user/replies/absent.csv", "replies", "replies.data.file")


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


def test_code_user_file_tests_and_solutions(tmp_path, monkeypatch):
    from polychromic.domains.code import USER_SCHEMA, user_record, user_splits

    monkeypatch.chdir(tmp_path)
    values = {"task_id": "p1", "prompt": "Write add(a, b).",
              "test": "import math\nassert add(1, 2) == 3\nassert math.isclose(add(0.1, 0.2), 0.3)",
              "solution": "def add(a, b):  \n    return a + b\n"}
    record = user_record(values, "f:1")
    assert record["task"]["tests"] == ["import math\nassert add(1, 2) == 3",
                                       "import math\nassert math.isclose(add(0.1, 0.2), 0.3)"]
    assert record["task"]["shown_tests"] == ["assert add(1, 2) == 3",
                                             "assert math.isclose(add(0.1, 0.2), 0.3)"]
    assert record["task"]["entry_point"] == "add"
    assert record["references"] == ["def add(a, b):\n    return a + b"]
    check = "def check(f):\n    assert f(1, 2) == 3\ncheck(add)"
    assert user_record({**values, "test": check}, "f:1")["task"]["tests"] == [check]
    with pytest.raises(UserError, match=r"f:1: field 'test' is not valid Python \(line 1"):
        user_record({**values, "test": "assert add(1,"}, "f:1")

    path = tmp_path / "data" / "user" / "code" / "problems.jsonl"
    path.parent.mkdir(parents=True)
    problems = [{**values, "task_id": i} for i in range(20)]
    for problem in problems[:6]:
        del problem["solution"]
        problem["entry_point"] = "add"
    path.write_text(jsonl(*problems))
    assert [r.line for r in read_rows(path, USER_SCHEMA)] == list(range(1, 21))
    from polychromic.domains.code import CodeData

    splits = user_splits(CodeData(file=str(path.relative_to(tmp_path))), "code.data")
    assert len(splits["test"]) == 4 and len(splits["val"]) == 2
    assert all(r["references"] for r in splits["train"])  # never trains without a solution
    ids = [r["id"] for name in ("train", "val", "test") for r in splits[name]]
    assert len(ids) == len(set(ids)) and set(ids) <= {str(i) for i in range(20)}
    path.write_text(jsonl(problems[0], problems[0]))
    with pytest.raises(UserError, match="problems.jsonl:2: field 'task_id' '0' repeats line 1"):
        user_splits(CodeData(file=str(path.relative_to(tmp_path))), "code.data")


def test_qa_user_file_checks_exact_and_numeric(tmp_path, monkeypatch):
    from polychromic.domains.qa import QaChecker, QaData, user_splits

    monkeypatch.chdir(tmp_path)
    path = tmp_path / "data" / "user" / "qa" / "q.csv"
    path.parent.mkdir(parents=True)
    rows = ["question,answer,check", "Capital of France?,Paris,", "Half of 3?,1.5,",
            "Two plus two?,4,exact"] + [f"What is {i} squared?,{i * i}," for i in range(10)]
    path.write_text("\n".join(rows))
    splits = user_splits(QaData(file="data/user/qa/q.csv"), "qa.data")
    records = {r["prompt"]: r for name in ("train", "val", "test") for r in splits[name]}
    assert len(records) == 13
    checker = QaChecker("")

    def passes(question, sample):
        return checker.check(records[question], sample)

    assert passes("Capital of France?", "Answer: paris.") and not passes("Capital of France?",
                                                                        "Answer: Lyon")
    assert passes("Half of 3?", "Answer: 1.50") and passes("Half of 3?", "Answer: 1.5000000001")
    assert not passes("Half of 3?", "Answer: 1.51") and not passes("Half of 3?", "Answer: one")
    assert passes("Two plus two?", "Answer: 4") and not passes("Two plus two?", "Answer: 4.0")
    path.write_text("\n".join([*rows, "capital of  france?,Paris,"]))
    with pytest.raises(UserError, match="q.csv:15: field 'question' repeats line 2"):
        user_splits(QaData(file="data/user/qa/q.csv"), "qa.data")
    path.write_text("\n".join([rows[0], "Name?,Bob,numeric"]))
    with pytest.raises(UserError, match="q.csv:2: field 'answer' .'Bob'. is not a number"):
        user_splits(QaData(file="data/user/qa/q.csv"), "qa.data")


def test_a_hub_id_offline_fails_at_once(tmp_path):
    """No minute of retries: the hub's endpoint is probed once, briefly."""
    params = {"base_model": {"source": "some-org/some-model"}}
    (tmp_path / "params.yaml").write_text(json.dumps(params))
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO / "src"),
           "HF_HOME": str(tmp_path / "hf"), "HF_ENDPOINT": "http://127.0.0.1:9"}
    start = time.monotonic()
    result = subprocess.run([sys.executable, "-m", "polychromic.base_model", "--out", "m"],
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
    test = {r["id"]: r for r in map(json.loads, (cwd / f"data/{domain}/test.jsonl").open())}
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
    params[domain]["sampling"].update(test_prompts=4, max_new_tokens=4)
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
