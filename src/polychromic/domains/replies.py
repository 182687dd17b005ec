"""Domain `replies`: a casual reply to a chat message (the seed's social-media replies).

Embedded data: the Chit Chat Challenge conversations in the PyPI wheel `chitchat-dataset`.
Each pair of consecutive turns in a conversation of two or more turns is one record
(turn -> reply). Identical prompt texts share one `tweet_id`, so a prompt and all its
replies land in one split.

Engagement proxy: chitchat has no likes, so `engagement` is the number of turns the
conversation still ran after the reply (how much conversation the reply kept going).
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

from polychromic.domains import Domain

INSTRUCTION = (
    "You are chatting casually with a friend. Reply to their message with one short, "
    "natural reply, as a person would in a chat."
)


def normalise(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip()


def prompt_id(text: str) -> str:
    return "cc-" + hashlib.sha1(normalise(text).lower().encode()).hexdigest()[:12]


def conversations_to_records(conversations: dict) -> list[dict]:
    records = []
    for conversation in conversations.values():
        turns = [normalise(" ".join(u["text"] for u in turn)) for turn in conversation["messages"]]
        senders = [turn[0]["sender"] if turn else "" for turn in conversation["messages"]]
        if len(turns) < 2:  # a one-turn conversation has no reply
            continue
        for i in range(len(turns) - 1):
            if not turns[i] or not turns[i + 1]:
                continue
            records.append({
                "tweet_id": prompt_id(turns[i]),
                "tweet": turns[i],
                "reply": turns[i + 1],
                "reply_author": senders[i + 1],
                "engagement": len(turns) - (i + 2),
            })
    return records


def load_chitchat() -> list[dict]:
    import importlib.util

    spec = importlib.util.find_spec("chitchat_dataset")
    if spec is None or spec.origin is None:
        from polychromic.config import UserError

        raise UserError("domain 'replies' needs the package chitchat-dataset "
                        "(pip install -r requirements.txt)")
    path = Path(spec.origin).parent / "dataset.json"
    return conversations_to_records(json.loads(path.read_text(encoding="utf-8")))


WORD = re.compile(r"\w+", re.UNICODE)


def heuristic_check(prompt: str, sample: str) -> bool:
    """The design document's cheap reply checker: a reply-shaped text, not an echo or a loop."""
    words = WORD.findall(sample.lower())
    if not 2 <= len(words) <= 60:
        return False
    if normalise(sample).lower() == normalise(prompt).lower():
        return False
    if len(set(words)) / len(words) < 0.5:  # degenerate repetition
        return False
    return not any(tag in sample for tag in ("<|im_start|>", "<|im_end|>", "assistant\n"))


DOMAIN = Domain(
    name="replies",
    instruction=INSTRUCTION,
    load_raw=load_chitchat,
    heuristic_check=heuristic_check,
)
