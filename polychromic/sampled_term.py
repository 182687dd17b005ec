"""The machinery every method with a sampled, score-function term shares: the term's
sampling settings (`SampledTermConfig`, the base of each such method's params section) and
a Trainer (`SampledTermTrainer`) that adds λ times the term to the cross-entropy.

Every `generate_every` optimiser steps, for `prompts_per_step` prompts of the batch, the
current policy (adapter on, dropout off, no grad, KV cache, one batched decode) samples
`n_generations` completions, by default with the evaluation's settings (the domain's
temperature, top-k, top-p and length). A method says what each sample's advantage is
(`advantages`); its log-probability under that same distribution (dropout off, top-k/top-p
applied) is recomputed with gradient in one batched pass, and the term is
-mean_i(A_i · log π(y_i | x)) (`objective.diversity_policy_loss`). Evaluation loss stays
cross-entropy only, so it compares with the baseline's.

On each update the two gradients are taken apart (one backward each, as the sum would
cost) and logged: `<term>_grad_ratio` = ‖λ∇term‖ / ‖∇CE‖ and their cosine.
"""

from __future__ import annotations

import dataclasses
import logging
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np
import torch
from transformers import Trainer

from polychromic.config import require
from polychromic.domains import Sampling
from polychromic.modeling import IGNORE_INDEX
from polychromic.objective import REDUCTIONS, AdvantageScaler, diversity_policy_loss
from polychromic.sampling import cut_at_stop, padded, sample_ids, stop_check, truncated_logprobs

log = logging.getLogger("polychromic")
SCALINGS = ("running", "set", "none")


@dataclass
class SampledTermConfig:
    """The sampled term's settings that every such method shares (its own come after)."""
    n_generations: int = field(default=8, metadata={"help": "N, samples per prompt per update"})
    advantage_scaling: str = field(default="running", metadata={
        "help": "running (RMS of earlier updates; unbiased direction), set (GRPO-style, "
                "biased), none"})
    logprob_reduction: str = field(default="sum", metadata={
        "help": "a sample's log π: sum over its tokens (exact), or token_mean (biased when "
                "lengths differ)"})
    generate_every: int = field(default=2, metadata={"help": "optimiser steps between updates"})
    prompts_per_step: int = field(default=2, metadata={
        "help": "batch prompts sampled from per update (at most the batch)"})
    temperature: float | None = field(default=None, metadata={
        "help": "training sampling temperature (null: the domain's sampling.temperature)"})
    top_k: int | None = field(default=None, metadata={
        "help": "training top-k, 0 off (null: the domain's sampling.top_k)"})
    top_p: float | None = field(default=None, metadata={
        "help": "training nucleus mass (null: the domain's sampling.top_p)"})
    max_new_tokens: int | None = field(default=None, metadata={
        "help": "tokens per training sample (null: the domain's sampling.max_new_tokens)"})
    eval_prompts: int = field(default=8, metadata={
        "help": "val prompts for eval/diversity (sampled like the training samples)"})
    eval_samples: int = field(default=4, metadata={"help": "samples per val prompt"})
    collapse_below: float = field(default=0.1, metadata={"help": "warn: diversity collapse"})
    overfit_gap: float = field(default=0.3, metadata={"help": "warn: eval - train loss gap"})

    @property
    def term_weight(self) -> float:
        """λ, the term's weight (each method names its own field)."""
        raise NotImplementedError

    def check(self, key: str) -> None:
        require(self.n_generations >= 2, f"{key}.n_generations", "must be >= 2 (diversity "
                "needs a set)")
        require(self.advantage_scaling in SCALINGS, f"{key}.advantage_scaling",
                f"must be one of {SCALINGS}")
        require(self.logprob_reduction in REDUCTIONS, f"{key}.logprob_reduction",
                f"must be one of {REDUCTIONS}")
        # With 2 samples both LOO advantages are D(pair) - D(one sample): equal, so
        # standardising them within the set gives 0, on every step.
        require(self.advantage_scaling != "set" or self.n_generations >= 3,
                f"{key}.advantage_scaling",
                "'set' needs n_generations >= 3 (with 2 samples it gives zero gradient)")
        for name in ("generate_every", "prompts_per_step", "eval_prompts", "eval_samples"):
            require(getattr(self, name) >= 1, f"{key}.{name}", "must be >= 1")
        require(self.max_new_tokens is None or self.max_new_tokens >= 1,
                f"{key}.max_new_tokens", "must be >= 1 or null")
        require(self.temperature is None or self.temperature > 0, f"{key}.temperature",
                "must be > 0 or null")
        require(self.top_k is None or self.top_k >= 0, f"{key}.top_k", "must be >= 0 or null")
        require(self.top_p is None or 0 < self.top_p <= 1, f"{key}.top_p",
                "must be in (0, 1] or null")

    def sampling(self, domain: Sampling) -> Sampling:
        """The training samples' settings: this section's, where set, else the domain's."""
        chosen = {name: getattr(self, name) for name in ("temperature", "top_k", "top_p",
                                                          "max_new_tokens")}
        return dataclasses.replace(domain, **{k: v for k, v in chosen.items() if v is not None})


def parameter_gradients(loss: torch.Tensor, params: list[torch.Tensor]) -> list[torch.Tensor]:
    """d loss / d each of params, zeros for those it does not reach."""
    grads = torch.autograd.grad(loss, params, allow_unused=True)
    return [torch.zeros_like(p) if g is None else g for p, g in zip(params, grads, strict=True)]


def batch_examples(inputs) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """(input ids, labels) of each example of a batch: the rows of a padded batch (padding
    included), the stretches between position 0s of a packed one."""
    if "position_ids" not in inputs:
        yield from zip(inputs["input_ids"], inputs["labels"], strict=True)
        return
    starts = (inputs["position_ids"][0] == 0).nonzero()[:, 0].tolist()
    for start, end in zip(starts, starts[1:] + [inputs["input_ids"].shape[1]], strict=True):
        yield inputs["input_ids"][0, start:end], inputs["labels"][0, start:end]


class SampledTermTrainer(Trainer):
    """The Trainer of a method with a sampled term: a subclass says each group's advantages
    (`group_advantages`) and how diverse the val samples are (`eval_scores`)."""

    TERM = "diversity"
    """The term's name in the logged keys (`<TERM>_loss`, `<TERM>_grad_ratio`, ...)."""

    def __init__(self, *args, term: SampledTermConfig, tokenizer, checker=None,
                 records: list[dict] = (), sampling: Sampling, stop: tuple[str, ...] = (),
                 eval_prompts: list[tuple[str, str]] = (), **kwargs):
        """`checker` and `records`: the domain's checker and the train records (batches carry
        `record_index`), for rewards from the checker; `sampling`, `stop`: the domain's
        sampling settings (the section's own where it sets them) and stop strings;
        `eval_prompts`: (prompt, its chat-formatted text) pairs for eval/diversity."""
        super().__init__(*args, **kwargs)
        self.term = term
        self.tok = tokenizer
        self.checker = checker
        self.train_records = list(records)
        self.sampling = term.sampling(sampling)
        self.stop = tuple(stop)
        self.eval_prompts = list(eval_prompts)
        # the samples' draws; under DDP each process draws its own
        self.generator = torch.Generator().manual_seed(self.args.seed + self.args.process_index)
        self.scaler = AdvantageScaler(term.advantage_scaling)
        self.logged: dict[str, list[float]] = defaultdict(list)
        self.flags = {"diversity_collapse": False, "overfitting": False}
        self.last_train_loss: float | None = None
        self.last_eval_loss: float | None = None

    # -- resuming (checkpoints.py) ----------------------------------------------------
    def method_state(self) -> dict:
        """What a checkpoint needs beyond the Trainer's own state for a resumed run to draw
        the same samples and scale them alike."""
        return {"generator": self.generator.get_state(), "running_ms": self.scaler.running_ms,
                "logged": dict(self.logged), "flags": dict(self.flags),
                "last_train_loss": self.last_train_loss, "last_eval_loss": self.last_eval_loss}

    def load_method_state(self, state: dict) -> None:
        self.generator.set_state(state["generator"])
        self.scaler.running_ms = state["running_ms"]
        self.logged = defaultdict(list, state["logged"])
        self.flags = dict(state["flags"])
        self.last_train_loss, self.last_eval_loss = (state["last_train_loss"],
                                                     state["last_eval_loss"])

    # -- the objective -------------------------------------------------------------------
    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        inputs = dict(inputs)
        record_index = inputs.pop("record_index", None)
        # a copy: the Trainer takes the labels out of what it is given
        out = super().compute_loss(model, dict(inputs), return_outputs, num_items_in_batch)
        quality = out[0] if return_outputs else out
        config = self.term
        # The Trainer divides the loss by the accumulation steps itself unless the model's loss
        # was already normalised over the whole accumulated batch; match it for the new term.
        scaled = self.model_accepts_loss_kwargs and num_items_in_batch is not None
        accumulation = self.current_gradient_accumulation_steps if scaled else 1
        if not model.training:
            return out
        self.logged["quality_loss"].append(quality.item() * accumulation)
        if config.term_weight == 0 or self.state.global_step % config.generate_every:
            self.logged["combined_loss"].append(quality.item() * accumulation)
            return out
        term, score = self.sampled_term(model, inputs, record_index)
        combined = self.split_gradients(quality, config.term_weight * term / accumulation)
        self.logged[f"{self.TERM}_loss"].append(term.item())
        self.logged["diversity_score"].append(score)
        self.logged["combined_loss"].append(quality.item() * accumulation
                                             + config.term_weight * term.item())
        return (combined, out[1]) if return_outputs else combined

    def split_gradients(self, quality: torch.Tensor, term: torch.Tensor) -> torch.Tensor:
        """quality + term, whose backward gives the same gradient, after logging the two
        gradients' norms and cosine: each part is differentiated on its own (the two graphs
        share no forward pass, so this costs what one backward of the sum costs) and the
        result is a surrogate, linear in the weights, carrying their sum."""
        params = [p for p in self.model.parameters() if p.requires_grad]
        grads = [parameter_gradients(loss, params) for loss in (quality, term)]
        quality_grad, term_grad = (torch.cat([g.flatten() for g in gs]) for gs in grads)
        quality_norm = quality_grad.norm().item()
        self.logged["quality_grad_norm"].append(quality_norm)
        self.logged[f"{self.TERM}_grad_ratio"].append(term_grad.norm().item()
                                                      / max(quality_norm, 1e-12))
        self.logged[f"{self.TERM}_grad_cosine"].append(torch.nn.functional.cosine_similarity(
            quality_grad, term_grad, dim=0).item())
        surrogate = sum((p * (a + b)).sum() for p, a, b in zip(params, *grads, strict=True))
        return surrogate - surrogate.detach() + (quality + term).detach()

    def sampled_term(self, model, inputs, record_index=None) -> tuple[torch.Tensor, float]:
        config = self.term
        rows = min(config.prompts_per_step, sum(1 for _ in batch_examples(inputs)))
        prompt_ids, prompt_mask = self.batch_prompts(inputs, rows)
        # Under DDP each process samples for its own prompts with the module itself: the
        # term's gradient is taken apart (split_gradients), and the backward of their sum is
        # what DDP averages over processes.
        model = self.accelerator.unwrap_model(model)
        was_training = model.training
        model.eval()  # no dropout: the log-probabilities are those of the policy sampled from
        try:
            completions, keep = self.sample(model, prompt_ids, prompt_mask, config.n_generations)
            texts = self.decode(completions)
            n = config.n_generations
            groups = [texts[p * n:(p + 1) * n] for p in range(rows)]
            flat, score = self.advantages(groups, record_index)
            logprobs = self.completion_logprobs(model, prompt_ids, prompt_mask, completions,
                                                keep, self.sampling)
        finally:
            model.train(was_training)
        term = diversity_policy_loss(logprobs, keep.float(),
                                     torch.tensor(flat, dtype=logprobs.dtype,
                                                  device=logprobs.device),
                                     config.logprob_reduction)
        return term, score

    def advantages(self, groups: list[list[str]], record_index=None) -> tuple[np.ndarray, float]:
        """Each sample's (scaled) advantage, prompt-major, and the groups' mean diversity."""
        raw, scores = self.group_advantages(groups, record_index)
        if self.term.advantage_scaling == "set":
            raw = [self.scaler(a) for a in raw]
        flat = np.concatenate(raw)
        if self.term.advantage_scaling != "set":
            flat = self.scaler(flat)
        return flat, float(np.mean(scores))

    def group_advantages(self, groups: list[list[str]],
                         record_index=None) -> tuple[list[np.ndarray], list[float]]:
        """Per group (a prompt's samples): each sample's raw advantage, and the group's
        diversity (what diversity_score logs and the collapse flag watches)."""
        raise NotImplementedError

    def records_of(self, record_index, count: int) -> list[dict]:
        """The train records of the batch's first `count` examples (for the checker)."""
        if record_index is None or not self.train_records:
            raise ValueError(f"{type(self).__name__} needs the train records and "
                             "`record_index` in the batch")
        return [self.train_records[int(i)] for i in record_index[:count]]

    # -- sampling and log-probabilities --------------------------------------------------
    def decode(self, completions: torch.Tensor) -> list[str]:
        """The samples' text, as the generate stage stores it (cut at a stop string)."""
        texts = self.tok.batch_decode(completions, skip_special_tokens=True)
        return [cut_at_stop(text, self.stop).strip() for text in texts]

    def batch_prompts(self, inputs, rows: int):
        """Left-padded prompt tokens (those before the first label) of the first `rows`
        examples of a padded batch or of a packed one (PackCollator)."""
        prompts = [ids[:int((labels != IGNORE_INDEX).int().argmax())]
                   for ids, labels in list(batch_examples(inputs))[:rows]]
        width = max(len(prompt) for prompt in prompts)
        device = inputs["input_ids"].device
        ids = torch.full((rows, width), self.tok.pad_token_id, dtype=torch.long, device=device)
        mask = torch.zeros((rows, width), dtype=torch.long, device=device)
        for r, prompt in enumerate(prompts):
            ids[r, width - len(prompt):] = prompt
            mask[r, width - len(prompt):] = 1
        return ids, mask

    def sample(self, model, prompt_ids, prompt_mask, n):
        """n completions per prompt (no grad) with the training samples' settings, and the
        mask of their sampled tokens (up to the end-of-turn token or the end of a stop
        string). The caller turns dropout off."""
        settings = self.sampling
        samples = sample_ids(
            model, prompt_ids, prompt_mask, n, temperature=settings.temperature,
            top_k=settings.top_k, top_p=settings.top_p, max_new_tokens=settings.max_new_tokens,
            eos_token_id=self.tok.eos_token_id, generator=self.generator,
            ended=stop_check(self.tok, self.stop))
        completions, keep = padded(samples, self.tok.pad_token_id)
        return completions.to(prompt_ids.device), keep.to(prompt_ids.device)

    @staticmethod
    def completion_logprobs(model, prompt_ids, prompt_mask, completions, keep,
                            settings: Sampling):
        """log π(y_t | x, y_<t) of each completion token, with gradient, under the
        distribution the samples came from (temperature, top-k, top-p of `settings`).

        Each prompt is encoded once, with gradient, and its KV cache is repeated for its n
        completions (repeat_interleave is differentiable), instead of encoding it n times."""
        n = completions.shape[0] // prompt_ids.shape[0]
        prompt_positions = (prompt_mask.cumsum(-1) - 1).clamp(min=0)
        prompt = model(input_ids=prompt_ids, attention_mask=prompt_mask,
                       position_ids=prompt_positions, use_cache=True, logits_to_keep=1)
        cache = prompt.cache
        cache.batch_repeat_interleave(n)
        mask = torch.cat([prompt_mask.repeat_interleave(n, 0), keep.long()], dim=1)
        positions = (mask.cumsum(-1) - 1).clamp(min=0)[:, prompt_ids.shape[1]:]
        rest = model(input_ids=completions, attention_mask=mask, position_ids=positions,
                     cache=cache).logits
        # the prompt's last logits predict the first completion token
        logits = torch.cat([prompt.logits.repeat_interleave(n, 0), rest[:, :-1]], dim=1)
        return truncated_logprobs(logits, completions, settings.temperature, settings.top_k,
                                  settings.top_p)

    # -- logging, evaluation, red flags --------------------------------------------------
    def log(self, logs: dict[str, float], *args, **kwargs) -> None:
        if "loss" in logs and self.logged:
            means = {key: float(np.mean(values)) for key, values in sorted(self.logged.items())}
            if self.accelerator.num_processes > 1:
                # every process logs the same keys at the same steps (sampling follows the
                # global step); the curves are of all processes' batches, like `loss`
                local = torch.tensor(list(means.values()), device=self.args.device)
                means = dict(zip(means, self.accelerator.reduce(local, "mean").tolist(),
                                 strict=True))
            logs |= means
            self.logged.clear()
            self.last_train_loss = logs["quality_loss"]
            score = logs.get("diversity_score")
            if score is not None and score < self.term.collapse_below:
                self.flags["diversity_collapse"] = True
                log.warning("red flag: diversity collapse (train diversity_score %.3f < %.2f)",
                            score, self.term.collapse_below)
        if "eval_loss" in logs:
            self.check_overfitting(logs["eval_loss"])
        super().log(logs, *args, **kwargs)

    def check_overfitting(self, eval_loss: float) -> None:
        previous, self.last_eval_loss = self.last_eval_loss, eval_loss
        train = self.last_train_loss
        if previous is None or train is None:
            return
        if eval_loss > previous and eval_loss - train > self.term.overfit_gap:
            self.flags["overfitting"] = True
            log.warning("red flag: overfitting (eval loss %.3f rising, %.3f above train loss)",
                        eval_loss, eval_loss - train)

    def evaluate(self, eval_dataset=None, ignore_keys=None, metric_key_prefix: str = "eval"):
        result = super().evaluate(eval_dataset, ignore_keys, metric_key_prefix)
        if metric_key_prefix == "eval" and self.eval_prompts:
            diversity, table = self.sample_eval()
            result["eval_diversity"] = diversity
            self.log({"eval_diversity": diversity})
            self.log_samples(table)
        return result

    def sample_eval(self) -> tuple[float, dict[str, list]]:
        config = self.term
        self.tok.padding_side = "left"
        encoded = self.tok([text for _, text in self.eval_prompts], return_tensors="pt",
                           padding=True,
                           add_special_tokens=False).to(self.model.device)
        was_training = self.model.training
        self.model.eval()
        try:
            completions, _ = self.sample(self.model, encoded["input_ids"],
                                         encoded["attention_mask"], config.eval_samples)
        finally:
            self.model.train(was_training)
        texts = self.decode(completions)
        k = config.eval_samples
        groups = [texts[p * k:(p + 1) * k] for p in range(len(self.eval_prompts))]
        table = defaultdict(list)
        for (prompt, _), group in zip(self.eval_prompts, groups, strict=True):
            for sample in group:
                table["step"].append(self.state.global_step)
                table["prompt"].append(prompt)
                table["sample"].append(sample)
        return float(np.mean(self.eval_scores(groups))), dict(table)

    def eval_scores(self, groups: list[list[str]]) -> list[float]:
        """The diversity of each val prompt's samples (eval_prompts' order)."""
        raise NotImplementedError

    def log_samples(self, table: dict[str, list]) -> None:
        import mlflow

        if mlflow.active_run() is not None:
            mlflow.log_table(table, artifact_file=f"samples/step_{self.state.global_step}.json")




@dataclass
class CheckedTermConfig(SampledTermConfig):
    """A term rewarded by the domain's checker, weighted by its own `weight`."""
    weight: float = field(default=0.3, metadata={"help": "λ, weight of the term (0: plain "
                                                 "LoRA)"})

    @property
    def term_weight(self) -> float:
        return self.weight

    def check(self, key: str) -> None:
        require(self.weight >= 0, f"{key}.weight", "must be >= 0")
        super().check(key)


class CheckedTermTrainer(SampledTermTrainer):
    """The Trainer of a term rewarded by the domain's checker: it needs the checker and the
    train records, and keeps the val records of eval/diversity."""

    def __init__(self, *args, eval_records: list[dict] = (), **kwargs):
        super().__init__(*args, **kwargs)
        if self.checker is None or not self.train_records:
            raise ValueError(f"{self.TERM} needs the domain's checker and the records")
        self.eval_records = list(eval_records)


def text_classes(samples: list[str]) -> list[str]:
    """The same text up to case and spacing: a class label that costs nothing to compute."""
    return [" ".join(sample.lower().split()) for sample in samples]


def checker_options(config: SampledTermConfig, tokenizer, domain, train: list,
                    val: list) -> dict:
    """The Trainer's keyword arguments of a method rewarded by the domain's checker: its
    config, the checker (the same code evaluation uses), sampling settings and stop
    strings, the train records (batches carry `record_index`), and the val prompts and
    records for eval/diversity."""
    from polychromic.modeling import prompt_text

    records = val[:config.eval_prompts]
    eval_prompts = [(record["prompt"], prompt_text(tokenizer, domain.messages(record),
                                                   domain.assistant_prefix(record)))
                    for record in records]
    return {"term": config, "tokenizer": tokenizer, "checker": domain.checker(val),
            "records": train, "stop": domain.stop, "sampling": domain.sampling,
            "eval_prompts": eval_prompts, "eval_records": records}
