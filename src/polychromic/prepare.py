"""Stage `prepare`: a domain's raw records -> {train,val,test}.jsonl.

The split is by prompt (`tweet_id`): every record of one prompt lands in one split. It is
stratified by engagement quartile: prompts are ranked by mean engagement (ties broken by a
seeded shuffle), cut into four equal strata, and each stratum is split by the fractions in
params, so every split holds the strata in the same proportions. Deterministic under
`data.seed`.
"""

from __future__ import annotations

import argparse
import random
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from polychromic.config import help_text, load_section, read_params, require, run_main
from polychromic.domains import get_domain
from polychromic.io import atomic_path, write_jsonl

SPLITS = ("train", "val", "test")
N_STRATA = 4


@dataclass
class DataConfig:
    seed: int = field(default=42, metadata={"help": "seed of the sampling and the split"})
    max_prompts: int = field(
        default=2000, metadata={"help": "prompts sampled (stratified) before splitting"})
    max_replies_per_prompt: int = field(
        default=3, metadata={"help": "cap on records kept per prompt (common prompts repeat)"})
    max_prompt_chars: int = field(default=300, metadata={"help": "drop longer prompts"})
    max_reply_chars: int = field(default=200, metadata={"help": "drop longer replies"})
    val_fraction: float = field(default=0.1, metadata={"help": "share of prompts in val"})
    test_fraction: float = field(default=0.1, metadata={"help": "share of prompts in test"})

    def check(self, key: str) -> None:
        for name in ("max_prompts", "max_replies_per_prompt", "max_prompt_chars",
                     "max_reply_chars"):
            require(getattr(self, name) > 0, f"{key}.{name}", "must be > 0")
        for name in ("val_fraction", "test_fraction"):
            require(0 < getattr(self, name) < 1, f"{key}.{name}", "must be in (0, 1)")
        require(self.val_fraction + self.test_fraction < 1, f"{key}.val_fraction",
                "plus test_fraction must leave something to train on")


def group_by_prompt(records: list[dict], config: DataConfig) -> dict[str, list[dict]]:
    groups: dict[str, list[dict]] = defaultdict(list)
    for record in records:
        if len(record["tweet"]) > config.max_prompt_chars:
            continue
        if len(record["reply"]) > config.max_reply_chars:
            continue
        groups[record["tweet_id"]].append(record)
    return groups


def assign_strata(groups: dict[str, list[dict]], rng: random.Random) -> dict[str, int]:
    """Engagement quartile of each prompt (0 = lowest), equal-sized, ties broken at random."""
    ids = sorted(groups)
    rng.shuffle(ids)
    mean = {i: sum(r["engagement"] for r in groups[i]) / len(groups[i]) for i in ids}
    ranked = sorted(ids, key=lambda i: mean[i])  # stable: the shuffle breaks ties
    return {i: rank * N_STRATA // len(ranked) for rank, i in enumerate(ranked)}


def split_prompts(strata: dict[str, int], config: DataConfig,
                  rng: random.Random) -> dict[str, list[str]]:
    """Sample `max_prompts` prompts and split them, both proportionally within each stratum."""
    by_stratum: dict[int, list[str]] = defaultdict(list)
    for prompt, stratum in sorted(strata.items()):
        by_stratum[stratum].append(prompt)
    keep_share = min(1.0, config.max_prompts / len(strata))
    splits: dict[str, list[str]] = {name: [] for name in SPLITS}
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


def prepare(records: list[dict], config: DataConfig) -> dict[str, list[dict]]:
    rng = random.Random(config.seed)
    groups = group_by_prompt(records, config)
    strata = assign_strata(groups, rng)
    out: dict[str, list[dict]] = {}
    for name, prompts in split_prompts(strata, config, rng).items():
        rows = []
        for prompt in prompts:
            for record in groups[prompt][: config.max_replies_per_prompt]:
                rows.append({**record, "stratum": strata[prompt]})
        rng.shuffle(rows)
        out[name] = rows
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__ + "\nparams.yaml data:\n"
                                     + help_text(DataConfig),
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--domain", required=True)
    parser.add_argument("--out", required=True, help="directory for {train,val,test}.jsonl")
    args = parser.parse_args(argv)
    config = load_section(DataConfig, read_params(), "data")
    domain = get_domain(args.domain)

    splits = prepare(domain.load_raw(), config)
    for name in SPLITS:
        require(len(splits[name]) > 0, "data.max_prompts", f"leaves the {name} split empty")
    with atomic_path(args.out) as tmp:
        tmp.mkdir()
        for name, rows in splits.items():
            write_jsonl(Path(tmp) / f"{name}.jsonl", rows)
    sizes = ", ".join(f"{name} {len(rows)}" for name, rows in splits.items())
    print(f"{args.domain}: {sizes} records -> {args.out}")


if __name__ == "__main__":
    run_main(main)
