"""Benchmark (not a test): the cost of the polychromic term on the default model and data.

1. Training wall time at equal steps: baseline LoRA vs polychromic (params.yaml's `train` and
   `polychromic` sections, evaluation and checkpoints off), mean seconds per step.
2. One polychromic diversity update (sampling, scoring, log-probabilities, backward) vs one
   step of TRL's GRPOTrainer doing the same sampling work (the same prompts per step x N
   samples x max new tokens, the same LoRA, a semantic-diversity reward), medians.

    polychromic bench --base models/base \
        --data data/processed/replies --steps 8 [--trl]

   With --sampling, also the generate stage's batched sampling (the domain's test-prompt
   count x generate.n samples, its sampling settings), in generated tokens per second.

   Each share of a peak is against the precision the run computes in (`runtime.precision`,
   `-S runtime.precision=bf16`); the output names the machine's best native precision
   (bf16 on a GPU from Ampere on and a CPU with avx512_bf16 or AMX, else fp32) and, where
   the run is in another, gives the training MFUs against that one's peak too.

   On a machine without the checkpoint (a GPU machine cut off from the hub), --random-weights
   builds the model of `--base`'s config.json with random weights, in --dtype: the costs
   per step are the model's, but its samples rarely end early, so sampling runs to
   max_new_tokens, the worst case. scripts/gpu_check.sh runs it that way.

3. With --sandbox (and nothing else): the code domain's sandbox, in programs per second with
   params.yaml's `code.checker` settings: MBPP's 427 reference solutions with all their
   tests, `--repeats` times, spread over the sandbox's workers.

    polychromic bench --sandbox --repeats 3

4. With --metrics GENERATIONS (and nothing else): the seconds of each evaluation metric of the
   evaluate stage on a generate stage's output (its domain from --domain), with the one-off
   loading of the embedding model apart: what an evaluate stage spends on each.

    polychromic bench --metrics \
        data/generations/replies/baseline/seed42.jsonl --domain replies

5. With --decode-steps STEPS (and nothing else): the sampler's prompt pass and its mean
   decode step on the domain's first --prompts dev prompts x generate.n samples, every row
   running every step (greedy, no end token), zero-shot or --few-shot (generate's examples
   for seed 42): the figure to compare two versions of `sampling.py` by, on the same prompts.

    polychromic bench --decode-steps 24 --domain code --few-shot \
        --prompts 10
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch
from transformers import TrainerCallback, set_seed

from polychromic import machine, metrics
from polychromic.config import load_section, override, read_params, run_main
from polychromic.domains import load_domain
from polychromic.methods import build_trainer, method_options
from polychromic.modeling import (
    PackCollator,
    PadCollator,
    cast_base_weights,
    causal_lm_loss,
    load_model,
    load_tokenizer,
    prompt_text,
)
from polychromic.runtime import Runtime, best_native_precision, runtime_config
from polychromic.sampling import sample_ids
from polychromic.settings import EvaluateConfig, GenerateConfig, TrainConfig, listed
from polychromic.training import add_lora, encode_records, read_records, training_arguments

PRECISION_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


def synchronize() -> None:
    """Wait for the GPU's queued work, so that a timer reads work done, not work queued."""
    if torch.cuda.is_available():
        torch.cuda.synchronize()


class StepTimer(TrainerCallback):
    def __init__(self):
        self.seconds: list[float] = []

    def on_step_begin(self, args, state, control, **kwargs):
        synchronize()
        self.started = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        synchronize()
        self.seconds.append(time.perf_counter() - self.started)


def model_loader(base: str, random_weights: bool, dtype: str, runtime: Runtime) -> Callable:
    """A function that returns the base model on `runtime`'s device: the checkpoint at
    `base`, or a model of its config.json with random weights (seeded) in `dtype`."""
    if not random_weights:
        return lambda: load_model(base, runtime=runtime)

    def build():
        from transformers import AutoConfig, AutoModelForCausalLM

        torch.manual_seed(0)
        # initialised where it runs: seconds, not minutes, at 8B
        with torch.device(runtime.model_device()):
            model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(base),
                                                     dtype=getattr(torch, dtype),
                                                     **runtime.attention_kwargs())
        if runtime.weights_dtype() is not None:  # as load_model stores them
            cast_base_weights(model, runtime.weights_dtype())
        return model
    return build


def steady(seconds: list[float]) -> float:
    """Median seconds per step, the first (warm-up) step left out."""
    return statistics.median(seconds[1:] if len(seconds) > 1 else seconds)


def mean_step(seconds: list[float]) -> float:
    """Mean seconds per step, the first (warm-up) step left out: with `generate_every` > 1
    only some steps sample, so the mean, not the median, is the cost per step."""
    return statistics.mean(seconds[1:] if len(seconds) > 1 else seconds)


def time_training(method, config, params, tokenizer, train_set, load, domain, records, steps):
    seed = listed(params, "seeds")[0]
    set_seed(seed)
    model = add_lora(load(), config.lora, seed)
    with tempfile.TemporaryDirectory() as out:
        args = training_arguments(config, Path(out), seed, runtime_config(params))
        args.max_steps, args.eval_strategy, args.save_strategy = steps, "no", "no"
        args.load_best_model_at_end, args.disable_tqdm = False, True
        options = method_options(method, params, tokenizer, domain, *records)
        timer = StepTimer()
        trainer = build_trainer(method, model, args, train_set, None, [timer], options)
        trainer.train()
    return mean_step(timer.seconds), trainer, model


def time_diversity_updates(trainer, model, train_set, tokenizer, repeats: int) -> float:
    collator = PackCollator(("record_index",))
    model.train()
    seconds = []
    for i in range(repeats + 1):
        batch = on_device(collator(train_set[i * 8:(i + 1) * 8]), model.device)
        index = batch.pop("record_index")
        synchronize()
        started = time.perf_counter()
        term, _ = trainer.sampled_term(model, batch, index)
        term.backward()
        synchronize()
        seconds.append(time.perf_counter() - started)
        model.zero_grad()
    return steady(seconds)


def measure_limits(device: torch.device, dtype: torch.dtype) -> dict:
    """This machine's limits where the model runs: matrix-product FLOP/s in the model's
    dtype and the bytes/s of reading memory (machine.py), on the threads the runs use."""
    return {"device": str(device), "threads": torch.get_num_threads(), "dtype": str(dtype),
            "matmul_flops": machine.matmul_peak(dtype=dtype, device=device),
            "read_bytes_per_second": machine.read_bandwidth(device=device)}


def giga(value):
    """Limits in GFLOP/s and GB/s, 1 decimal."""
    if isinstance(value, dict):
        return {k: giga(v) for k, v in value.items()}
    if isinstance(value, list):
        return [giga(v) for v in value]
    return round(value / 1e9, 1) if isinstance(value, float) else value


def higher_limits(before: dict, after: dict) -> dict:
    """The limits measured before and after the runs, the higher of each kept: a shared
    cloud CPU's speed drifts by tens of percent within minutes, and a ratio to the lower
    would flatter the runs."""
    return before | {key: max(before[key], after[key])
                     for key in ("matmul_flops", "read_bytes_per_second")} | {
        "measured": {key: [before[key], after[key]]
                     for key in ("matmul_flops", "read_bytes_per_second")}}


def on_device(batch: dict, device) -> dict:
    return {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}


def count_step_flops(model, train_set, pad_token_id: int, config: TrainConfig,
                     batches: int = 3) -> dict:
    """FLOPs of one LoRA training step as train.py runs it (forward and backward of
    `gradient_accumulation` packed batches), counted by PyTorch on `batches` batches drawn as
    a seeded shuffle draws them; and, for comparison, the same batches padded (PadCollator,
    logits everywhere: the layout before packing) and the share of their tokens that is
    not padding."""
    order = torch.randperm(len(train_set), generator=torch.Generator().manual_seed(0)).tolist()
    size = config.batch_size
    model.train()
    flops = {"packed": [], "padded": []}
    real = padded = 0
    for i in range(batches):
        features = [train_set[j] for j in order[i * size:(i + 1) * size]]
        layouts = (("packed", PackCollator()), ("padded", PadCollator(pad_token_id)))
        for layout, collator in layouts:
            batch = on_device(collator(features), model.device)
            labels = batch.pop("labels")
            flops[layout].append(machine.counted_flops(
                lambda b=batch, y=labels: causal_lm_loss(model(**b), y).backward()))
            model.zero_grad()
            if layout == "padded":
                real += int(batch["attention_mask"].sum())
                padded += batch["attention_mask"].numel()
    steps = {k: statistics.mean(v) * config.gradient_accumulation for k, v in flops.items()}
    return {"flops_per_step": steps["packed"], "padded_flops_per_step": steps["padded"],
            "padded_real_token_share": round(real / padded, 3)}


def count_update_flops(trainer, model, train_set) -> int:
    """FLOPs of one diversity update (sampling, log-probabilities and their backward) on
    the first batch, counted by PyTorch (the embedder's forward included)."""
    batch = on_device(PackCollator(("record_index",))(train_set[:8]), model.device)
    index = batch.pop("record_index")
    model.train()
    flops = machine.counted_flops(lambda: trainer.sampled_term(model, batch, index)[0].backward())
    model.zero_grad()
    return flops


def time_grpo(load, tokenizer, config, trainer, records, domain, steps):
    from datasets import Dataset
    from peft import LoraConfig
    from trl import GRPOConfig, GRPOTrainer

    polychromic, embedder = trainer.polychromic, trainer.embedder
    n = polychromic.n_generations

    def semantic_diversity_reward(prompts, completions, **kwargs):
        texts = [c[-1]["content"] if isinstance(c, list) else c for c in completions]
        vectors = embedder(texts)
        rewards = []
        for start in range(0, len(texts), n):  # TRL puts a prompt's N samples side by side
            group = vectors[start:start + n]
            distance = 1.0 - group @ group.T
            rewards += (distance.sum(1) / (len(group) - 1)).tolist()
        return rewards

    lora = config.lora
    prompts = [domain.messages(r) for r in records[:64]]
    timer = StepTimer()
    with tempfile.TemporaryDirectory() as out:
        args = GRPOConfig(
            output_dir=out, max_steps=steps, learning_rate=config.learning_rate,
            per_device_train_batch_size=polychromic.prompts_per_step * n, num_generations=n,
            max_completion_length=trainer.sampling.max_new_tokens,
            temperature=trainer.sampling.temperature, top_p=trainer.sampling.top_p,
            top_k=trainer.sampling.top_k,
            report_to=[], logging_steps=1000, save_strategy="no", disable_tqdm=True,
            seed=trainer.args.seed, beta=0.0, bf16=False, use_cpu=not torch.cuda.is_available())
        trainer = GRPOTrainer(
            model=load(), reward_funcs=semantic_diversity_reward, args=args,
            train_dataset=Dataset.from_dict({"prompt": prompts}), processing_class=tokenizer,
            peft_config=LoraConfig(r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout,
                                   target_modules=lora.target_modules, task_type="CAUSAL_LM"),
            callbacks=[timer])
        trainer.train()
    return steady(timer.seconds)


def time_sampling(model, tokenizer, domain, records, n: int, batch_prompts: int,
                  limits: dict | None = None) -> dict:
    """The generate stage's sampling: the domain's dev-prompt count (from `records`) x n
    samples, `batch_prompts` prompts per batch, after one warm-up batch; with the machine's
    `limits`, also the roofline of the same batches (machine.sampling_bound_seconds)."""
    settings = domain.sampling
    texts = [prompt_text(tokenizer, domain.messages(r), domain.assistant_prefix(r))
             for r in records[:settings.prompts]]
    tokenizer.padding_side = "left"
    generator = torch.Generator().manual_seed(0)

    def run(batch: list[str]) -> tuple[int, int, list[int]]:
        """The batch's prompts, padded width and sample lengths (new tokens)."""
        encoded = tokenizer(batch, return_tensors="pt", padding=True,
                            add_special_tokens=False).to(model.device)
        ids = sample_ids(model, encoded["input_ids"], encoded["attention_mask"], n,
                         temperature=settings.temperature, top_k=settings.top_k,
                         top_p=settings.top_p, max_new_tokens=settings.max_new_tokens,
                         eos_token_id=tokenizer.eos_token_id, generator=generator)
        return len(batch), encoded["input_ids"].shape[1], [len(row) for row in ids]

    model.eval()
    run(texts[:batch_prompts])
    synchronize()
    started = time.perf_counter()
    batches = [run(texts[start:start + batch_prompts])
               for start in range(0, len(texts), batch_prompts)]
    synchronize()
    seconds = time.perf_counter() - started
    tokens = sum(sum(lengths) for _, _, lengths in batches)
    result = {"prompts": len(texts), "samples": len(texts) * n, "tokens": tokens,
              "batch_rows": min(batch_prompts, len(texts)) * n,
              "seconds": round(seconds, 2), "tokens_per_second": round(tokens / seconds, 1)}
    if limits:
        shape = machine.DecodeShape.of(model)
        bound = sum(machine.sampling_bound_seconds(shape, *batch, limits["matmul_flops"],
                                                   limits["read_bytes_per_second"])
                    for batch in batches)
        result |= {"roofline_tokens_per_second": round(tokens / bound, 1),
                   "share_of_roofline": round(bound / seconds, 3)}
    return result


def time_sandbox(params: dict, repeats: int) -> dict:
    domain = load_domain("code", params)
    records = [r for split in domain.load_splits().values() for r in split]
    items = [(r, [r["references"][0]]) for r in records] * repeats
    with domain.checker([]) as checker:
        checker.verdicts(items[:16])  # start-up and first imports, not measured
        started = time.perf_counter()
        verdicts = checker.verdicts(items)
        seconds = time.perf_counter() - started
        workers, mode = len(checker.sandbox.workers), checker.sandbox.mode
    return {"programs": len(items), "seconds": round(seconds, 1), "workers": workers,
            "isolation": mode, "programs_per_second": round(len(items) / seconds, 1),
            "passed": sum(v.passed for [v] in verdicts)}


def timed(run: Callable[[], object]) -> float:
    started = time.perf_counter()
    run()
    return time.perf_counter() - started


def time_metrics(params: dict, domain_name: str, data: str, generations: str) -> dict:
    """Seconds of each evaluation metric over a generations file (the evaluate stage's
    metrics, with evaluate's settings), and of loading the models they need."""
    from polychromic.domains import RECORD_FIELDS
    from polychromic.embedding import Embedder, model_directory
    from polychromic.io import read_jsonl

    settings = load_section(EvaluateConfig, params, "evaluate")
    encoder, order = settings.embedding_model, settings.self_bleu_order
    domain = load_domain(domain_name, params)
    rows = read_jsonl(generations, {"id": str, "samples": list, "references": list})
    samples = [row["samples"] for row in rows]
    count = sum(len(s) for s in samples)
    started = time.perf_counter()
    embed = Embedder(encoder, "evaluate.embedding_model")
    seconds = {"load embedding model": time.perf_counter() - started}
    seconds["embed (semantic diversity)"] = timed(
        lambda: embed([s for row in samples for s in row]))
    started = time.perf_counter()
    independent = Embedder(settings.independent_model, "evaluate.independent_model")
    seconds["load independent encoder"] = time.perf_counter() - started
    seconds["embed (semantic_independent)"] = timed(
        lambda: independent([s for row in samples for s in row]))
    seconds["self_bleu"] = timed(lambda: [metrics.self_bleu(s, order) for s in samples])
    seconds["distinct_1/2/3"] = timed(lambda: [metrics.distinct_n(s, n) for s in samples
                                               for n in (1, 2, 3)])
    if {"rouge_1", "rouge_2", "rouge_l"} & set(domain.quality_metrics):
        seconds["rouge (first sample)"] = timed(
            lambda: [metrics.rouge(row["samples"][0], row["references"]) for row in rows])
    if "bertscore_f1" in domain.quality_metrics:
        directory = model_directory(settings.bertscore_model, "evaluate.bertscore_model")
        seconds["bertscore (first sample, loads its model)"] = timed(
            lambda: metrics.bertscore_f1([row["samples"][0] for row in rows],
                                         [row["references"] for row in rows], directory,
                                         settings.bertscore_layers))
    records = {r["id"]: r for r in read_jsonl(Path(data, "dev.jsonl"), RECORD_FIELDS)}
    with domain.checker(read_jsonl(Path(data, "val.jsonl"), RECORD_FIELDS)) as checker:
        seconds["checker verdicts"] = timed(lambda: checker.verdicts(
            [(records[row["id"]], row["samples"]) for row in rows]))
        seconds["checker classes"] = timed(lambda: checker.classes(
            [(records[row["id"]], row["samples"]) for row in rows]))
    return {"generations": generations, "prompts": len(rows), "samples": count,
            "seconds": {name: round(value, 2) for name, value in seconds.items()},
            "total_seconds": round(sum(seconds.values()), 1)}


def time_decode_steps(params: dict, base: str, domain_name: str, data: str, prompts: int,
                      few_shot: bool, steps: int, repeats: int = 2) -> dict:
    """Seconds of the prompt pass and of one decode step (the mean over `steps`), each the
    best of `repeats`: `sampling.decode` for 1 and for steps + 1 new tokens, so that the
    figure means the same for any version of the sampler."""
    from polychromic.domains import RECORD_FIELDS, few_shot_examples
    from polychromic.io import read_jsonl
    from polychromic.sampling import decode

    generate = load_section(GenerateConfig, params, "generate")
    n, shots = generate.n, generate.few_shot_examples
    domain = load_domain(domain_name, params)
    examples = []
    if few_shot:  # generate's draw for seed 42
        examples = few_shot_examples(read_jsonl(Path(data, "fewshot.jsonl"), RECORD_FIELDS),
                                     shots, 42)
    records = read_jsonl(Path(data, "dev.jsonl"), RECORD_FIELDS)[:prompts]
    tokenizer = load_tokenizer(base)
    tokenizer.padding_side = "left"
    runtime = runtime_config(params)
    model = load_model(base, None, runtime).eval()
    texts = [prompt_text(tokenizer, domain.messages(r, examples), domain.assistant_prefix(r))
             for r in records]
    encoded = tokenizer(texts, return_tensors="pt", padding=True,
                        add_special_tokens=False).to(model.device)
    ids, mask = encoded["input_ids"], encoded["attention_mask"]

    def greedy(logits: torch.Tensor, rows: list[int]) -> torch.Tensor:
        return logits.argmax(-1)

    def seconds(new_tokens: int) -> float:
        synchronize()
        started = time.perf_counter()
        decode(model, ids, mask, n, greedy, new_tokens, eos_token_id=-1)
        synchronize()
        return time.perf_counter() - started

    passes, step_seconds = [], []
    with runtime.autocast():
        for _ in range(repeats):  # the prompt pass (and one draw), then it and the steps
            passes.append(seconds(1))
            step_seconds.append((seconds(steps + 1) - passes[-1]) / steps)
    return {"domain": domain_name, "system": "few_shot" if few_shot else "zero_shot",
            "prompts": len(texts), "samples_per_prompt": n, "prompt_width": ids.shape[1],
            "steps": steps, "prompt_pass_seconds": round(min(passes), 2),
            "decode_step_ms": round(1000 * min(step_seconds), 1)}


def bench_training(args, params: dict) -> dict:
    """The training and sampling figures (the default mode), as one JSON object."""
    config = load_section(TrainConfig, params, "train")
    domain = load_domain(args.domain, params)
    torch.manual_seed(0)
    tokenizer = load_tokenizer(args.base)
    train_path = Path(args.data, "train.jsonl")
    records = (read_records(train_path), read_records(Path(args.data, "val.jsonl")))
    train_set = encode_records(records[0], domain, tokenizer, config.max_length, train_path)

    runtime = runtime_config(params)
    # the dtype the matrix products run in: autocast's where it is on, else the weights'
    compute = {"bf16": "bfloat16", "fp16": "float16"}.get(runtime.mixed_precision(), args.dtype)
    where = (torch.device(runtime.model_device()), getattr(torch, compute))
    best = best_native_precision(runtime.model_device())
    limits = measure_limits(*where)
    load = model_loader(args.base, args.random_weights, args.dtype, runtime)
    common = (config, params, tokenizer, train_set, load, domain, records, args.steps)
    baseline, _, _ = time_training("baseline", *common)
    polychromic, trainer, model = time_training("polychromic", *common)
    update = time_diversity_updates(trainer, model, train_set, tokenizer, repeats=5)
    step = count_step_flops(model, train_set, tokenizer.pad_token_id, config)
    update_flops = count_update_flops(trainer, model, train_set)
    limits = higher_limits(limits, measure_limits(*where))
    peak, every = limits["matmul_flops"], trainer.polychromic.generate_every
    device = (torch.cuda.get_device_name() if torch.cuda.is_available()
              else f"cpu x{torch.get_num_threads()}")
    result = {"device": device, "weights": "random" if args.random_weights else "checkpoint",
              "runtime": {"precision": runtime.mixed_precision(), "tf32": runtime.tf32,
                          "gradient_checkpointing": runtime.gradient_checkpointing,
                          "attention": runtime.attention},
              "dtype": str(model.dtype).removeprefix("torch."),
              "parameters": sum(p.numel() for p in model.parameters()),
              "steps": args.steps, "batch_size": config.batch_size,
              "mean_example_tokens": round(statistics.mean(
                  len(example["input_ids"]) for example in train_set), 1),
              "baseline_seconds_per_step": round(baseline, 2),
              "polychromic_seconds_per_step": round(polychromic, 2),
              "polychromic_over_baseline": round(polychromic / baseline, 2),
              "diversity_update_seconds": round(update, 2),
              "limits": giga(limits),  # GFLOP/s, GB/s
              "training": {"gflop_per_lora_step": round(step["flops_per_step"] / 1e9, 1),
                           "gflop_per_diversity_update": round(update_flops / 1e9, 1),
                           "gflop_per_padded_lora_step": round(
                               step["padded_flops_per_step"] / 1e9, 1),
                           "padded_real_token_share": step["padded_real_token_share"],
                           "lora_mfu": round(step["flops_per_step"] / baseline / peak, 3),
                           "polychromic_mfu": round((step["flops_per_step"] + update_flops
                                                     / every) / polychromic / peak, 3),
                           "diversity_update_mfu": round(update_flops / update / peak, 3)},
              "polychromic": {k: getattr(trainer.polychromic, k) for k in (
                  "n_generations", "prompts_per_step", "generate_every", "diversity_metric")}
              | {"max_new_tokens": trainer.sampling.max_new_tokens}}
    # Against the peak of the machine's best native precision too, where the run is in
    # another: an MFU against fp32's peak hides the 4x of a CPU with native bf16.
    result["best_native_precision"] = best
    if PRECISION_DTYPES[best] != where[1]:
        best_peak = max(machine.matmul_peak(dtype=PRECISION_DTYPES[best], device=where[0])
                        for _ in range(2))
        result["against_best_native"] = {
            "precision": best, "matmul_gflops": round(best_peak / 1e9, 1),
            **{name: round(value * peak / best_peak, 3) for name, value
               in result["training"].items() if name.endswith("_mfu")}}
    if args.sampling:
        generate = load_section(GenerateConfig, params, "generate")
        # the generate stage's model: the base, or a trained system's with its adapter
        # merged (the same shape); not the trainer's, whose adapter is a layer apart
        with runtime.autocast():
            result["sampling"] = time_sampling(load(), tokenizer, domain, records[1],
                                               generate.n, generate.batch_prompts,
                                               limits)
    if torch.cuda.is_available():
        result["peak_gpu_memory_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 1)
    if args.trl:
        grpo = time_grpo(load, tokenizer, config, trainer, records[0], domain,
                         min(args.steps, 6))
        result["trl_grpo_seconds_per_step"] = round(grpo, 2)
        result["diversity_update_over_grpo_step"] = round(update / grpo, 2)
    return result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--base", default="models/base")
    parser.add_argument("--data", help="the domain's prepared splits (default: "
                        "data/processed/<domain>)")
    parser.add_argument("--domain", default="replies")
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--trl", action="store_true", help="also time TRL's GRPOTrainer")
    parser.add_argument("--sampling", action="store_true",
                        help="also time the generate stage's batched sampling")
    parser.add_argument("--random-weights", action="store_true",
                        help="random weights of --base's config.json (no checkpoint needed)")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"],
                        help="--random-weights: the weights' dtype")
    parser.add_argument("--sandbox", action="store_true",
                        help="time the code domain's sandbox instead (programs per second)")
    parser.add_argument("--repeats", type=int, default=3, help="--sandbox: passes over MBPP")
    parser.add_argument("--metrics", metavar="GENERATIONS",
                        help="time the evaluation metrics on this generations file instead")
    parser.add_argument("--decode-steps", type=int, metavar="STEPS",
                        help="time the sampler's prompt pass and decode steps instead")
    parser.add_argument("--prompts", type=int, default=20, help="--decode-steps: prompts")
    parser.add_argument("--few-shot", action="store_true",
                        help="--decode-steps: few-shot prompts (else zero-shot)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a params.yaml value for this benchmark")
    args = parser.parse_args(argv)
    args.data = args.data or f"data/processed/{args.domain}"
    params = read_params()
    for assignment in args.set:
        override(params, assignment)
    if args.sandbox:
        print(json.dumps(time_sandbox(params, args.repeats), indent=2))
        return
    if args.metrics:
        print(json.dumps(time_metrics(params, args.domain, args.data, args.metrics), indent=2))
        return
    if args.decode_steps:
        print(json.dumps(time_decode_steps(params, args.base, args.domain, args.data,
                                           args.prompts, args.few_shot, args.decode_steps)))
        return
    # stdout holds the JSON alone: the Trainer prints its own summaries, sent to stderr
    with contextlib.redirect_stdout(sys.stderr):
        result = bench_training(args, params)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    run_main(main)
