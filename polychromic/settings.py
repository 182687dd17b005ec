"""The schema of every section of `params.yaml`, in one module that stages and commands read.

Each section is a dataclass whose fields carry help text; `config.load_section` builds it
from the YAML, refusing unknown keys and wrong types, and its `check()` enforces ranges,
both with a message naming the params key. A default lives in one place: a key that
`params.yaml` sets has either no default here or this same value (tests/unit/test_settings.py).
`--help` of every stage prints the values `params.yaml` gives (`config.help_text`).

Sections owned elsewhere, by design: `runtime` (`runtime.Runtime`, with the device logic it
drives), each method's section (its module in `polychromic.methods`, beside its trainer) and
each domain's section (its package in `polychromic.domains`). `params_check.schemas()` lists
them all.
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, field
from typing import Any

from polychromic.config import load_section, matches, require

CORRECTIONS = ("holm", "bonferroni")


@dataclass(kw_only=True)
class Experiment:
    """The top level of params.yaml: the lists that dvc.yaml's matrices run over."""
    domains: list[str] = field(metadata={"help": "task domains (polychromic/domains/<name>/)"})
    methods: list[str] = field(metadata={"help": "trained systems (polychromic/methods/)"})
    prompting: list[str] = field(metadata={"help": "untrained systems: zero_shot, few_shot"})
    systems: list[str] = field(metadata={"help": "what evaluate scores and compare compares"})
    seeds: list[int] = field(metadata={
        "help": "training seeds (initialisation, dropout, data order, sampling): train, "
                "generate and evaluate run once per seed; compare aggregates them"})

    def check(self, key: str) -> None:
        for name in ("domains", "methods", "prompting", "systems", "seeds"):
            values = getattr(self, name)
            require(len(values) > 0 and len(set(values)) == len(values), name,
                    "must be a non-empty list of distinct values")
        unknown = sorted(set(self.systems) - set(self.methods) - set(self.prompting)
                         - set(matched_systems(self.methods)))
        require(not unknown, "systems", f"names {unknown[0] if unknown else ''!r}, which is "
                "neither in methods nor in prompting (nor <method>_matched[_<method>])")


def matched_systems(methods: list[str]) -> list[str]:
    """The systems that sample a method at a temperature matched to another's diversity
    (docs/protocol.md): <method>_matched (to the reference's), <method>_matched_<other> (to
    that method's: studies/confirmation, where a domain has two references)."""
    return [f"{m}_matched" for m in methods] + [f"{m}_matched_{r}" for m in methods
                                                for r in methods if r != m]


def system_method(system: str) -> str:
    """The method a system samples: itself, or what comes before `_matched`."""
    return system.split("_matched")[0]


def experiment(params: dict[str, Any]) -> Experiment:
    """All the checked top-level lists (`domains`, `methods`, `prompting`, `systems`,
    `seeds`), for what checks a whole run (`params_check`)."""
    names = [f.name for f in dataclasses.fields(Experiment)]
    return load_section(Experiment, {k: params[k] for k in names if k in params}, "")


def listed(params: dict[str, Any], name: str) -> list:
    """One top-level list of params.yaml (`seeds`, `systems`, ...), checked against its
    field in `Experiment`: what a stage reads (and declares) without the others."""
    field_type = typing.get_type_hints(Experiment)[name]
    value = params.get(name)
    require(isinstance(value, list) and matches(value, field_type) and len(value) > 0
            and len(set(value)) == len(value), name,
            f"must be a non-empty list of distinct {typing.get_args(field_type)[0].__name__} "
            "values")
    return value


DTYPES = ("float32", "bfloat16", "float16")


@dataclass
class BaseModelConfig:
    source: str = field(
        default="embedded:smollm2",
        metadata={"help": "'embedded:smollm2', a hub id (e.g. Qwen/Qwen3-8B) or a local path"},
    )
    revision: str = field(
        default="", metadata={"help": "a hub id's commit to load (its 40-hex sha; a branch or "
                              "tag is resolved to its sha, which models/base/hub.json records); "
                              "required for a hub id, unused otherwise"})
    dtype: str = field(default="float32", metadata={"help": "weights dtype: " + ", ".join(DTYPES)})
    thinking: bool = field(
        default=False, metadata={"help": "for chat templates with an `enable_thinking` switch "
                                 "(Qwen3): false pins it off in the saved template, so prompting, "
                                 "training and sampling all use non-thinking turns"})

    def check(self, key: str) -> None:
        require(self.dtype in DTYPES, f"{key}.dtype", f"must be one of {DTYPES}")


SCHEDULES = ("linear", "cosine", "constant", "constant_with_warmup")


@dataclass
class LoraSettings:
    r: int = field(default=16, metadata={"help": "LoRA rank"})
    alpha: int = field(default=32, metadata={"help": "LoRA alpha (scale = alpha / r)"})
    dropout: float = field(default=0.05, metadata={"help": "dropout on the LoRA input"})
    target_modules: list[str] = field(
        default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj"],
        metadata={"help": "module names that get LoRA adapters"})

    def check(self, key: str) -> None:
        require(self.r > 0, f"{key}.r", "must be > 0")
        require(0 <= self.dropout < 1, f"{key}.dropout", "must be in [0, 1)")


@dataclass
class TrainConfig:
    lora: LoraSettings = field(default_factory=LoraSettings,
                               metadata={"help": "LoRA settings (train.lora)"})
    learning_rate: float = field(default=2e-4, metadata={"help": "peak learning rate"})
    lr_schedule: str = field(default="cosine", metadata={"help": "one of " + ", ".join(SCHEDULES)})
    warmup_steps: int = field(default=10, metadata={"help": "linear warm-up steps"})
    warmup_ratio: float | None = field(
        default=None, metadata={"help": "when set, warm-up steps = ceil(ratio × optimiser "
                                "steps), in place of warmup_steps"})
    max_steps: int = field(default=60, metadata={"help": "optimiser steps"})
    epochs: float | None = field(
        default=None, metadata={"help": "when set, optimiser steps = ceil(epochs × train "
                                "examples / (batch_size × gradient_accumulation)), in place "
                                "of max_steps"})
    weight_decay: float = field(default=0.0, metadata={"help": "AdamW weight decay"})
    batch_size: int = field(default=8, metadata={"help": "examples per forward pass"})
    gradient_accumulation: int = field(default=1, metadata={"help": "forward passes per step"})
    max_length: int = field(default=512, metadata={"help": "tokens per example (prompt+reply)"})
    eval_every: int = field(default=20, metadata={"help": "steps between val-loss evaluations"})
    eval_examples: int = field(default=48, metadata={"help": "val examples used for eval loss"})
    early_stopping_patience: int = field(
        default=3, metadata={"help": "stop after this many evaluations without improvement "
                             "(0: off); the best checkpoint is restored at the end"})
    checkpoint_every: int = field(
        default=20, metadata={"help": "steps between checkpoints (a multiple of eval_every)"})
    logging_every: int = field(default=5, metadata={"help": "steps between logged losses"})
    max_grad_norm: float = field(
        default=1.0, metadata={"help": "clip the gradient's norm to this (0: no clipping)"})

    def check(self, key: str) -> None:
        require(self.learning_rate > 0, f"{key}.learning_rate", "must be > 0")
        require(self.lr_schedule in SCHEDULES, f"{key}.lr_schedule", f"must be one of {SCHEDULES}")
        for name in ("max_steps", "batch_size", "gradient_accumulation", "max_length",
                     "eval_every", "eval_examples", "checkpoint_every", "logging_every"):
            require(getattr(self, name) > 0, f"{key}.{name}", "must be > 0")
        require(self.warmup_steps >= 0, f"{key}.warmup_steps", "must be >= 0")
        require(self.warmup_ratio is None or 0 <= self.warmup_ratio < 1, f"{key}.warmup_ratio",
                "must be null or in [0, 1)")
        require(self.epochs is None or self.epochs > 0, f"{key}.epochs", "must be null or > 0")
        require(self.weight_decay >= 0, f"{key}.weight_decay", "must be >= 0")
        require(self.max_grad_norm >= 0, f"{key}.max_grad_norm", "must be >= 0 (0: off)")
        require(self.early_stopping_patience >= 0, f"{key}.early_stopping_patience", "must be >= 0")
        require(self.checkpoint_every % self.eval_every == 0, f"{key}.checkpoint_every",
                "must be a multiple of eval_every (the best checkpoint is chosen on eval loss)")


@dataclass
class GenerateConfig:
    n: int = field(default=10, metadata={"help": "samples per prompt (>= the largest k)"})
    batch_prompts: int = field(default=20, metadata={"help": "prompts sampled together (at "
                                                     "most; fewer when cache_gb is reached)"})
    cache_gb: float = field(default=4.0, metadata={"help": "memory for one batch's KV cache"})
    few_shot_examples: int = field(default=5, metadata={"help": "examples shown to few_shot"})

    def check(self, key: str) -> None:
        for name in ("n", "batch_prompts", "few_shot_examples"):
            require(getattr(self, name) > 0, f"{key}.{name}", "must be > 0")
        require(self.cache_gb > 0, f"{key}.cache_gb", "must be > 0")


@dataclass
class EvaluateConfig:
    ks: list[int] = field(default_factory=lambda: [1, 3, 5, 10],
                          metadata={"help": "k of pass@k (each <= generate.n)"})
    self_bleu_order: int = field(default=4, metadata={"help": "max n-gram order of Self-BLEU"})
    embedding_model: str = field(default="embedded:all-minilm-l6-v2",
                                 metadata={"help": "`semantic` diversity's sentence-transformers "
                                           "model (the polychromic reward's): embedded name or "
                                           "a local path"})
    independent_model: str = field(default="embedded:all-mpnet-base-v2", metadata={
        "help": "`semantic_independent` diversity's model, one that no training objective "
                "sees: embedded name or a local path"})
    bertscore_model: str = field(default="embedded:all-minilm-l6-v2",
                                 metadata={"help": "BERTScore encoder: embedded name or a "
                                           "local model directory (offline)"})
    bertscore_layers: int = field(default=6, metadata={"help": "BERTScore: layer whose "
                                                       "embeddings are matched (num_layers)"})

    def check(self, key: str) -> None:
        require(len(self.ks) > 0 and all(k >= 1 for k in self.ks), f"{key}.ks",
                "must be a non-empty list of k >= 1")
        require(self.self_bleu_order >= 1, f"{key}.self_bleu_order", "must be >= 1")
        require(self.bertscore_layers >= 1, f"{key}.bertscore_layers", "must be >= 1")


@dataclass
class FrontierConfig:
    """The protocol's frontiers and matched control (studies/protocol; docs/protocol.md):
    not read by the default pipeline."""
    temperatures: list[float] = field(default_factory=lambda: [0.5, 0.7, 0.9, 1.1, 1.3],
                                      metadata={"help": "sampling temperatures of each "
                                                "system's frontier (and LoRA's grid on val "
                                                "for the matched temperature)"})
    adapter_scales: list[float] = field(default_factory=lambda: [0.25, 0.5, 0.75], metadata={
        "help": "scales of a trained adapter's update (1: as trained, the evaluated point)"})
    seed: int = field(default=42, metadata={"help": "the seed whose adapters and samples "
                                            "trace the frontiers and choose the match"})

    def check(self, key: str) -> None:
        require(len(self.temperatures) >= 5 and all(t > 0 for t in self.temperatures),
                f"{key}.temperatures", "must hold five temperatures > 0 at least")
        require(all(0 <= a < 1 for a in self.adapter_scales), f"{key}.adapter_scales",
                "must be in [0, 1)")


KEY_ENV = {"anthropic": "ANTHROPIC_API_KEY", "openai": "OPENAI_API_KEY"}


@dataclass
class JudgeConfig:
    enabled: bool = field(default=False, metadata={"help": "run the judge (needs an API key)"})
    backend: str = field(default="anthropic", metadata={"help": "anthropic | openai "
                         "(any OpenAI-compatible chat-completions endpoint; needs `openai`)"})
    model: str = field(default="claude-sonnet-4-5", metadata={"help": "judge model name"})
    base_url: str | None = field(default=None, metadata={"help": "API endpoint; null = the "
                                 "backend's official one"})
    max_tokens: int = field(default=300, metadata={"help": "answer length limit"})
    temperature: float = field(default=0.0, metadata={"help": "must be 0; sent to the openai "
                               "backend only (the Anthropic API has no sampling parameters)"})
    seed: int = field(default=42, metadata={"help": "seed of the A/B order per pair"})
    max_prompts: int | None = field(default=None, metadata={"help": "pairs judged per seed "
                                    "(first in file order); null = all"})
    cache_dir: str = field(default=".judge_cache", metadata={"help": "answer cache (outside "
                           "DVC outputs, so a rerun costs nothing)"})
    max_retries: int = field(default=2, metadata={"help": "client retries per request"})
    timeout_s: float = field(default=60.0, metadata={"help": "request timeout, seconds"})

    def check(self, key: str) -> None:
        require(self.backend in KEY_ENV, f"{key}.backend", f"must be one of {tuple(KEY_ENV)}")
        require(bool(self.model.strip()), f"{key}.model", "must be non-empty")
        require(self.max_tokens > 0, f"{key}.max_tokens", "must be > 0")
        require(self.temperature == 0, f"{key}.temperature", "must be 0")
        require(self.max_prompts is None or self.max_prompts > 0, f"{key}.max_prompts",
                "must be > 0 or null")
        require(bool(self.cache_dir.strip()), f"{key}.cache_dir", "must be non-empty")
        require(self.max_retries >= 0, f"{key}.max_retries", "must be >= 0")
        require(self.timeout_s > 0, f"{key}.timeout_s", "must be > 0")


@dataclass(kw_only=True)
class PrimaryHypotheses:
    """A domain's pre-registered primary hypotheses (params `<domain>.primary`): every key is
    required, so that nothing about them is decided by a default."""
    diversity: str = field(metadata={
        "help": "diversity metric: polychromic higher than LoRA (superiority)"})
    passk: str = field(metadata={
        "help": "pass@k metric: polychromic higher than LoRA (superiority)"})
    quality: list[str] = field(metadata={
        "help": "quality metrics: polychromic not worse than LoRA by more than the margin"})
    margin: float = field(metadata={
        "help": "non-inferiority margin, a share of the LoRA mean"})

    def check(self, key: str) -> None:
        require(self.margin >= 0, f"{key}.margin", "must be >= 0")
        require(len(set(self.quality)) == len(self.quality), f"{key}.quality",
                "must not repeat a metric")


@dataclass
class CompareConfig:
    reference: str = field(default="polychromic", metadata={"help": "the system under test"})
    against: list[str] = field(default_factory=lambda: ["baseline", "zero_shot", "few_shot"],
                               metadata={"help": "systems the reference is compared with"})
    lora_system: str = field(default="baseline", metadata={"help": "the verdict's comparator"})
    matched_system: str | None = field(default=None, metadata={
        "help": "the comparator of the pass@k and quality hypotheses: LoRA at the temperature "
                "where its diversity matches the reference's (docs/protocol.md); null: "
                "lora_system"})
    resamples: int = field(default=10_000, metadata={"help": "bootstrap resamples (>= 10000)"})
    seed: int = field(default=42, metadata={"help": "bootstrap seed"})
    correction: str = field(default="holm", metadata={"help": "holm | bonferroni: the "
                                                      "correction the verdict uses"})
    power: float = field(default=0.8, metadata={"help": "power of the detectable effects"})
    minimum_p: float = field(default=0.05, metadata={"help": "minimum criterion: p below"})
    minimum_effect: float = field(default=0.3, metadata={"help": "minimum criterion: d_z above"})
    strong_p: float = field(default=0.01, metadata={"help": "strong criterion: p below"})
    strong_effect: float = field(default=0.5, metadata={"help": "strong criterion: d_z above"})
    strong_passk_gain: float = field(default=0.2, metadata={
        "help": "strong criterion: relative gain of the primary pass@k over LoRA above"})
    strong_judge_win_rate: float = field(default=0.55, metadata={
        "help": "strong criterion: judge win rate above"})

    def check(self, key: str) -> None:
        require(self.resamples >= 10_000, f"{key}.resamples", "must be >= 10000")
        require(self.correction in CORRECTIONS, f"{key}.correction",
                f"must be one of {sorted(CORRECTIONS)}")
        require(self.lora_system in self.against, f"{key}.lora_system", "must be in 'against'")
        require(self.reference not in self.against, f"{key}.against",
                "must not contain the reference")
        require(0 < self.power < 1, f"{key}.power", "must be in (0, 1)")


@dataclass
class ReportConfig:
    examples: int = field(default=3, metadata={"help": "prompts shown in examples.md"})
    example_samples: int = field(default=3, metadata={"help": "samples shown per system"})
    seed: int = field(default=42, metadata={"help": "seed of the choice of example prompts"})

    def check(self, key: str) -> None:
        require(self.examples >= 1, f"{key}.examples", "must be >= 1")
        require(self.example_samples >= 1, f"{key}.example_samples", "must be >= 1")


def train_config(params: dict[str, Any], domain: str) -> TrainConfig:
    """The `train` section with the domain's own values (`<domain>.train`) laid over it."""
    base = load_section(TrainConfig, params, "train")
    overrides = (params.get(domain) or {}).get("train") or {}
    allowed = {f.name for f in dataclasses.fields(TrainConfig)}
    unknown = sorted(set(overrides) - allowed)
    require(not unknown, f"{domain}.train.{unknown[0] if unknown else ''}",
            f"is not a train key a domain can set (known: {', '.join(sorted(allowed))})")
    if not overrides:
        return base
    merged = {**params["train"], **overrides}
    return load_section(TrainConfig, {domain: {"train": merged}}, f"{domain}.train")
