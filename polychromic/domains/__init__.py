"""Task domains: what differs between tasks, behind one contract that every stage uses.

A domain is the package `polychromic.domains.<name>`, found by its name, whose `DOMAIN` is a
`Domain` subclass; its settings are the params section `<name>` with the subsections
`data`, `prompt`, `sampling`, `checker`, `primary` (its pre-registered primary hypotheses,
read by compare) and `train` (the keys of the `train` section that this domain trains with
differently, e.g. fewer steps for fewer examples). Adding a domain is one package plus one
params section (and its name in `domains`): no stage changes (docs/domains.md). A domain
owns
- its data: `load_splits()` gives the prepared records of train, val, dev (the held-out
  prompts that results are developed on), fewshot (the pool that few-shot examples are drawn
  from) and confirmation (held-out prompts that no stage writes or reads: the sealed split of
  docs/protocol.md, evaluated once);
- how a prompt is put to the model: `messages(record, examples)` (zero-shot: no examples),
  `assistant_prefix(record)`, text that the answer starts with and the model continues, and
  `target(record, reference)`, the continuation a reference output becomes (training target,
  few-shot answer, reference perplexity);
- its generation settings (`sampling`) and stop strings (`stop`);
- its checker (`checker(val)`): `check(record, sample)` passes or fails a sample (pass@k),
  `reward(record, sample)` grades it in [0, 1] (the polychromic set objective's R),
  `classes(items)` labels each sample with its equivalence class (distinct answers);
- which quality metrics mean something for it, its own per-sample metrics, and its judge
  rubric (or none).

A prepared record (data/processed/<domain>/<split>.jsonl, one file per split of SPLITS) is
the same for every domain:
    {"id": str, "prompt": str, "references": [str, ...], "task": {...}}
`task` carries what the domain's checker needs (tests, an entry point, an engagement score).
"""

from __future__ import annotations

import importlib
import random
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from polychromic.config import UserError, load_section, require
from polychromic.settings import PrimaryHypotheses

RECORD_FIELDS = {"id": str, "prompt": str, "references": list, "task": dict}
SPLITS = ("train", "val", "dev", "fewshot")  # what prepare writes
HELD_OUT = ("dev", "confirmation")  # disjoint from train, val and fewshot
SECTIONS = ("data", "prompt", "sampling", "checker", "primary", "train")
PARSED = SECTIONS[:5]  # `train` is read by the train stage, against the train section
Record = dict[str, Any]


@dataclass
class NoSettings:
    """A section that a domain has nothing to set in (write it as `{}`)."""


@dataclass(kw_only=True)
class Sampling:
    """A domain's generation settings (`<domain>.sampling`): every key is the domain's own
    choice, so none has a default."""
    prompts: int | None = field(metadata={
        "help": "prompts sampled from the split answered (its first ones; null: all of it)"})
    max_new_tokens: int = field(metadata={
        "help": "tokens per sample at most (also the polychromic training samples' length "
                "unless polychromic.max_new_tokens sets one)"})
    temperature: float = field(metadata={"help": "sampling temperature"})
    top_k: int = field(metadata={"help": "sample from the k most likely tokens (0: all; 50 "
                                 "is transformers' default)"})
    top_p: float = field(metadata={"help": "nucleus sampling mass"})

    def check(self, key: str) -> None:
        require(self.prompts is None or self.prompts > 0, f"{key}.prompts",
                "must be > 0 or null (all)")
        require(self.max_new_tokens > 0, f"{key}.max_new_tokens", "must be > 0")
        require(self.top_k >= 0, f"{key}.top_k", "must be >= 0")
        require(self.temperature > 0, f"{key}.temperature", "must be > 0")
        require(0 < self.top_p <= 1, f"{key}.top_p", "must be in (0, 1]")


@dataclass(frozen=True)
class Verdict:
    """One sample's check: pass or not, and the domain's per-sample metric values."""
    passed: bool
    values: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class Rubric:
    """An LLM judge's instructions for comparing two answers to one prompt."""
    system_prompt: str
    criteria: tuple[str, ...]  # the last one is "overall"
    user_template: str  # with {message}, {reply_a}, {reply_b}


class Checker:
    """Judges a domain's samples. A context manager: it may hold models or processes."""

    def verdicts(self, items: Sequence[tuple[Record, Sequence[str]]]) -> list[list[Verdict]]:
        """For each (record, its samples): one verdict per sample. Batched: the checker may
        run the samples in parallel."""
        raise NotImplementedError

    def rewards(self, items: Sequence[tuple[Record, Sequence[str]]]) -> list[list[float]]:
        """For each (record, its samples): each sample's graded quality in [0, 1]."""
        raise NotImplementedError

    def classes(self, items: Sequence[tuple[Record, Sequence[str]]]) -> list[list[str]]:
        """For each (record, its samples): each sample's equivalence class, a label that two
        samples share when they give the same answer (NoveltyBench's distinct_k counts the
        labels). The default: the same text up to case and spacing; a domain's checker says
        what "the same" means for it (behaviour, final answer, meaning)."""
        return [[" ".join(s.lower().split()) for s in samples] for _, samples in items]

    def reward_classes(self, items: Sequence[tuple[Record, Sequence[str]]]) -> list[list[str]]:
        """The classes a training objective is rewarded with: the evaluation's own where
        they are an exact notion of sameness (behaviour, final answer); a checker whose
        classes come from a learned encoder uses another encoder here, so that evaluation's
        `distinct_classes` stays a measure the objective does not see."""
        return self.classes(items)

    def check(self, record: Record, sample: str) -> bool:
        return self.verdicts([(record, [sample])])[0][0].passed

    def reward(self, record: Record, sample: str) -> float:
        return self.rewards([(record, [sample])])[0][0]

    def describe(self) -> dict[str, Any]:
        """What the metrics file records about the checker (e.g. a calibrated threshold)."""
        return {}

    def close(self) -> None:
        pass

    def __enter__(self) -> Checker:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class Domain:
    sections: ClassVar[dict[str, type]]
    """The dataclass of the domain's own params subsections: `data`, `prompt`, `checker`
    (`sampling` and `primary` have one schema for every domain: `schemas()`)."""
    quality_metrics: ClassVar[tuple[str, ...]]
    """Which of metrics.QUALITY are meaningful here (the others are not computed)."""
    domain_metrics: ClassVar[dict[str, tuple[bool, str]]] = {}
    """Per-sample values of Verdict.values, averaged per prompt: name -> (higher is
    better, label)."""
    stop: ClassVar[tuple[str, ...]] = ()
    """Strings that end a sample (not part of it)."""
    judge_rubric: ClassVar[Rubric | None] = None

    @classmethod
    def schemas(cls) -> dict[str, type]:
        """The dataclass of each parsed subsection (PARSED), the shared ones included."""
        return {**cls.sections, "sampling": Sampling, "primary": PrimaryHypotheses}

    def __init__(self, name: str, settings: dict[str, Any]):
        self.name = name
        self.settings = settings

    @property
    def sampling(self) -> Sampling:
        return self.settings["sampling"]

    def load_splits(self) -> dict[str, list[Record]]:
        """train, val, dev, fewshot and confirmation (empty where the data leave none)."""
        raise NotImplementedError

    def messages(self, record: Record, examples: Sequence[Record] = ()) -> list[dict[str, str]]:
        raise NotImplementedError

    def assistant_prefix(self, record: Record) -> str:
        return ""

    def target(self, record: Record, reference: str) -> str:
        return reference

    def checker(self, val: list[Record]) -> Checker:
        raise NotImplementedError


def few_shot_examples(pool: list[Record], count: int, seed: int) -> list[Record]:
    """The few-shot system's worked examples: `count` drawn from the pool with `seed`."""
    rng = random.Random(seed)
    return [pool[i] for i in rng.sample(range(len(pool)), min(count, len(pool)))]


def known_domains() -> list[str]:
    return sorted(p.name for p in Path(__file__).parent.iterdir()
                  if (p / "__init__.py").is_file())


def domain_class(name: str) -> type[Domain]:
    """The domain's class (its metric lists and rubric), without reading its settings."""
    if not re.fullmatch(r"[a-z][a-z0-9_]*", name) or name not in known_domains():
        raise UserError(f"params.yaml: 'domains' names unknown domain {name!r} "
                        f"(known: {', '.join(known_domains())})")
    module = importlib.import_module(f"polychromic.domains.{name}")
    return module.DOMAIN


def load_domain(name: str, params: dict[str, Any]) -> Domain:
    """The domain with its settings from params section `name`."""
    cls = domain_class(name)
    section = params.get(name)
    if not isinstance(section, dict):
        raise UserError(f"params.yaml: missing section '{name}' (the {name} domain's settings: "
                        f"{', '.join(SECTIONS)})")
    unknown = sorted(set(section) - set(SECTIONS))
    require(not unknown, f"{name}.{unknown[0] if unknown else ''}",
            f"is not a domain section (known: {', '.join(SECTIONS)})")
    require(isinstance(section.get("train"), dict), f"{name}.train",
            "must be a mapping of train keys this domain sets differently ({} for none)")
    return cls(name, Subsections(name, cls.schemas(), params))


class Subsections(dict):
    """A domain's settings by subsection, each parsed (and checked) when first read: a stage
    reads, and so declares in dvc.yaml, only the subsections it uses (prepare `data`,
    generate `prompt` and `sampling`, ...). `polychromic doctor` checks them all at once."""

    def __init__(self, name: str, schemas: dict[str, type], params: dict[str, Any]):
        super().__init__()
        self.name, self.schemas, self.params = name, schemas, params

    def __missing__(self, sub: str):
        if sub not in self.schemas:
            raise KeyError(sub)
        value = load_section(self.schemas[sub], self.params, f"{self.name}.{sub}")
        self[sub] = value
        return value
