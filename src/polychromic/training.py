"""LoRA training, shared by the train stage and the benchmark: the config, the examples, the
adapter, the Trainer of each method and the training curves.

Method `baseline` is standard LoRA: cross-entropy on the target tokens only (prompt tokens are
masked with -100). Method `polychromic` adds the score-function diversity term
(`polychromic_trainer.py`, params section `polychromic`). Methods differ only in
`make_trainer`; the data, LoRA setup, logging and saving around it are shared.

Under gradient accumulation the Trainer passes the token count of the whole accumulated
batch to the loss (`num_items_in_batch`), so the loss is the mean over all target tokens of
the effective batch, as with one big batch (tested).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path

from transformers import TrainerCallback

from polychromic import tracking
from polychromic.config import UserError, load_section, require
from polychromic.domains import RECORD_FIELDS, Domain, Record
from polychromic.io import at_precision, read_jsonl
from polychromic.modeling import causal_lm_loss, encode_example, prompt_text
from polychromic.runtime import Runtime, runtime_config

METHODS = ("baseline", "polychromic")
SCHEDULES = ("linear", "cosine", "constant", "constant_with_warmup")


@dataclass
class LoraSettings:
    r: int = field(default=16, metadata={"help": "LoRA rank"})
    alpha: int = field(default=32, metadata={"help": "LoRA alpha (scale = alpha / r)"})
    dropout: float = field(default=0.05, metadata={"help": "dropout on the LoRA input"})
    target_modules: list[str] = field(
        default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj"],
        metadata={"help": "module names that get LoRA adapters"})


@dataclass
class TrainConfig:
    seeds: list[int] = field(
        default_factory=lambda: [42],
        metadata={"help": "training seeds (initialisation, dropout, data order, sampling): "
                  "train/generate/evaluate run once per seed and `compare` aggregates them"})
    lora: dict = field(default_factory=dict, metadata={"help": "LoRA settings (see LoraSettings)"})
    learning_rate: float = field(default=2e-4, metadata={"help": "peak learning rate"})
    lr_schedule: str = field(default="cosine", metadata={"help": "one of " + ", ".join(SCHEDULES)})
    warmup_steps: int = field(default=10, metadata={"help": "linear warm-up steps"})
    warmup_ratio: float | None = field(
        default=None, metadata={"help": "when set, warm-up steps = ceil(ratio × optimiser "
                                "steps), in place of warmup_steps"})
    max_steps: int = field(default=100, metadata={"help": "optimiser steps"})
    epochs: float | None = field(
        default=None, metadata={"help": "when set, optimiser steps = ceil(epochs × train "
                                "examples / (batch_size × gradient_accumulation)), in place "
                                "of max_steps"})
    weight_decay: float = field(default=0.0, metadata={"help": "AdamW weight decay"})
    batch_size: int = field(default=8, metadata={"help": "examples per forward pass"})
    gradient_accumulation: int = field(default=1, metadata={"help": "forward passes per step"})
    max_length: int = field(default=128, metadata={"help": "tokens per example (prompt+reply)"})
    eval_every: int = field(default=25, metadata={"help": "steps between val-loss evaluations"})
    eval_examples: int = field(default=64, metadata={"help": "val examples used for eval loss"})
    early_stopping_patience: int = field(
        default=3, metadata={"help": "stop after this many evaluations without improvement "
                             "(0: off); the best checkpoint is restored at the end"})
    checkpoint_every: int = field(
        default=25, metadata={"help": "steps between checkpoints (a multiple of eval_every)"})
    logging_every: int = field(default=5, metadata={"help": "steps between logged losses"})
    max_grad_norm: float = field(
        default=1.0, metadata={"help": "clip the gradient's norm to this (0: no clipping)"})

    def check(self, key: str) -> None:
        require(len(self.seeds) > 0 and len(set(self.seeds)) == len(self.seeds),
                f"{key}.seeds", "must be a non-empty list of distinct ints")
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
        self.lora_settings = load_section(LoraSettings, {"lora": self.lora}, "lora")
        require(self.lora_settings.r > 0, f"{key}.lora.r", "must be > 0")
        require(0 <= self.lora_settings.dropout < 1, f"{key}.lora.dropout", "must be in [0, 1)")


def train_config(params: dict, domain: str) -> TrainConfig:
    """The `train` section with the domain's own values (`<domain>.train`) laid over it."""
    base = load_section(TrainConfig, params, "train")
    overrides = (params.get(domain) or {}).get("train") or {}
    allowed = {f.name for f in dataclasses.fields(TrainConfig)} - {"seeds"}
    unknown = sorted(set(overrides) - allowed)
    require(not unknown, f"{domain}.train.{unknown[0] if unknown else ''}",
            f"is not a train key a domain can set (known: {', '.join(sorted(allowed))})")
    if not overrides:
        return base
    merged = {**params["train"], **overrides}
    return load_section(TrainConfig, {domain: {"train": merged}}, f"{domain}.train")


def fix_schedule(config: TrainConfig, train_examples: int, processes: int = 1) -> TrainConfig:
    """Turn `epochs` and `warmup_ratio`, where set, into `max_steps` and `warmup_steps` for a
    training set of this size (in place); the Trainer then sees steps only."""
    per_step = config.batch_size * config.gradient_accumulation * processes
    if config.epochs is not None:
        config.max_steps = max(1, math.ceil(config.epochs * train_examples / per_step))
    if config.warmup_ratio is not None:
        config.warmup_steps = math.ceil(config.warmup_ratio * config.max_steps)
    return config


def read_records(path: Path) -> list[Record]:
    return read_jsonl(path, RECORD_FIELDS)


def encode_records(records: list[Record], domain: Domain, tokenizer, max_length: int,
                   where: Path, limit: int | None = None) -> list[dict]:
    """One example per (record, reference): the domain's prompt, the reference as the
    target. Each carries `record_index` (its record's position), which the polychromic
    trainer uses to check its samples against the record."""
    examples = []
    for index, record in enumerate(records):
        prompt = prompt_text(tokenizer, domain.messages(record), domain.assistant_prefix(record))
        for reference in record["references"]:
            example = encode_example(tokenizer, prompt, domain.target(record, reference),
                                     max_length)
            if example is not None:
                examples.append({**example, "record_index": index})
    examples = examples[:limit]
    if not examples:
        raise UserError(f"{where}: no example fits train.max_length={max_length}")
    return examples


def add_lora(model, settings: LoraSettings, seed: int):
    import torch
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training

    if getattr(model, "is_loaded_in_4bit", False):  # QLoRA: norms in fp32, inputs with grad
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
    torch.manual_seed(seed)
    config = LoraConfig(r=settings.r, lora_alpha=settings.alpha, lora_dropout=settings.dropout,
                        target_modules=settings.target_modules, task_type="CAUSAL_LM")
    try:
        return get_peft_model(model, config)
    except ValueError as err:
        raise UserError(f"params.yaml: 'train.lora.target_modules': {err}") from None


def save_adapter(model, folder: Path) -> None:
    """The adapter's weights and config, with the config's sets (target_modules) sorted:
    peft writes a set in its iteration order, which follows each process's hash seed, and
    would give the same adapter a new hash in dvc.lock on every run."""
    for config in model.peft_config.values():
        for name, value in vars(config).items():
            if isinstance(value, set):
                setattr(config, name, sorted(value))
    model.save_pretrained(folder)


def training_arguments(config: TrainConfig, output_dir: Path, seed: int,
                       runtime: Runtime | None = None):
    from transformers import TrainingArguments

    runtime = runtime or Runtime()
    precision = runtime.mixed_precision()
    stopping = config.early_stopping_patience > 0
    return TrainingArguments(
        use_cpu=runtime.model_device() == "cpu",
        bf16=precision == "bf16",
        fp16=precision == "fp16",
        # non-reentrant: the polychromic update differentiates the loss with autograd.grad
        gradient_checkpointing=runtime.gradient_checkpointing,
        gradient_checkpointing_kwargs={"use_reentrant": False},
        output_dir=str(output_dir),
        seed=seed,
        learning_rate=config.learning_rate,
        lr_scheduler_type=config.lr_schedule,
        warmup_steps=config.warmup_steps,
        max_steps=config.max_steps,
        weight_decay=config.weight_decay,
        per_device_train_batch_size=config.batch_size,
        per_device_eval_batch_size=config.batch_size,
        gradient_accumulation_steps=config.gradient_accumulation,
        eval_strategy="steps",
        eval_steps=config.eval_every,
        save_strategy="steps",
        save_steps=config.checkpoint_every,
        save_total_limit=None,  # checkpoints.CheckpointKeeper keeps the newest and the best
        load_best_model_at_end=stopping,
        metric_for_best_model="eval_loss",
        greater_is_better=False,
        logging_steps=config.logging_every,
        max_grad_norm=config.max_grad_norm,
        report_to=[],
        remove_unused_columns=False,
        dataloader_num_workers=0,
        disable_tqdm=False,
    )


def make_trainer(method: str, model, args, train_set, eval_set, collator, callbacks,
                 **method_options):
    """The seam between methods: each method is a Trainer (subclass) over the same inputs;
    `method_options` go to the method's own Trainer."""
    from transformers import Trainer

    check_method(method)
    common = {"model": model, "args": args, "train_dataset": train_set,
              "eval_dataset": eval_set, "data_collator": collator, "callbacks": callbacks,
              "compute_loss_func": causal_lm_loss}
    if method == "baseline":
        return Trainer(**common)
    from polychromic.polychromic_trainer import PolychromicTrainer

    return PolychromicTrainer(**common, **method_options)


def polychromic_options(params: dict, tokenizer, domain: Domain, train: list[Record],
                        val: list[Record]) -> dict:
    """The polychromic Trainer's config, the domain's checker (the set objective's reward),
    the embedder, the domain's sampling settings and stop strings, and the eval/diversity
    prompts."""
    from polychromic.embedding import shared_embedder
    from polychromic.polychromic_trainer import PolychromicConfig

    config = load_section(PolychromicConfig, params, "polychromic")
    embedder = None
    if config.diversity_metric == "semantic":
        embedder = shared_embedder(config.embedding_model, "polychromic.embedding_model",
                                   runtime_config(params).metrics_device())
    eval_prompts = [(record["prompt"], prompt_text(tokenizer, domain.messages(record),
                                                   domain.assistant_prefix(record)))
                    for record in val[:config.eval_prompts]]
    return {"polychromic": config, "tokenizer": tokenizer, "embedder": embedder,
            "checker": domain.checker(val) if config.objective == "set" else None,
            "records": train, "stop": domain.stop, "sampling": domain.sampling,
            "eval_prompts": eval_prompts}


def check_method(method: str) -> None:
    if method not in METHODS:
        raise UserError(f"params.yaml: 'methods' names unknown method {method!r} "
                        f"(known: {', '.join(METHODS)})")


class TrainingCurves(TrainerCallback):
    """Logs the training curves to MLflow and, when given a directory, to DVCLive (DVC plots),
    under the same names, at the Trainer's global step."""

    NAMES = {"loss": "train/loss", "eval_loss": "eval/loss",
             "learning_rate": "train/learning_rate", "grad_norm": "train/grad_norm",
             "quality_loss": "train/quality_loss", "diversity_score": "train/diversity_score",
             "diversity_loss": "train/diversity_loss", "combined_loss": "train/combined_loss",
             "eval_diversity": "eval/diversity", "quality_grad_norm": "train/quality_grad_norm",
             "diversity_grad_ratio": "train/diversity_grad_ratio",
             "diversity_grad_cosine": "train/diversity_grad_cosine"}

    def __init__(self, plots_dir: str | None, main_process: bool = True):
        """`main_process`: False in the other processes of a distributed run, which log
        nothing (the Trainer's logged losses are already averaged over processes)."""
        self.live = None
        self.main_process = main_process
        if plots_dir is not None and main_process:
            from dvclive import Live

            self.live = Live(dir=plots_dir, dvcyaml=None, save_dvc_exp=False, report=None)

    def on_train_begin(self, args, state, control, **kwargs):
        """A resumed run: the curves up to its checkpoint, from the Trainer's log history (what
        the killed run logged after it is gone with it)."""
        for logs in state.log_history:
            self.record(logs, logs["step"])

    def on_log(self, args, state, control, logs=None, **kwargs):
        self.record(logs or {}, state.global_step)

    def record(self, logs: dict, step: int) -> None:
        values = at_precision({name: float(logs[key]) for key, name in self.NAMES.items()
                               if key in logs})
        if not values or not self.main_process:
            return
        tracking.log_metrics(values, step=step)
        if self.live is not None:
            self.live.step = step
            for name, value in values.items():
                self.live.log_metric(name, value)

    def finish(self, summary: dict) -> None:
        """Write DVCLive's summary (metrics.json), with `summary` added."""
        if self.live is not None:
            self.live.summary.update(at_precision(summary))
            self.live.end()


def callbacks_for(config: TrainConfig, curves: TrainingCurves) -> list:
    from transformers import EarlyStoppingCallback

    callbacks = [curves]
    if config.early_stopping_patience > 0:
        callbacks.append(EarlyStoppingCallback(config.early_stopping_patience))
    return callbacks
