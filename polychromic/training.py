"""LoRA training, shared by the train stage, the benchmark and the signal measurement: the
examples, the adapter, the Trainer's arguments, the callbacks and the training curves.

Methods (`polychromic.methods`) differ only in their Trainer; the data, LoRA setup, schedule,
logging and saving around it are shared, here.

Under gradient accumulation the Trainer passes the token count of the whole accumulated
batch to the loss (`num_items_in_batch`), so the loss is the mean over all target tokens of
the effective batch, as with one big batch (tested).
"""

from __future__ import annotations

import math
from pathlib import Path

from transformers import TrainerCallback

from polychromic import tracking
from polychromic.config import UserError
from polychromic.domains import RECORD_FIELDS, Domain, Record
from polychromic.io import at_precision, read_jsonl
from polychromic.modeling import encode_example, prompt_text
from polychromic.runtime import Runtime
from polychromic.settings import LoraSettings, TrainConfig


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
