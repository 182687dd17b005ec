"""Domain `replies`: a casual reply to a chat message (the original design's social-media
replies).

Data: the Chit Chat Challenge conversations in the PyPI wheel `chitchat-dataset`
(SOURCE.md beside this file). Each pair of consecutive turns of a conversation is a
(message -> reply) pair; identical messages (up to case and spaces) are one prompt with all
its replies as references, so a prompt never straddles splits. Chitchat has no likes, so the
engagement proxy is the number of turns the conversation still ran after the reply. Or a user
file (`data.file`, under data/user/replies/) in the original design's schema, one reply per
line: tweet_id, tweet, reply, optional reply_likes (the engagement) and reply_author.

Split: by prompt, stratified by engagement quartile. Prompts are ranked by mean engagement
(ties broken by a seeded shuffle) and cut into four equal strata; `max_prompts` are sampled
and split by the fractions in params within each stratum, so every split holds the strata
in the same proportions. Of the held-out prompts (in a seeded order) the first `dev_size`
are dev, the rest the sealed confirmation split. Few-shot examples are drawn from train.

Checker `semantic` (default): a sample passes if it is well-formed (`well_formed`) and its
cosine similarity to the closest human reply is at least a threshold, calibrated on val,
never on test: the `null_quantile` quantile of the similarity between human replies to
*different* prompts. Checker `heuristic`: well-formed alone (it saturates). The graded
reward is the cosine similarity to the closest reference, clipped to [0, 1]. The similarity
is all-mpnet-base-v2's, not the polychromic reward's all-MiniLM-L6-v2: a diversity reward
cannot buy passes. Equivalence classes (distinct_k): samples more similar than the
`class_quantile` quantile of the same null distribution are one reply.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import math
import random
import re
import sys
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from polychromic.config import UserError, require
from polychromic.domains import (
    Checker,
    Domain,
    NoSettings,
    Record,
    Rubric,
    Verdict,
)
from polychromic.embedding import shared_embedder
from polychromic.userdata import Field, read_rows, user_file

INSTRUCTION = (
    "You are chatting casually with a friend. Reply to their message with one short, "
    "natural reply, as a person would in a chat."
)
N_STRATA = 4
CHECKERS = ("semantic", "heuristic")
USER_SCHEMA = {
    "tweet_id": Field("id", help="the message's id; every reply to it repeats it"),
    "tweet": Field("text", help="the message replied to"),
    "reply": Field("text", help="one human reply"),
    "reply_likes": Field("number", required=False, help="the reply's likes, >= 0 (the "
                         "engagement the split is stratified by); on every line or none"),
    "reply_author": Field("text", required=False, help="kept for the user's reference"),
}


@dataclass
class RepliesData:
    file: str | None = field(default=None, metadata={
        "help": "a user file under data/user/replies/ (JSONL or CSV: tweet_id, tweet, reply, "
                "optional reply_likes, reply_author); null: the embedded chitchat data"})
    seed: int = field(default=42, metadata={"help": "seed of the sampling and the split"})
    max_prompts: int = field(
        default=2000, metadata={"help": "prompts sampled (stratified) before splitting"})
    max_references: int = field(
        default=3, metadata={"help": "human replies kept per prompt (common prompts repeat)"})
    max_prompt_chars: int = field(default=300, metadata={"help": "drop longer messages"})
    max_reply_chars: int = field(default=200, metadata={"help": "drop longer replies"})
    val_fraction: float = field(default=0.1, metadata={"help": "share of prompts in val"})
    test_fraction: float = field(default=0.1, metadata={
        "help": "share of prompts held out: the first dev_size are dev, the rest the sealed "
                "confirmation split"})
    dev_size: int = field(default=30, metadata={"help": "held-out prompts in dev"})

    def check(self, key: str) -> None:
        for name in ("max_prompts", "max_references", "max_prompt_chars", "max_reply_chars",
                     "dev_size"):
            require(getattr(self, name) > 0, f"{key}.{name}", "must be > 0")
        for name in ("val_fraction", "test_fraction"):
            require(0 < getattr(self, name) < 1, f"{key}.{name}", "must be in (0, 1)")
        require(self.val_fraction + self.test_fraction < 1, f"{key}.val_fraction",
                "plus test_fraction must leave something to train on")


@dataclass
class RepliesChecker:
    kind: str = field(default="semantic", metadata={"help": "one of " + ", ".join(CHECKERS)})
    null_quantile: float = field(
        default=0.95, metadata={"help": "semantic: quantile of unrelated-reply similarity "
                                "(on val) used as the pass threshold"})
    class_quantile: float = field(
        default=0.99, metadata={"help": "two samples are one reply (one class of distinct_k) "
                                "when more similar than this quantile of unrelated-reply "
                                "similarity (on val)"})
    calibration_pairs: int = field(default=5000, metadata={"help": "unrelated val pairs drawn"})
    seed: int = field(default=42, metadata={"help": "seed of the calibration pairs"})
    embedding_model: str = field(default="embedded:all-mpnet-base-v2", metadata={
        "help": "sentence-transformers model of the similarity: embedded name or local path "
                "(not the polychromic reward's, so that its diversity cannot buy passes)"})

    def check(self, key: str) -> None:
        require(self.kind in CHECKERS, f"{key}.kind", f"must be one of {CHECKERS}")
        for name in ("null_quantile", "class_quantile"):
            require(0 < getattr(self, name) < 1, f"{key}.{name}", "must be in (0, 1)")
        require(self.calibration_pairs > 0, f"{key}.calibration_pairs", "must be > 0")


# -- data ------------------------------------------------------------------------------
def normalise(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip()


def prompt_id(text: str, source: str = "cc") -> str:
    return f"{source}-" + hashlib.sha1(normalise(text).lower().encode()).hexdigest()[:12]


def conversations_to_pairs(conversations: dict) -> list[dict]:
    """(message, reply, engagement) of each pair of consecutive non-empty turns."""
    pairs = []
    for conversation in conversations.values():
        turns = [normalise(" ".join(u["text"] for u in turn)) for turn in conversation["messages"]]
        for i in range(len(turns) - 1):  # a one-turn conversation has no reply
            if turns[i] and turns[i + 1]:
                pairs.append({"id": prompt_id(turns[i]), "prompt": turns[i],
                              "reply": turns[i + 1], "engagement": len(turns) - (i + 2)})
    return pairs


def user_pairs(path: Path) -> list[dict]:
    """(message, reply, engagement) of each line of a user file, checked line by line."""
    pairs: list[dict] = []
    first: dict[str, tuple[str, int]] = {}  # tweet_id -> (its tweet, first line)
    with_likes: tuple[bool, int] | None = None
    for row in read_rows(path, USER_SCHEMA):
        values, where = row.values, f"{path}:{row.line}"
        tweet_id, tweet = values["tweet_id"], normalise(values["tweet"])
        if tweet_id in first and first[tweet_id][0] != tweet:
            raise UserError(f"{where}: field 'tweet_id' {tweet_id!r} was a different tweet on "
                            f"line {first[tweet_id][1]} (one id, one tweet)")
        first.setdefault(tweet_id, (tweet, row.line))
        likes = values.get("reply_likes")
        if with_likes is None:
            with_likes = (likes is not None, row.line)
        elif with_likes[0] != (likes is not None):
            raise UserError(f"{where}: field 'reply_likes' is " + (
                "missing here but given" if with_likes[0] else "given here but missing") +
                f" on line {with_likes[1]} (on every line or none)")
        if likes is not None and likes < 0:
            raise UserError(f"{where}: field 'reply_likes' must be >= 0, not {likes}")
        # identical tweets under several ids are one prompt, so it never straddles splits
        pairs.append({"id": prompt_id(tweet, "user"), "prompt": tweet,
                      "reply": normalise(values["reply"]), "engagement": likes or 0})
    if len({p["engagement"] for p in pairs}) == 1:
        print(f"warning: {path}: every reply has the same engagement "
              f"({pairs[0]['engagement']}): the engagement strata are arbitrary",
              file=sys.stderr)
    return pairs


def load_chitchat() -> dict:
    spec = importlib.util.find_spec("chitchat_dataset")
    if spec is None or spec.origin is None:
        raise UserError("domain 'replies' needs the package chitchat-dataset "
                        "(pip install -r requirements.txt)")
    return json.loads((Path(spec.origin).parent / "dataset.json").read_text(encoding="utf-8"))


def group_by_prompt(pairs: list[dict], config: RepliesData) -> dict[str, list[dict]]:
    groups: dict[str, list[dict]] = defaultdict(list)
    for pair in pairs:
        if len(pair["prompt"]) <= config.max_prompt_chars and (
                len(pair["reply"]) <= config.max_reply_chars):
            groups[pair["id"]].append(pair)
    return groups


def assign_strata(groups: dict[str, list[dict]], rng: random.Random) -> dict[str, int]:
    """Engagement quartile of each prompt (0 = lowest), equal-sized, ties broken at random."""
    ids = sorted(groups)
    rng.shuffle(ids)
    mean = {i: sum(r["engagement"] for r in groups[i]) / len(groups[i]) for i in ids}
    ranked = sorted(ids, key=lambda i: mean[i])  # stable: the shuffle breaks ties
    return {i: rank * N_STRATA // len(ranked) for rank, i in enumerate(ranked)}


def split_prompts(strata: dict[str, int], config: RepliesData,
                  rng: random.Random) -> dict[str, list[str]]:
    """Sample `max_prompts` prompts and split them, both proportionally within each stratum."""
    by_stratum: dict[int, list[str]] = defaultdict(list)
    for prompt, stratum in sorted(strata.items()):
        by_stratum[stratum].append(prompt)
    keep_share = min(1.0, config.max_prompts / len(strata))
    splits: dict[str, list[str]] = {"train": [], "val": [], "test": []}
    for stratum in sorted(by_stratum):
        prompts = by_stratum[stratum]
        rng.shuffle(prompts)
        prompts = prompts[: round(len(prompts) * keep_share)]
        n_val = round(len(prompts) * config.val_fraction)
        n_test = round(len(prompts) * config.test_fraction)
        splits["val"] += prompts[:n_val]
        splits["test"] += prompts[n_val:n_val + n_test]
        splits["train"] += prompts[n_val + n_test:]
    return splits


def split_records(pairs: list[dict], config: RepliesData) -> dict[str, list[Record]]:
    """Prepared records of train, val and test: one per prompt, its replies as references."""
    rng = random.Random(config.seed)
    groups = group_by_prompt(pairs, config)
    strata = assign_strata(groups, rng)
    out: dict[str, list[Record]] = {}
    for name, prompts in split_prompts(strata, config, rng).items():
        rows = []
        for prompt in prompts:
            kept = groups[prompt][: config.max_references]
            rows.append({"id": prompt, "prompt": kept[0]["prompt"],
                         "references": [p["reply"] for p in kept],
                         "task": {"engagement": sum(p["engagement"] for p in kept) / len(kept),
                                  "stratum": strata[prompt]}})
        rng.shuffle(rows)
        out[name] = rows
    return out


def too_few(splits: dict[str, list[Record]], path: Path, config: RepliesData, key: str) -> None:
    """A user file too small for the split: say so, not which params key it 'leaves empty'."""
    empty = [name for name in ("train", "val", "test") if not splits[name]]
    if empty:
        prompts = sum(len(rows) for rows in splits.values())
        # a stratum of n gives round(n * f) prompts to a split: at least one once n * f > 0.5
        need = N_STRATA * (math.floor(0.5 / min(config.val_fraction, config.test_fraction)) + 1)
        raise UserError(
            f"{path}: {prompts} distinct tweets (within {key}.max_prompt_chars and "
            f"max_reply_chars) leave the {empty[0]} split empty: the split cuts each of "
            f"{N_STRATA} engagement strata by val_fraction {config.val_fraction} and "
            f"test_fraction {config.test_fraction}, so it needs about {need} tweets")


# -- checking --------------------------------------------------------------------------
WORD = re.compile(r"\w+", re.UNICODE)


def well_formed(prompt: str, sample: str) -> bool:
    """The original design's cheap reply check: reply-shaped, not an echo or a loop."""
    words = WORD.findall(sample.lower())
    if not 2 <= len(words) <= 60:
        return False
    if normalise(sample).lower() == normalise(prompt).lower():
        return False
    if len(set(words)) / len(words) < 0.5:  # degenerate repetition
        return False
    return not any(tag in sample for tag in ("<|im_start|>", "<|im_end|>", "assistant\n"))


# The encoder of training's classes (`reward_classes`): the polychromic reward's, not the
# checker's, which evaluation's distinct_classes and semantic_independent use.
REWARD_CLASS_MODEL = "embedded:all-minilm-l6-v2"


def greedy_classes(items, embed, threshold: float) -> list[list[str]]:
    """Per item, each sample's class: the first class whose first member it is at least
    `threshold` similar to under `embed`, else a new one (in sample order)."""
    vectors = embed([s for _, samples in items for s in samples])
    out, offset = [], 0
    for _, samples in items:
        firsts: list[int] = []
        labels = []
        for i in range(offset, offset + len(samples)):
            joined = next((c for c, first in enumerate(firsts)
                           if float(vectors[i] @ vectors[first]) >= threshold), None)
            if joined is None:
                firsts.append(i)
                joined = len(firsts) - 1
            labels.append(f"c{joined}")
        out.append(labels)
        offset += len(samples)
    return out


class ReplyChecker(Checker):
    def __init__(self, config: RepliesChecker, val: list[Record], key: str):
        self.config, self.val, self.key = config, val, key
        self.embed = shared_embedder(config.embedding_model, f"{key}.embedding_model")
        null = self.unrelated_similarity(self.embed)
        self.threshold: float | None = None
        if config.kind == "semantic":
            self.threshold = float(np.quantile(null, config.null_quantile))
        self.class_threshold = float(np.quantile(null, config.class_quantile))
        self.reward_classifier: tuple | None = None  # (encoder, threshold), when first asked

    def unrelated_similarity(self, embed) -> np.ndarray:
        """Cosine similarities under `embed` of `calibration_pairs` pairs of human replies (on
        val) to different prompts: the null distribution that the thresholds are quantiles
        of."""
        rng = np.random.default_rng(self.config.seed)
        replies = [(r["id"], reply) for r in self.val for reply in r["references"]]
        vectors = embed([reply for _, reply in replies])
        i = rng.integers(0, len(replies), self.config.calibration_pairs)
        j = rng.integers(0, len(replies), self.config.calibration_pairs)
        unrelated = np.array([replies[a][0] != replies[b][0] for a, b in zip(i, j, strict=True)])
        if unrelated.sum() < 10:
            raise UserError("val split too small to calibrate the replies checker (need "
                            "replies to several prompts)")
        return np.sum(vectors[i] * vectors[j], axis=1)[unrelated]

    def closest_similarity(self, items) -> list[np.ndarray]:
        """Per item: each sample's cosine similarity to its closest reference (one batch)."""
        texts = [t for record, samples in items for t in [*samples, *record["references"]]]
        vectors, offset, out = self.embed(texts), 0, []
        for record, samples in items:
            n, m = len(samples), len(record["references"])
            sample_vectors = vectors[offset:offset + n]
            reference_vectors = vectors[offset + n:offset + n + m]
            out.append((sample_vectors @ reference_vectors.T).max(axis=1))
            offset += n + m
        return out

    def verdicts(self, items):
        similarity = (self.closest_similarity(items) if self.threshold is not None
                      else [[None] * len(samples) for _, samples in items])
        results = []
        for (record, samples), closest in zip(items, similarity, strict=True):
            row = []
            for sample, value in zip(samples, closest, strict=True):
                shaped = well_formed(record["prompt"], sample)
                close = value is None or float(value) >= self.threshold
                row.append(Verdict(shaped and close, {"well_formed": float(shaped)}))
            results.append(row)
        return results

    def rewards(self, items):
        return [np.clip(closest, 0.0, 1.0).tolist() for closest in self.closest_similarity(items)]

    def classes(self, items):
        """Greedy, in sample order (as NoveltyBench partitions): a sample joins the first class
        whose first member it is at least `class_threshold` similar to, else starts one."""
        return greedy_classes(items, self.embed, self.class_threshold)

    def reward_classes(self, items):
        """The same partition on the reward's encoder (REWARD_CLASS_MODEL), at the same
        quantile of its own null distribution on val."""
        if self.reward_classifier is None:
            embed = shared_embedder(REWARD_CLASS_MODEL, f"{self.key} (reward classes)")
            threshold = float(np.quantile(self.unrelated_similarity(embed),
                                          self.config.class_quantile))
            self.reward_classifier = (embed, threshold)
        return greedy_classes(items, *self.reward_classifier)

    def describe(self):
        return {"kind": self.config.kind, "threshold": self.threshold,
                "class_threshold": self.class_threshold}


JUDGE = Rubric(
    system_prompt=(
        "You compare two candidate replies to the same chat message. Judge each criterion on "
        "its own: engagement (which reply is more likely to draw a response and keep the "
        "conversation going), relevance (which responds more directly to the message), "
        "creativity (which is more original, less generic), naturalness (which reads more like "
        "a fluent human reply), and overall (which you would prefer overall). The order of the "
        "replies is random and carries no meaning. Answer with ONLY a JSON object, no other "
        'text: {"engagement": "A"|"B"|"tie", "relevance": "A"|"B"|"tie", "creativity": '
        '"A"|"B"|"tie", "naturalness": "A"|"B"|"tie", "overall": "A"|"B"|"tie"}'),
    criteria=("engagement", "relevance", "creativity", "naturalness", "overall"),
    user_template=("<message>\n{message}\n</message>\n\n<reply_a>\n{reply_a}\n</reply_a>\n\n"
                   "<reply_b>\n{reply_b}\n</reply_b>"))


class Replies(Domain):
    sections = {"data": RepliesData, "prompt": NoSettings, "checker": RepliesChecker}
    quality_metrics = ("rouge_1", "rouge_2", "rouge_l", "bertscore_f1", "log_perplexity")
    domain_metrics = {"well_formed": (True, "Well-formed")}
    judge_rubric = JUDGE

    def load_splits(self) -> dict[str, list[Record]]:
        config: RepliesData = self.settings["data"]
        if config.file is None:
            splits = split_records(conversations_to_pairs(load_chitchat()), config)
        else:
            path = user_file(config.file, self.name, f"{self.name}.data.file")
            splits = split_records(user_pairs(path), config)
            too_few(splits, path, config, f"{self.name}.data")
        held_out = splits.pop("test")
        return {**splits, "dev": held_out[:config.dev_size],
                "confirmation": held_out[config.dev_size:], "fewshot": splits["train"]}

    def messages(self, record: Record, examples: Sequence[Record] = ()) -> list[dict[str, str]]:
        chat = [{"role": "system", "content": INSTRUCTION}]
        for example in examples:
            chat += [{"role": "user", "content": example["prompt"]},
                     {"role": "assistant", "content": example["references"][0]}]
        return chat + [{"role": "user", "content": record["prompt"]}]

    def checker(self, val: list[Record]) -> Checker:
        return ReplyChecker(self.settings["checker"], val, f"{self.name}.checker")


DOMAIN = Replies
