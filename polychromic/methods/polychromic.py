"""Method `polychromic`: LoRA cross-entropy plus the score-function diversity term of
`objective.py`; its configuration (`params.yaml` section `polychromic`) beside its Trainer.

Every `generate_every` optimiser steps, for `prompts_per_step` prompts of the batch, the
current policy (adapter on, dropout off, no grad, KV cache, one batched decode) samples
`n_generations` completions, by default with the evaluation's settings (the domain's
temperature, top-k, top-p and length): the distribution whose diversity is measured. The
set is scored with the chosen diversity, each sample gets an advantage, and the samples'
log-probabilities under that same distribution (dropout off, top-k/top-p applied) are
recomputed with gradient in one batched pass. Evaluation loss stays cross-entropy only, so it
compares with the baseline's.

On each diversity update the two gradients are taken apart (one backward each, as the sum
would cost) and logged: `diversity_grad_ratio` = ‖λ∇term‖ / ‖∇CE‖ and their cosine. One
update's ratio is mostly sampling noise; `polychromic signal` separates the mean from it.
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

from polychromic import metrics
from polychromic.config import require
from polychromic.domains import Sampling
from polychromic.methods import Method, register
from polychromic.modeling import IGNORE_INDEX, prompt_text
from polychromic.objective import (
    REDUCTIONS,
    AdvantageScaler,
    Diversity,
    diversity_policy_loss,
    leave_one_out_advantages,
    set_advantages,
)
from polychromic.sampling import cut_at_stop, padded, sample_ids, stop_check, truncated_logprobs

log = logging.getLogger("polychromic")
METRICS = ("semantic", "bleu", "distinct")
OBJECTIVES = ("diversity", "set")
SCALINGS = ("running", "set", "none")


@dataclass
class PolychromicConfig:
    diversity_weight: float = field(default=0.3, metadata={"help": "λ, weight of the diversity "
                                                           "term (0: plain LoRA)"})
    n_generations: int = field(default=8, metadata={"help": "N, samples per prompt per update"})
    diversity_metric: str = field(default="semantic", metadata={"help": ", ".join(METRICS)})
    objective: str = field(default="diversity", metadata={
        "help": "'diversity': leave-one-out advantages of D; 'set': Hamid et al.'s "
                "mean reward x diversity over subsets"})
    advantage_scaling: str = field(default="running", metadata={
        "help": "running (RMS of earlier updates; unbiased direction), set (GRPO-style, "
                "biased), none"})
    set_size: int = field(default=2, metadata={"help": "subset size of the set objective"})
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
    distinct_n: int = field(default=2, metadata={"help": "n of the distinct metric"})
    eval_prompts: int = field(default=8, metadata={
        "help": "val prompts for eval/diversity (sampled like the training samples)"})
    eval_samples: int = field(default=4, metadata={"help": "samples per val prompt"})
    embedding_model: str = field(default="embedded:all-minilm-l6-v2",
                                 metadata={"help": "sentence-transformers model (semantic, set)"})
    collapse_below: float = field(default=0.1, metadata={"help": "warn: diversity collapse"})
    overfit_gap: float = field(default=0.3, metadata={"help": "warn: eval - train loss gap"})

    def check(self, key: str) -> None:
        require(self.diversity_weight >= 0, f"{key}.diversity_weight", "must be >= 0")
        require(self.n_generations >= 2, f"{key}.n_generations", "must be >= 2 (diversity "
                "needs a set)")
        require(self.diversity_metric in METRICS, f"{key}.diversity_metric",
                f"must be one of {METRICS}")
        require(self.objective in OBJECTIVES, f"{key}.objective", f"must be one of {OBJECTIVES}")
        require(self.advantage_scaling in SCALINGS, f"{key}.advantage_scaling",
                f"must be one of {SCALINGS}")
        require(self.logprob_reduction in REDUCTIONS, f"{key}.logprob_reduction",
                f"must be one of {REDUCTIONS}")
        # With 2 samples both LOO advantages are D(pair) - D(one sample): equal, so
        # standardising them within the set gives 0, on every step.
        require(self.advantage_scaling != "set" or self.n_generations >= 3,
                f"{key}.advantage_scaling",
                "'set' needs n_generations >= 3 (with 2 samples it gives zero gradient)")
        if self.objective == "set":  # one subset of N has advantage f(S) - mean f = 0
            require(2 <= self.set_size < self.n_generations, f"{key}.set_size",
                    "must be in [2, n_generations - 1] (set_size = n_generations leaves one "
                    "subset and zero gradient)")
        for name in ("generate_every", "prompts_per_step", "distinct_n", "eval_prompts",
                     "eval_samples"):
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


def set_diversity(metric: str, texts: list[str], vectors: np.ndarray | None,
                  distinct_n: int) -> Diversity:
    """D over subsets of `texts`. A subset with nothing to compare (one sample, no n-gram)
    has diversity 0 here: as a training reward, not as a reported metric."""
    def diversity(indices) -> float:
        chosen = [texts[i] for i in indices]
        if metric == "semantic":
            value = metrics.semantic_diversity(vectors[list(indices)])
        elif metric == "bleu":
            bleu = metrics.self_bleu(chosen)
            value = None if bleu is None else 1.0 - bleu
        else:
            value = metrics.distinct_n(chosen, distinct_n)
        return 0.0 if value is None else value
    return diversity


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


class PolychromicTrainer(Trainer):
    def __init__(self, *args, polychromic: PolychromicConfig, tokenizer, embedder=None,
                 checker=None, records: list[dict] = (), sampling: Sampling,
                 stop: tuple[str, ...] = (), eval_prompts: list[tuple[str, str]] = (),
                 **kwargs):
        """`checker` and `records`: the domain's checker and the train records (batches carry
        `record_index`), for the set objective's reward; `sampling`, `stop`: the domain's
        sampling settings (the section's own where it sets them) and stop strings;
        `eval_prompts`: (prompt, its chat-formatted text) pairs for eval/diversity."""
        super().__init__(*args, **kwargs)
        self.polychromic = polychromic
        self.tok = tokenizer
        self.embedder = embedder
        self.checker = checker
        self.train_records = list(records)
        self.sampling = polychromic.sampling(sampling)
        self.stop = tuple(stop)
        self.eval_prompts = list(eval_prompts)
        # the samples' draws; under DDP each process draws its own
        self.generator = torch.Generator().manual_seed(self.args.seed + self.args.process_index)
        if polychromic.objective == "set" and (checker is None or not self.train_records):
            raise ValueError("the set objective needs the domain's checker and the records")
        self.scaler = AdvantageScaler(polychromic.advantage_scaling)
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
        config = self.polychromic
        # The Trainer divides the loss by the accumulation steps itself unless the model's loss
        # was already normalised over the whole accumulated batch; match it for the new term.
        scaled = self.model_accepts_loss_kwargs and num_items_in_batch is not None
        accumulation = self.current_gradient_accumulation_steps if scaled else 1
        if not model.training:
            return out
        self.logged["quality_loss"].append(quality.item() * accumulation)
        if config.diversity_weight == 0 or self.state.global_step % config.generate_every:
            self.logged["combined_loss"].append(quality.item() * accumulation)
            return out
        term, score = self.diversity_term(model, inputs, record_index)
        combined = self.split_gradients(quality, config.diversity_weight * term / accumulation)
        self.logged["diversity_loss"].append(term.item())
        self.logged["diversity_score"].append(score)
        self.logged["combined_loss"].append(quality.item() * accumulation
                                             + config.diversity_weight * term.item())
        return (combined, out[1]) if return_outputs else combined

    def split_gradients(self, quality: torch.Tensor, diversity: torch.Tensor) -> torch.Tensor:
        """quality + diversity, whose backward gives the same gradient, after logging the two
        gradients' norms and cosine: each part is differentiated on its own (the two graphs
        share no forward pass, so this costs what one backward of the sum costs) and the
        result is a surrogate, linear in the weights, carrying their sum."""
        params = [p for p in self.model.parameters() if p.requires_grad]
        grads = [parameter_gradients(loss, params) for loss in (quality, diversity)]
        quality_grad, diversity_grad = (torch.cat([g.flatten() for g in gs]) for gs in grads)
        quality_norm = quality_grad.norm().item()
        self.logged["quality_grad_norm"].append(quality_norm)
        self.logged["diversity_grad_ratio"].append(diversity_grad.norm().item()
                                                   / max(quality_norm, 1e-12))
        self.logged["diversity_grad_cosine"].append(torch.nn.functional.cosine_similarity(
            quality_grad, diversity_grad, dim=0).item())
        surrogate = sum((p * (a + b)).sum() for p, a, b in zip(params, *grads, strict=True))
        return surrogate - surrogate.detach() + (quality + diversity).detach()

    def diversity_term(self, model, inputs, record_index=None) -> tuple[torch.Tensor, float]:
        config = self.polychromic
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
        """Each sample's (scaled) advantage, prompt-major, and the sets' mean diversity."""
        config = self.polychromic
        n = config.n_generations
        rewards = None
        if config.objective == "set":
            if record_index is None:
                raise ValueError("the set objective needs `record_index` in the batch")
            records = [self.train_records[int(i)] for i in record_index[:len(groups)]]
            rewards = self.checker.rewards(list(zip(records, groups, strict=True)))
        advantages, scores = [], []
        for p, group in enumerate(groups):
            vectors = self.embedder(group) if config.diversity_metric == "semantic" else None
            diversity = set_diversity(config.diversity_metric, group, vectors, config.distinct_n)
            scores.append(diversity(range(n)))
            if config.objective == "diversity":
                raw = leave_one_out_advantages(diversity, n)
            else:
                raw = set_advantages(diversity, rewards[p], config.set_size)
            advantages.append(self.scaler(raw) if config.advantage_scaling == "set" else raw)
        flat = np.concatenate(advantages)
        if config.advantage_scaling != "set":
            flat = self.scaler(flat)
        return flat, float(np.mean(scores))

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
            if score is not None and score < self.polychromic.collapse_below:
                self.flags["diversity_collapse"] = True
                log.warning("red flag: diversity collapse (train diversity_score %.3f < %.2f)",
                            score, self.polychromic.collapse_below)
        if "eval_loss" in logs:
            self.check_overfitting(logs["eval_loss"])
        super().log(logs, *args, **kwargs)

    def check_overfitting(self, eval_loss: float) -> None:
        previous, self.last_eval_loss = self.last_eval_loss, eval_loss
        train = self.last_train_loss
        if previous is None or train is None:
            return
        if eval_loss > previous and eval_loss - train > self.polychromic.overfit_gap:
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
        config = self.polychromic
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
        scores, table = [], defaultdict(list)
        for p, (prompt, _) in enumerate(self.eval_prompts):
            group = texts[p * k:(p + 1) * k]
            vectors = self.embedder(group) if config.diversity_metric == "semantic" else None
            scores.append(set_diversity(config.diversity_metric, group, vectors,
                                        config.distinct_n)(range(k)))
            for sample in group:
                table["step"].append(self.state.global_step)
                table["prompt"].append(prompt)
                table["sample"].append(sample)
        return float(np.mean(scores)), dict(table)

    def log_samples(self, table: dict[str, list]) -> None:
        import mlflow

        if mlflow.active_run() is not None:
            mlflow.log_table(table, artifact_file=f"samples/step_{self.state.global_step}.json")


def trainer_options(config: PolychromicConfig, params: dict, tokenizer, domain, train: list,
                    val: list) -> dict:
    """The Trainer's keyword arguments: its config, the embedder, the domain's checker (the
    set objective's reward), sampling settings and stop strings, the train records (batches
    carry `record_index`) and the eval/diversity prompts."""
    from polychromic.embedding import shared_embedder
    from polychromic.runtime import runtime_config

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


METHOD = register(Method(name="polychromic", trainer_class=lambda: PolychromicTrainer,
                         config=PolychromicConfig, options=trainer_options,
                         batch_fields=("record_index",)))
