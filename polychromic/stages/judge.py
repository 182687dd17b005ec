"""Stage `judge` (off by default): an LLM compares system a's and system b's first sample.

The rubric is the domain's (`Domain.judge_rubric`); a domain without one (code: its samples
are checked by running them) writes the judge as disabled. For every (seed, prompt id) the
judge sees the prompt and the two answers, one as "A" and one as "B"; which system gets slot
A is drawn by a seeded RNG per pair (reproducible, independent of file order) and recorded.
It answers one JSON object naming "A", "B" or "tie" for each of the rubric's criteria (the
last is "overall"). Parsing is strict: exactly that object (optionally in a ```json fence),
all the criteria, no other keys; anything else is `unparseable`, a refusal is `refused`, an
API failure after the client's retries is `error`. None of these count as ties.

Definitions (metrics JSON):
- n_requests: pairs judged (each one request, made or served from the cache); cache_hits: of
  those, answered from `judge.cache_dir` without a call.
- wins / losses / ties: per criterion, from system a's point of view, over `ok` answers.
- win_rate = wins / (wins + losses), ties excluded; wilson_ci95: Wilson score 95% interval
  of that proportion; sign_test_p: two-sided binomial test of wins out of wins + losses
  against 0.5 (scipy.stats.binomtest).
- position_bias: among `ok` answers whose overall preference is not a tie, how often the
  reply in the first slot (A) won (first_slot_rate), with a two-sided binomial p against 0.5.
Undefined values (no decided pair) are null, never 0.

Temperature: the OpenAI-compatible backend is sent temperature 0. The Anthropic API version
that the installed SDK speaks (anthropic >= 2: 2026-10-21) has no sampling parameters and
answers 400 to any, so none is sent there; the cache is what makes reruns reproducible.

The cache maps sha256(canonical JSON of the request as sent: backend, model, system prompt,
messages, max_tokens, temperature where sent) to the answer, so a rerun makes no calls. The
API key is read from the environment, passed to the client, and written nowhere (answers
are redacted too).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import re
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

from scipy.stats import binomtest

from polychromic.config import UserError, load_section, read_params, run_main, stage_help
from polychromic.domains import Rubric, domain_class
from polychromic.io import read_jsonl, write_json, write_jsonl
from polychromic.settings import KEY_ENV, JudgeConfig, listed

CHOICES = ("A", "B", "tie")
GENERATION_FIELDS = {"id": str, "prompt": str, "samples": list, "precision": str}
DISABLED_REASON = "judge.enabled is false"  # short: `dvc metrics show` prints it
NO_RUBRIC = "the domain has no judge rubric"
FENCE = re.compile(r"\A```(?:json)?[ \t]*\n(.*?)\n?```\Z", re.S)
REFUSAL = re.compile(r"\b(I can(no|')t|I'm (not able|unable)|I am (not able|unable)|I won't|"
                     r"I will not|I (must|have to) decline)\b", re.I)
Caller = Callable[[dict], tuple[str, str | None]]



def a_goes_first(config_seed: int, seed: int, prompt_id: str) -> bool:
    # Seeded per pair (string seeds hash stably), so the order ignores file order and reruns.
    return random.Random(f"{config_seed}:{seed}:{prompt_id}").random() < 0.5


def build_request(config: JudgeConfig, rubric: Rubric, message: str, reply_a: str,
                  reply_b: str) -> dict:
    user = rubric.user_template.format(message=message, reply_a=reply_a, reply_b=reply_b)
    request = {"backend": config.backend, "model": config.model, "system": rubric.system_prompt,
               "messages": [{"role": "user", "content": user}], "max_tokens": config.max_tokens}
    if config.backend == "openai":  # Anthropic API 2026-10-21 rejects sampling parameters
        request["temperature"] = config.temperature
    return request


def request_hash(request: dict) -> str:
    canonical = json.dumps(request, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def parse_answer(text: str, criteria: tuple[str, ...]) -> dict[str, str] | None:
    """The verdict per criterion, or None unless `text` is exactly the requested object."""
    body = text.strip()
    fenced = FENCE.match(body)
    try:
        answer = json.loads(fenced.group(1) if fenced else body)
    except json.JSONDecodeError:
        return None
    if not isinstance(answer, dict) or set(answer) != set(criteria):
        return None
    return answer if all(isinstance(v, str) and v in CHOICES for v in answer.values()) else None


def classify(text: str, stop_reason: str | None,
             criteria: tuple[str, ...]) -> tuple[str, dict[str, str] | None]:
    if stop_reason == "refusal":
        return "refused", None
    answer = parse_answer(text, criteria)
    if answer is not None:
        return "ok", answer
    return ("refused" if "{" not in text and REFUSAL.search(text) else "unparseable"), None


class RequestFailed(Exception):
    """One judge request failed after the client's retries (recorded as status `error`)."""


def make_caller(config: JudgeConfig, api_key: str) -> Caller:
    """A function request -> (answer text, stop reason) on the configured backend."""
    if config.backend == "anthropic":
        import anthropic as sdk

        client = sdk.Anthropic(api_key=api_key, base_url=config.base_url,
                               max_retries=config.max_retries, timeout=config.timeout_s)

        def call(request: dict) -> tuple[str, str | None]:
            response = client.messages.create(
                model=request["model"], max_tokens=request["max_tokens"],
                system=request["system"], messages=request["messages"])
            text = "".join(b.text for b in response.content if b.type == "text")
            return text, response.stop_reason
    else:
        try:
            import openai as sdk
        except ImportError:
            raise UserError("judge.backend is 'openai' but the `openai` package is not "
                            "installed (pip install openai)") from None
        client = sdk.OpenAI(api_key=api_key, base_url=config.base_url,
                            max_retries=config.max_retries, timeout=config.timeout_s)

        def call(request: dict) -> tuple[str, str | None]:
            response = client.chat.completions.create(
                model=request["model"], max_tokens=request["max_tokens"],
                temperature=request["temperature"],
                messages=[{"role": "system", "content": request["system"]}, *request["messages"]])
            choice = response.choices[0]
            refused = choice.message.refusal or choice.finish_reason == "content_filter"
            text = choice.message.content or choice.message.refusal or ""
            return text, "refusal" if refused else choice.finish_reason

    def redact(text: str) -> str:  # a misbehaving endpoint must not get the key into outputs
        return text.replace(api_key, "[redacted]")

    fatal = (sdk.AuthenticationError, sdk.PermissionDeniedError, sdk.NotFoundError)

    def guarded(request: dict) -> tuple[str, str | None]:
        try:
            text, stop_reason = call(request)
        except fatal as err:  # key, permission or model name: every request would fail alike
            raise UserError(redact(f"the judge API rejected the request ({type(err).__name__}: "
                                   f"{str(err)[:300]})")) from None
        except sdk.APIError as err:
            raise RequestFailed(redact(f"{type(err).__name__}: {str(err)[:300]}")) from None
        return redact(text), stop_reason
    return guarded


def read_generations(path: Path) -> dict[str, dict]:
    rows: dict[str, dict] = {}
    for number, row in enumerate(read_jsonl(path, GENERATION_FIELDS), start=1):
        if not row["samples"] or not all(isinstance(s, str) for s in row["samples"]):
            raise UserError(f"{path}:{number}: 'samples' must be a non-empty list of strings")
        if row["id"] in rows:
            raise UserError(f"{path}:{number}: duplicate id {row['id']!r}")
        rows[row["id"]] = row
    return rows


def load_pairs(dir_a: str, dir_b: str, seeds: list[int],
               max_prompts: int | None) -> list[tuple[int, dict, dict]]:
    pairs = []
    for seed in seeds:
        path_a, path_b = Path(dir_a, f"seed{seed}.jsonl"), Path(dir_b, f"seed{seed}.jsonl")
        rows_a, rows_b = read_generations(path_a), read_generations(path_b)
        if set(rows_a) != set(rows_b):
            differ = sorted(set(rows_a) ^ set(rows_b))
            raise UserError(f"{path_a} and {path_b} hold different ids (e.g. {differ[:3]})")
        for prompt_id in list(rows_a)[:max_prompts]:
            if rows_a[prompt_id]["prompt"] != rows_b[prompt_id]["prompt"]:
                raise UserError(f"{path_a} and {path_b}: id {prompt_id!r} has different "
                                "prompts")
            pairs.append((seed, rows_a[prompt_id], rows_b[prompt_id]))
    return pairs


def cached_call(request: dict, key: str, call: Caller,
                cache_dir: Path) -> tuple[str, str | None, bool]:
    """(text, stop reason, cache hit); only answers are cached, so failures are retried."""
    path = cache_dir / f"{key}.json"
    if path.is_file():
        try:
            entry = json.loads(path.read_text(encoding="utf-8"))
            return entry["text"], entry["stop_reason"], True
        except (json.JSONDecodeError, KeyError, TypeError):
            raise UserError(f"{path}: corrupt judge cache entry (delete it)") from None
    text, stop_reason = call(request)
    write_json(path, {"text": text, "stop_reason": stop_reason, "request": request})
    return text, stop_reason, False


def judge_pairs(pairs: list[tuple[int, dict, dict]], config: JudgeConfig, rubric: Rubric,
                call: Caller, names: tuple[str, str]) -> tuple[list[dict], int]:
    """One judgement record per pair, and the number of cache hits."""
    from tqdm import tqdm

    records, hits = [], 0
    # on a terminal only (disable=None): a failed request's one-line error stays one line
    for seed, row_a, row_b in tqdm(pairs, desc="judge", unit="pair", disable=None):
        first = a_goes_first(config.seed, seed, row_a["id"])
        slots = (row_a, row_b) if first else (row_b, row_a)
        request = build_request(config, rubric, row_a["prompt"], slots[0]["samples"][0],
                                slots[1]["samples"][0])
        key = request_hash(request)
        record = {"seed": seed, "id": row_a["id"],
                  "a_system_position": "A" if first else "B", "request_hash": key}
        try:
            text, stop_reason, hit = cached_call(request, key, call, Path(config.cache_dir))
        except RequestFailed as err:  # counted as `error`, never as a tie; the run goes on
            records.append({**record, "status": "error", "error": str(err)})
            continue
        hits += hit
        status, answer = classify(text, stop_reason, rubric.criteria)
        slot_names = names if first else names[::-1]
        if answer is not None:
            record["winners"] = {c: {"A": slot_names[0], "B": slot_names[1]}.get(v, "tie")
                                 for c, v in answer.items()}
        records.append({**record, "status": status, "raw": text[:500]})
    return records, hits


def proportion(successes: int, trials: int) -> tuple[float | None, list[float] | None,
                                                       float | None]:
    """(rate, Wilson 95% interval, two-sided binomial p against 0.5); None when trials == 0."""
    if trials == 0:
        return None, None, None
    test = binomtest(successes, trials, 0.5)
    ci = test.proportion_ci(0.95, method="wilson")
    return successes / trials, [float(ci.low), float(ci.high)], float(test.pvalue)


def summarize(records: list[dict], names: tuple[str, str], rubric: Rubric) -> dict:
    ok = [r for r in records if r["status"] == "ok"]
    criteria = {}
    for criterion in rubric.criteria:
        winners = [r["winners"][criterion] for r in ok]
        wins, losses = winners.count(names[0]), winners.count(names[1])
        rate, ci, p = proportion(wins, wins + losses)
        criteria[criterion] = {"wins": wins, "losses": losses, "ties": winners.count("tie"),
                               "win_rate": rate, "wilson_ci95": ci, "sign_test_p": p}
    decided = [r for r in ok if r["winners"]["overall"] != "tie"]
    first = sum((r["winners"]["overall"] == names[0]) == (r["a_system_position"] == "A")
                for r in decided)
    rate, _, p = proportion(first, len(decided))
    status = [r["status"] for r in records]
    return {"n_requests": len(records), "ok": len(ok), "refused": status.count("refused"),
            "unparseable": status.count("unparseable"), "errors": status.count("error"),
            "overall": criteria["overall"], "criteria": criteria,
            "position_bias": {"first_slot_wins": first, "decided": len(decided),
                              "first_slot_rate": rate, "binomial_p": p}}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=stage_help(__doc__, (JudgeConfig, "judge")),
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--domain", required=True)
    parser.add_argument("--a", required=True, help="system a's generations dir (seed<S>.jsonl)")
    parser.add_argument("--b", required=True, help="system b's generations dir (seed<S>.jsonl)")
    parser.add_argument("--out", required=True, help="metrics JSON to write")
    parser.add_argument("--judgements", required=True, help="per-pair judgements JSONL to write")
    args = parser.parse_args(argv)
    params = read_params()
    config = load_section(JudgeConfig, params, "judge")
    rubric = domain_class(args.domain).judge_rubric
    names = (Path(args.a).name, Path(args.b).name)
    if names[0] == names[1]:  # winners are recorded by system name
        raise UserError(f"--a and --b name the same system {names[0]!r} (the directory names)")
    if not config.enabled or rubric is None:
        reason = NO_RUBRIC if rubric is None else DISABLED_REASON
        write_jsonl(args.judgements, [])
        write_json(args.out, {"enabled": False, "reason": reason})
        print(f"{args.domain} judge: disabled ({reason}) -> {args.out}")
        return
    api_key = os.environ.get(KEY_ENV[config.backend])
    if not api_key:
        raise UserError(f"judge.enabled is true but {KEY_ENV[config.backend]} is not set")
    seeds = listed(params, "seeds")
    pairs = load_pairs(args.a, args.b, seeds, config.max_prompts)
    records, hits = judge_pairs(pairs, config, rubric, make_caller(config, api_key), names)
    summary = summarize(records, names, rubric)
    if records and summary["errors"] == len(records):  # nothing judged: fail, record nothing
        raise UserError(f"all {len(records)} judge requests failed ({records[0]['error']})")
    metrics = {"enabled": True, "backend": config.backend, "model": config.model,
               "a": names[0], "b": names[1], "seeds": seeds, **summary, "cache_hits": hits,
               "precision": {name: sorted({pair[side]["precision"] for pair in pairs})
                             for side, name in ((1, names[0]), (2, names[1]))}}

    from polychromic import tracking

    with tracking.mlflow_run("judge", args.domain, f"{names[0]}_vs_{names[1]}",
                             {"judge": asdict(config), "seeds": seeds}):
        # log_metrics keeps numbers only, so the intervals go in as their two ends
        bounds = {c: dict(zip(("low", "high"), s["wilson_ci95"] or (), strict=False))
                  for c, s in summary["criteria"].items()}
        tracking.log_metrics(metrics | {"wilson_ci95": bounds})
    write_jsonl(args.judgements, records)
    write_json(args.out, metrics)
    overall = summary["overall"]
    rate, p = (("n/a" if v is None else f"{v:.3f}") for v in (overall["win_rate"],
                                                             overall["sign_test_p"]))
    print(f"{args.domain} judge {names[0]} vs {names[1]}: overall {overall['wins']}-"
          f"{overall['losses']}-{overall['ties']} (win rate {rate}, sign p {p}), "
          f"{summary['ok']}/{len(records)} ok, {hits} cached -> {args.out}")


if __name__ == "__main__":
    run_main(main)
