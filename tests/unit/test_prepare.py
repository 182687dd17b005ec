"""The replies split: grouped by prompt, stratified by engagement quartile, deterministic."""

import random
from collections import Counter

import pytest

from polychromic.domains.replies import RepliesData, conversations_to_pairs, prompt_id
from polychromic.domains.replies import split_records as split_replies


def synthetic_records(n_prompts=400, seed=0):
    rng = random.Random(seed)
    records = []
    for p in range(n_prompts):
        for r in range(rng.randint(1, 4)):  # several replies share one prompt
            records.append({"id": f"p{p}", "prompt": f"prompt {p}", "reply": f"reply {p}.{r}",
                            "engagement": rng.randint(0, 100)})
    return records


def config(**overrides):
    return RepliesData(**{"seed": 7, "max_prompts": 10_000, "max_references": 10,
                          **overrides})


def prepare(records, data):
    """The split as (prompt id, reference, stratum, engagement) rows, one per reference."""
    return {name: [{"id": r["id"], "reply": ref, "stratum": r["task"]["stratum"],
                    "engagement": r["task"]["engagement"]} for r in rows
                   for ref in r["references"]]
            for name, rows in split_replies(records, data).items()}


def test_no_prompt_in_two_splits_and_nothing_lost():
    records = synthetic_records()
    splits = prepare(records, config())
    ids = {name: {r["id"] for r in rows} for name, rows in splits.items()}
    assert not ids["train"] & ids["val"]
    assert not ids["train"] & ids["test"]
    assert not ids["val"] & ids["test"]
    assert sum(len(rows) for rows in splits.values()) == len(records)


def test_split_fractions_and_strata_preserved():
    splits = prepare(synthetic_records(), config())
    prompts = {name: {r["id"]: r["stratum"] for r in rows} for name, rows in splits.items()}
    total = sum(len(p) for p in prompts.values())
    assert len(prompts["val"]) / total == pytest.approx(0.1, abs=0.01)
    assert len(prompts["test"]) / total == pytest.approx(0.1, abs=0.01)
    for name, by_prompt in prompts.items():
        counts = Counter(by_prompt.values())
        assert sorted(counts) == [0, 1, 2, 3]
        # each quartile holds a quarter of every split's prompts (+-1 prompt of rounding)
        for stratum in range(4):
            assert abs(counts[stratum] - len(by_prompt) / 4) <= 1.5, (name, counts)


def test_strata_are_engagement_quartiles():
    records = synthetic_records()
    engagement = {}
    for r in records:
        engagement.setdefault(r["id"], []).append(r["engagement"])
    splits = prepare(records, config())
    rows = [r for rows in splits.values() for r in rows]
    by_stratum = {}
    for r in rows:
        mean = sum(engagement[r["id"]]) / len(engagement[r["id"]])
        assert r["engagement"] == pytest.approx(mean)  # the record keeps its prompt's mean
        by_stratum.setdefault(r["stratum"], []).append(mean)
    for low, high in [(0, 1), (1, 2), (2, 3)]:
        assert max(by_stratum[low]) <= min(by_stratum[high])


def test_deterministic_under_seed_and_seed_matters():
    records = synthetic_records()
    assert prepare(records, config()) == prepare(records, config())
    assert prepare(records, config()) != prepare(records, config(seed=8))


def test_max_prompts_samples_whole_prompts_per_stratum():
    splits = prepare(synthetic_records(), config(max_prompts=100, max_references=2))
    prompts = {r["id"] for rows in splits.values() for r in rows}
    assert len(prompts) == 100
    per_prompt = Counter(r["id"] for rows in splits.values() for r in rows)
    assert max(per_prompt.values()) <= 2


def test_length_filters():
    records = synthetic_records(40) + [{"id": "long", "prompt": "x" * 500, "reply": "ok",
                                        "engagement": 1}]
    splits = prepare(records, config(max_prompt_chars=100))
    assert "long" not in {r["id"] for rows in splits.values() for r in rows}


def test_chitchat_conversion_drops_one_turn_conversations():
    def turn(sender, *texts):
        return [{"text": t, "sender": sender} for t in texts]

    conversations = {
        "one": {"messages": [turn("a", "hello", "anyone?")]},
        "three": {"messages": [turn("a", "hi"), turn("b", "hey", "what's up"), turn("a", "Hi")]},
    }
    records = conversations_to_pairs(conversations)
    assert [(r["prompt"], r["reply"]) for r in records] == [("hi", "hey what's up"),
                                                            ("hey what's up", "Hi")]
    # engagement proxy: turns the conversation still ran after the reply
    assert [r["engagement"] for r in records] == [1, 0]
    # identical prompt texts (up to case and spaces) share one prompt id
    assert prompt_id("Hi  there") == prompt_id("hi there") != prompt_id("hi")
