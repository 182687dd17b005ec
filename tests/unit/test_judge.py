"""Stage `judge` against a fake Anthropic Messages API on 127.0.0.1, driven by the real client.

The fake judge reads the conversation message to pick a scripted behaviour, finds the
polychromic reply by its marker ("POLY"), and answers in A/B terms, so a wrong A/B mapping,
a lenient parser or a failure counted as a tie shows up in the counts.
"""

from __future__ import annotations

import contextlib
import http.server
import json
import re
import sqlite3
import sys
import threading
from pathlib import Path

import pytest
import yaml
from scipy.stats import binomtest

from polychromic.config import UserError, load_section, run_main
from polychromic.domains.replies import JUDGE
from polychromic.settings import JudgeConfig
from polychromic.stages.judge import (
    DISABLED_REASON,
    a_goes_first,
    main,
    parse_answer,
    proportion,
)

CRITERIA = JUDGE.criteria
KEY = "sk-test-SECRET-123"
SECTION = re.compile(r"<(message|reply_a|reply_b)>\n(.*?)\n</\1>", re.S)


def script(message: str, reply_a: str, reply_b: str, attempt: int, key: str):
    """(HTTP status, answer text, stop reason) of the fake judge for one request."""
    poly = "A" if "POLY" in reply_a else "B"
    base = "B" if poly == "A" else "A"
    every = {c: poly for c in CRITERIA}
    kind = message.split()[0]
    answers = {
        "poly": every,
        "base": dict.fromkeys(CRITERIA, base),
        "tie": dict.fromkeys(CRITERIA, "tie"),
        "mixed": {"engagement": poly, "relevance": base, "creativity": "tie",
                  "naturalness": poly, "overall": poly},
        "missing": {c: poly for c in CRITERIA if c != "overall"},
        "badvalue": every | {"overall": "C"},
        "extra": every | {"reason": "funnier"},
    }
    if kind in answers:
        return 200, json.dumps(answers[kind]), "end_turn"
    if kind == "fenced":
        return 200, "```json\n" + json.dumps(every) + "\n```", "end_turn"
    if kind == "prose":
        return 200, f"Here is my verdict: {json.dumps(every)}", "end_turn"
    if kind == "refuse":
        return 200, "", "refusal"
    if kind == "refusetext":
        return 200, "I can't help with judging these replies.", "end_turn"
    if kind == "echo":  # a broken endpoint that leaks the key it was sent
        return 200, f"your key is {key}", "end_turn"
    if kind == "flaky" and attempt > 1:
        return 200, json.dumps(every), "end_turn"
    if kind == "unauthorized":
        return 401, "", None
    return 500, "", None  # "flaky" (first attempt) and "broken"


class FakeAPI(http.server.BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["content-length"])))
        server = self.server
        headers = {k.lower(): v for k, v in self.headers.items()}
        server.requests.append({"path": self.path, "headers": headers, "body": body})
        user = body["messages"][-1]["content"]
        parts = dict(SECTION.findall(user))
        attempt = server.attempts[parts["message"]] = server.attempts.get(parts["message"], 0) + 1
        key = headers.get("authorization", "").removeprefix("Bearer ")
        code, text, stop = script(parts["message"], parts["reply_a"], parts["reply_b"],
                                  attempt, key)
        if code != 200:
            payload = {"type": "error", "error": {"type": "api_error", "message": "boom"}}
        elif self.path.endswith("/chat/completions"):
            refused = stop == "refusal"
            payload = {"id": "c1", "object": "chat.completion", "created": 0,
                       "model": body["model"], "choices": [{"index": 0, "finish_reason": "stop",
                       "message": {"role": "assistant", "content": None if refused else text,
                                   "refusal": "I won't." if refused else None}}]}
        else:
            payload = {"id": "m1", "type": "message", "role": "assistant", "model": body["model"],
                       "content": [{"type": "text", "text": text}] if text else [],
                       "stop_reason": stop, "stop_sequence": None,
                       "usage": {"input_tokens": 1, "output_tokens": 1}}
        data = json.dumps(payload).encode()
        self.send_response(code)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.send_header("retry-after-ms", "1")  # the client's retries, without the back-off
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args) -> None:  # keep pytest's captured stderr clean
        pass


@contextlib.contextmanager
def fake_api():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), FakeAPI)
    server.requests, server.attempts = [], {}
    thread = threading.Thread(target=server.serve_forever, args=(0.01,), daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


@pytest.fixture
def api():
    with fake_api() as server:
        yield server


def url(server) -> str:
    return f"http://127.0.0.1:{server.server_address[1]}"


def setup(root: Path, messages: list[str], judge: dict, seeds=(42,)) -> list[str]:
    """params.yaml and the two generations dirs in `root`; returns main's argv."""
    params = {"seeds": list(seeds), "judge": {"cache_dir": "cache", **judge}}
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    for system, marker, other in (("polychromic", "POLY", "BASE"), ("baseline", "BASE", "POLY")):
        folder = root / "gen" / system
        folder.mkdir(parents=True, exist_ok=True)
        for seed in seeds:
            rows = [{"id": f"t{i:02d}", "prompt": f"{message} #{i}", "references": ["r"],
                     "system": system, "samples": [f"{marker} reply {i}", f"{other} decoy"],
                     "precision": "fp32"}
                    for i, message in enumerate(messages)]
            (folder / f"seed{seed}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return ["--domain", "replies", "--a", "gen/polychromic", "--b", "gen/baseline",
            "--out", "out/judge.json", "--judgements", "out/judgements.jsonl"]


def message_of(request: dict) -> str:
    return SECTION.findall(request["body"]["messages"][-1]["content"])[0][1]


@pytest.fixture(scope="module")
def mlflow_db(tmp_path_factory) -> Path:
    """One store for the module: creating an MLflow database takes seconds."""
    return tmp_path_factory.mktemp("mlflow") / "mlflow.db"


def enable(root: Path, monkeypatch, server, mlflow_db: Path) -> dict:
    monkeypatch.chdir(root)
    monkeypatch.setenv("ANTHROPIC_API_KEY", KEY)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{mlflow_db}")
    return {"enabled": True, "base_url": url(server), "max_retries": 2, "timeout_s": 10}


def outputs(root: Path) -> tuple[dict, list[dict]]:
    lines = (root / "out" / "judgements.jsonl").read_text().splitlines()
    return json.loads((root / "out" / "judge.json").read_text()), [json.loads(x) for x in lines]


# 8 wins, 2 losses, 1 tie overall for polychromic; 5 unparseable, 2 refused, 1 error.
SCENARIO = ["poly"] * 5 + ["base"] * 2 + ["tie", "mixed", "fenced", "flaky", "prose",
            "missing", "badvalue", "extra", "echo", "refuse", "refusetext", "broken"]


def test_counts_statistics_mapping_and_secrecy(tmp_path, monkeypatch, api, mlflow_db, capfd):
    argv = setup(tmp_path, SCENARIO, enable(tmp_path, monkeypatch, api, mlflow_db))
    main(argv)
    metrics, records = outputs(tmp_path)
    assert (metrics["a"], metrics["b"], metrics["seeds"]) == ("polychromic", "baseline", [42])
    assert {k: metrics[k] for k in ("n_requests", "ok", "refused", "unparseable", "errors",
                                    "cache_hits")} == {"n_requests": 19, "ok": 11, "refused": 2,
                                                       "unparseable": 5, "errors": 1,
                                                       "cache_hits": 0}
    overall = metrics["overall"]
    assert (overall["wins"], overall["losses"], overall["ties"]) == (8, 2, 1)
    assert overall["win_rate"] == pytest.approx(0.8)
    assert overall["wilson_ci95"] == pytest.approx([0.4902, 0.9433], abs=5e-4)  # textbook
    assert overall["sign_test_p"] == pytest.approx(binomtest(8, 10, 0.5).pvalue)
    assert overall["sign_test_p"] == pytest.approx(112 / 1024)  # 2 * (1 + 10 + 45) / 2**10
    expected = {"engagement": (8, 2, 1), "relevance": (7, 3, 1), "creativity": (7, 2, 2),
                "naturalness": (8, 2, 1), "overall": (8, 2, 1)}
    assert {c: (s["wins"], s["losses"], s["ties"]) for c, s in metrics["criteria"].items()} \
        == expected

    assert [r["id"] for r in records] == [f"t{i:02d}" for i in range(len(SCENARIO))]
    by_message = dict(zip(SCENARIO, records, strict=True))  # the last of repeated kinds
    assert by_message["fenced"]["winners"] == dict.fromkeys(CRITERIA, "polychromic")
    assert by_message["base"]["winners"]["overall"] == "baseline"
    assert by_message["mixed"]["winners"]["relevance"] == "baseline"
    for kind, status in [("prose", "unparseable"), ("missing", "unparseable"),
                         ("badvalue", "unparseable"), ("extra", "unparseable"),
                         ("refuse", "refused"), ("refusetext", "refused"), ("broken", "error"),
                         ("flaky", "ok")]:
        assert by_message[kind]["status"] == status, kind
        assert ("winners" in by_message[kind]) == (status == "ok")
    # The judge saw polychromic's first sample in the slot the record names.
    seen = {message_of(r): r["body"]["messages"][-1]["content"] for r in api.requests}
    for i, (kind, record) in enumerate(zip(SCENARIO, records, strict=True)):
        reply_a = SECTION.findall(seen[f"{kind} #{i}"])[1][1]
        assert reply_a == (f"POLY reply {i}" if record["a_system_position"] == "A"
                           else f"BASE reply {i}")
    assert {r["a_system_position"] for r in records} == {"A", "B"}
    body = api.requests[0]["body"]
    assert (body["max_tokens"], body["model"]) == (300, "claude-sonnet-4-5")
    assert "temperature" not in body  # the Anthropic API (2026-10-21) answers 400 to it
    decided = [r for r in records if r["status"] == "ok" and r["winners"]["overall"] != "tie"]
    first = sum((r["winners"]["overall"] == "polychromic") == (r["a_system_position"] == "A")
                for r in decided)
    bias = metrics["position_bias"]
    assert (bias["first_slot_wins"], bias["decided"]) == (first, 10)
    assert bias["binomial_p"] == pytest.approx(binomtest(first, 10).pvalue)

    assert (api.attempts["flaky #10"], api.attempts["broken #18"]) == (2, 3)  # max_retries 2

    # The key went to the API and nowhere else: files, cache, MLflow, terminal.
    assert all(r["headers"]["authorization"] == f"Bearer {KEY}" for r in api.requests)
    assert by_message["echo"]["raw"] == "your key is [redacted]"
    files = [p for p in tmp_path.rglob("*") if p.is_file()] + [mlflow_db]
    assert len(list((tmp_path / "cache").glob("*.json"))) == 18  # all but the failed request
    assert not [p for p in files if KEY.encode() in p.read_bytes()]
    with sqlite3.connect(mlflow_db) as db:
        run = "(select run_uuid from runs order by start_time desc limit 1)"
        params = dict(db.execute(f"select key, value from params where run_uuid = {run}"))
        logged = dict(db.execute(f"select key, value from metrics where run_uuid = {run}"))
    assert params["judge.model"] == "claude-sonnet-4-5" and KEY not in str(params)
    assert logged["overall.wins"] == 8 and logged["wilson_ci95.overall.low"] == pytest.approx(
        overall["wilson_ci95"][0])
    out, err = capfd.readouterr()
    assert KEY not in out + err and "overall 8-2-1 (win rate 0.800, sign p 0.109)" in out

    # A rerun asks again only for the request that failed.
    before = len(api.requests)
    main(argv)
    assert {message_of(r) for r in api.requests[before:]} == {"broken #18"}
    assert outputs(tmp_path)[0]["cache_hits"] == 18


def test_cache_makes_a_rerun_free_and_identical(tmp_path, monkeypatch, api, mlflow_db):
    argv = setup(tmp_path, ["poly one", "base two", "prose three", "refuse four"],
                 enable(tmp_path, monkeypatch, api, mlflow_db))
    main(argv)
    first, first_lines = outputs(tmp_path), (tmp_path / "out/judgements.jsonl").read_bytes()
    assert len(api.requests) == 4 and first[0]["cache_hits"] == 0
    main(argv)
    assert len(api.requests) == 4  # no new request
    assert (tmp_path / "out/judgements.jsonl").read_bytes() == first_lines
    assert outputs(tmp_path)[0] == first[0] | {"cache_hits": 4}


def test_order_is_seeded_reproducible_and_balanced(tmp_path, monkeypatch, api, mlflow_db):
    ids = [f"tweet{i}" for i in range(2000)]
    order = [a_goes_first(42, 1, t) for t in ids]
    assert order == [a_goes_first(42, 1, t) for t in reversed(ids)][::-1]
    assert order != [a_goes_first(43, 1, t) for t in ids]
    assert order != [a_goes_first(42, 2, t) for t in ids]
    assert 0.45 < sum(order) / len(order) < 0.55
    # End to end: per training seed, at most max_prompts pairs, positions as drawn above.
    config = enable(tmp_path, monkeypatch, api, mlflow_db) | {"max_prompts": 3, "seed": 7}
    main(setup(tmp_path, ["poly"] * 5, config, seeds=(1, 2)))
    records = outputs(tmp_path)[1]
    assert [(r["seed"], r["id"]) for r in records] == [
        (s, f"t{i:02d}") for s in (1, 2) for i in range(3)]
    assert [r["a_system_position"] for r in records] == [
        "A" if a_goes_first(7, r["seed"], r["id"]) else "B" for r in records]
    assert all(r["winners"]["overall"] == "polychromic" for r in records)


def test_a_domain_without_a_rubric_is_not_judged(tmp_path, monkeypatch, api, mlflow_db):
    """code has no judge rubric (its samples are run): enabled or not, nothing is called."""
    config = enable(tmp_path, monkeypatch, api, mlflow_db)
    argv = setup(tmp_path, ["poly"], config)
    main([*argv[:1], "code", *argv[2:]])
    assert json.loads((tmp_path / "out/judge.json").read_text()) == {
        "enabled": False, "reason": "the domain has no judge rubric"}
    assert api.requests == []


def test_disabled_writes_the_reason_and_calls_nothing(tmp_path, monkeypatch, api):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("ANTHROPIC_API_KEY", KEY)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    main(setup(tmp_path, ["poly"], {"base_url": url(api)}))
    assert json.loads((tmp_path / "out/judge.json").read_text()) == {
        "enabled": False, "reason": DISABLED_REASON}
    assert (tmp_path / "out/judgements.jsonl").read_text() == ""
    assert api.requests == [] and not (tmp_path / "mlflow.db").exists()


@pytest.mark.parametrize("change,message", [
    ("no key", "error: judge.enabled is true but ANTHROPIC_API_KEY is not set"),
    ("missing seed", "gen/polychromic/seed7.jsonl: no such file"),
    ("other ids", "hold different ids (e.g. ['t00', 't01'])"),
    ("no openai", "judge.backend is 'openai' but the `openai` package is not installed"),
    ("all fail", "all 1 judge requests failed (InternalServerError"),
    ("unauthorized", "the judge API rejected the request (AuthenticationError: Error code: 401"),
    ("same names", "--a and --b name the same system 'polychromic'"),
])
def test_bad_setups_exit_2_and_write_nothing(tmp_path, monkeypatch, api, mlflow_db, capfd,
                                             change, message):
    config = enable(tmp_path, monkeypatch, api, mlflow_db) | {"max_retries": 0}
    prompts = {"all fail": ["broken"], "unauthorized": ["poly", "unauthorized"]}
    argv = setup(tmp_path, prompts.get(change, ["poly"]), config)
    if change == "same names":
        argv[argv.index("--b") + 1] = "elsewhere/polychromic"
    if change == "no key":
        monkeypatch.delenv("ANTHROPIC_API_KEY")
    if change == "missing seed":
        (tmp_path / "params.yaml").write_text(yaml.safe_dump(
            {"seeds": [42, 7], "judge": config}))
    if change == "other ids":
        (tmp_path / "gen/baseline/seed42.jsonl").write_text(json.dumps(
            {"id": "t01", "prompt": "poly", "samples": ["x"], "precision": "fp32"}) + "\n")
    if change == "no openai":
        monkeypatch.setenv("OPENAI_API_KEY", KEY)
        monkeypatch.setitem(sys.modules, "openai", None)  # import openai -> ImportError
        (tmp_path / "params.yaml").write_text(yaml.safe_dump(
            {"seeds": [42], "judge": config | {"backend": "openai"}}))
    with pytest.raises(SystemExit) as exit_info:
        run_main(main, argv)
    assert exit_info.value.code == 2
    err = capfd.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1 and KEY not in err
    assert not (tmp_path / "out").exists()
    assert len(api.requests) == {"all fail": 1, "unauthorized": 2}.get(change, 0)


def test_openai_backend(tmp_path, monkeypatch, api, mlflow_db):
    pytest.importorskip("openai")
    config = enable(tmp_path, monkeypatch, api, mlflow_db) | {"backend": "openai", "model": "gpt-x",
                                                   "base_url": url(api) + "/v1"}
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    main(setup(tmp_path, ["poly", "base", "refuse", "prose"], config))
    metrics, records = outputs(tmp_path)
    assert [r["status"] for r in records] == ["ok", "ok", "refused", "unparseable"]
    assert (metrics["overall"]["wins"], metrics["overall"]["losses"]) == (1, 1)
    assert api.requests[0]["path"] == "/v1/chat/completions"
    assert api.requests[0]["body"]["temperature"] == 0
    assert api.requests[0]["headers"]["authorization"] == f"Bearer {KEY}"


@pytest.mark.parametrize("text,parsed", [
    ('{"engagement": "A", "relevance": "B", "creativity": "tie", "naturalness": "A", '
     '"overall": "B"}', True),
    ('```json\n{"engagement": "A", "relevance": "A", "creativity": "A", "naturalness": "A", '
     '"overall": "A"}\n```', True),
    ('{"engagement": "A", "relevance": "A", "creativity": "A", "naturalness": "A", '
     '"overall": "a"}', False),
    ('{"engagement": "A", "relevance": "A", "creativity": "A", "naturalness": "A", '
     '"overall": ["A"]}', False),
    ('{"overall": "A"} {"overall": "B"}', False),
    ("[]", False),
    ("A", False),
    ("", False),
])
def test_parse_answer_is_strict(text, parsed):
    assert (parse_answer(text, CRITERIA) is not None) == parsed


def test_proportion_wilson_and_undefined():
    rate, ci, p = proportion(8, 10)
    assert rate == 0.8 and ci == pytest.approx([0.4902, 0.9433], abs=5e-4)
    z = 1.959963984540054  # Wilson score interval, by its formula
    centre, half = (0.8 + z * z / 20) / (1 + z * z / 10), (
        z / (1 + z * z / 10) * (0.8 * 0.2 / 10 + z * z / 400) ** 0.5)
    assert ci == pytest.approx([centre - half, centre + half], abs=1e-9)
    assert p == pytest.approx(binomtest(8, 10).pvalue)
    assert proportion(0, 0) == (None, None, None)


@pytest.mark.parametrize("section,message", [
    ({"temperature": 0.7}, "'judge.temperature' must be 0"),
    ({"backend": "gemini"}, "'judge.backend' must be one of"),
    ({"max_prompts": 0}, "'judge.max_prompts' must be > 0 or null"),
    ({"api_key": "x"}, "unknown key 'judge.api_key'"),
])
def test_bad_params_name_the_key(section, message):
    with pytest.raises(UserError, match=message):
        load_section(JudgeConfig, {"judge": section}, "judge")
