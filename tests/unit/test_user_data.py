"""A researcher's own data file for each domain: read line by line, every bad line stopped with
one error naming file:line and field; spreadsheet exports read as meant (the stages on a
user's file: tests/integration/test_user_data.py)."""

import pytest

from polychromic.config import UserError
from polychromic.domains.replies import USER_SCHEMA as REPLIES_SCHEMA
from polychromic.domains.replies import RepliesData, split_records, user_pairs
from polychromic.userdata import read_rows, user_file
from tests.helpers import USER_REPLIES_HEADER as HEADER
from tests.helpers import USER_REPLIES_ROWS as ROWS
from tests.helpers import jsonl
from tests.helpers import user_reply as reply
from tests.helpers import write_user_replies as write


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
    # issue 24: each of these raised a traceback or was taken silently
    ("deep.jsonl", '{"tweet_id": "1", "x": ' + "[" * 3000 + "]" * 3000 + "}\n",
     "deep.jsonl:1: JSON nested too deeply"),
    ("digits.jsonl", '{"tweet_id": "1", "tweet": "a", "reply": "b", "reply_likes": '
     + "9" * 5000 + "}\n", "digits.jsonl:1: a JSON integer of more than 4300 digits"),
    ("huge.jsonl", jsonl(reply(reply_likes=10**400)),
     "huge.jsonl:1: field 'reply_likes' must be a finite number, not a huge integer"),
    ("surrogate.jsonl", '{"tweet_id": "1", "tweet": "a\\ud800", "reply": "b"}\n',
     "surrogate.jsonl:1: a lone surrogate"),
    ("unused.jsonl", '{"tweet_id": "1", "tweet": "a", "reply": "b", "note": "\\udc00"}\n',
     "unused.jsonl:1: a lone surrogate"),
    ("nul.jsonl", '{"tweet_id": "1", "tweet": "a\\u0000b", "reply": "b"}\n',
     "nul.jsonl:1: a NUL character"),
    ("twice.jsonl", '{"tweet_id": "1", "tweet": "a", "tweet": "b", "reply": "c"}\n',
     "twice.jsonl:1: key 'tweet' appears twice in one object"),
    ("first.jsonl", jsonl(reply(tweet=" ")) + "{not json\n",  # line 1's error, not line 2's
     "first.jsonl:1: field 'tweet' is empty"),
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
    records = {r["prompt"]: r for name in ("train", "val", "dev") for r in splits[name]}
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
