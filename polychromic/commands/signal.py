"""Command (not a stage): how strong a method's sampled term's gradient is next to the
cross-entropy's (the polychromic diversity term by default; `--method` any method with a
sampled term: quality_diversity, set_objective, passk).

On fixed training batches of a domain, made by the trainer's own collator, with a fresh LoRA
(the first of params.yaml's `seeds`) and the method's trainer's own code (sampling,
advantages, log-probabilities), it takes the cross-entropy gradient g_CE of each batch once
and the term's gradient g_d = ∇(λ·term) from K independent draws of samples, and reports
per batch:

- signal: ‖E[g_d]‖, estimated without the upward bias that noise gives ‖mean_d g_d‖ (the
  mean over pairs d ≠ e of g_d · g_e is unbiased for ‖E[g_d]‖²);
- noise: the per-update standard deviation, sqrt(trace Cov[g_d]);
- signal / ‖g_CE‖ and noise / ‖g_CE‖, the per-update signal-to-noise (signal / noise), the
  cosine between mean_d g_d and g_CE, and the seconds per diversity update.

Dropout is off for both (the trainer samples and scores without it). With `running`
advantage scaling the scale is calibrated first on draws that are not measured, as in
training, and then held fixed.

    polychromic signal --domain replies [--method polychromic] [--batches 2] [--draws 8] \
        [--set polychromic.diversity_weight=1.0 ...] [--out FILE]
    polychromic signal --table metrics/signal/*.json [--into docs/objectives.md]

A training step's cost (`s per step`) is the cross-entropy's forward and backward plus the
term's update spread over `generate_every` steps, both timed in the same run. The table of
docs/objectives.md is rendered from the committed results (metrics/signal/), never typed.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from polychromic.config import UserError, override, read_params, run_main
from polychromic.domains import load_domain
from polychromic.io import write_json
from polychromic.methods import build_trainer, method_options
from polychromic.modeling import load_model, load_tokenizer
from polychromic.objective import AdvantageScaler
from polychromic.results import replace_block
from polychromic.runtime import runtime_config
from polychromic.sampled_term import batch_examples, parameter_gradients
from polychromic.settings import listed, train_config
from polychromic.tables import md_table
from polychromic.training import (
    add_lora,
    encode_records,
    fix_schedule,
    read_records,
    training_arguments,
)


def gradient_signal(draws: torch.Tensor) -> tuple[float, float]:
    """(‖E[g]‖, sqrt(trace Cov[g])) from K >= 2 independent draws g_d (rows of `draws`).

    Σ_{d≠e} g_d·g_e / (K(K-1)) is unbiased for ‖E[g]‖² (independent draws); it can come out
    negative when the mean is small next to the noise, and then the signal is reported as 0.
    """
    k = draws.shape[0]
    if k < 2:
        raise ValueError("needs at least two draws")
    draws = draws.double()
    total = draws.sum(0)
    pairs = (total @ total - (draws * draws).sum()) / (k * (k - 1))
    noise = ((draws - draws.mean(0)) ** 2).sum() / (k - 1)
    return float(pairs.clamp(min=0).sqrt()), float(noise.sqrt())


def flat_gradient(loss: torch.Tensor, params: list[torch.Tensor]) -> torch.Tensor:
    return torch.cat([g.flatten() for g in parameter_gradients(loss, params)])


def calibrate(trainer, batches: list[dict], draws: int) -> None:
    """Hold the running advantage scale at the RMS of `draws` unmeasured updates' raw
    advantages (training's scale is a running RMS of earlier updates)."""
    if trainer.term.advantage_scaling != "running":
        return
    raw, trainer.scaler = [], AdvantageScaler("none")
    n = trainer.term.n_generations
    for d in range(draws):
        batch = batches[d % len(batches)]
        rows = min(trainer.term.prompts_per_step, sum(1 for _ in batch_examples(batch)))
        ids, mask = trainer.batch_prompts(batch, rows)
        completions, _ = trainer.sample(trainer.model.eval(), ids, mask, n)  # no grad inside
        texts = trainer.decode(completions)
        flat, _ = trainer.advantages([texts[p * n:(p + 1) * n] for p in range(rows)],
                                     batch.get("record_index"))
        raw.append(float(np.mean(flat ** 2)))
    if not any(raw):  # e.g. no sample passes: measured as training starts, mostly zeros
        print("warning: every calibration draw had zero advantages (no signal on these "
              "batches yet); measured with the scale training starts with", file=sys.stderr)
        trainer.scaler = AdvantageScaler("running")
        return
    trainer.scaler = AdvantageScaler("running", momentum=1.0)  # momentum 1: held fixed
    trainer.scaler.running_ms = float(np.mean(raw))


def measure(trainer, batches: list[dict], draws: int, weight: float) -> list[dict]:
    model = trainer.model
    params = [p for p in model.parameters() if p.requires_grad]
    results = []
    for batch in batches:
        inputs = {k: v for k, v in batch.items() if k != "record_index"}
        model.eval()
        started = time.perf_counter()
        quality = flat_gradient(trainer.compute_loss(model, inputs), params)
        ce_seconds = time.perf_counter() - started
        samples, seconds = [], []
        for _ in range(draws):
            started = time.perf_counter()
            term, _ = trainer.sampled_term(model, inputs, batch.get("record_index"))
            samples.append(flat_gradient(weight * term, params))
            seconds.append(time.perf_counter() - started)
        stacked = torch.stack(samples)
        signal, noise = gradient_signal(stacked)
        norm = float(quality.norm())
        results.append({
            "ce_grad_norm": norm, "signal": signal, "noise": noise,
            "signal_over_ce": signal / norm, "noise_over_ce": noise / norm,
            # no gradient in any draw: no signal, and no noise to divide by
            "signal_to_noise": signal / noise if noise > 0 else 0.0 if signal == 0
            else float("inf"),
            "cosine_mean_to_ce": float(torch.nn.functional.cosine_similarity(
                stacked.mean(0), quality, dim=0)),
            "seconds_per_update": float(np.median(seconds)), "ce_seconds": ce_seconds})
    return results


COLUMNS = [("signal_over_ce", "‖E[w∇term]‖ / ‖∇CE‖", 2),
           ("noise_over_ce", "noise / ‖∇CE‖", 2),
           ("signal_to_noise", "signal / noise per update", 2),
           ("cosine_mean_to_ce", "cosine(mean, ∇CE)", 2),
           ("seconds_per_update", "s per update", 1),
           ("ce_seconds", "LoRA's s per step", 2),  # the cross-entropy's pass alone
           ("seconds_per_step", "s per step", 2)]


def read_result(path: Path) -> dict:
    try:
        result = json.loads(path.read_text(encoding="utf-8"))
        missing = [key for key, _, _ in COLUMNS if key not in result["mean"]]
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise UserError(f"{path}: not a result of `polychromic signal --out` ({err})") from None
    if missing or "weight" not in result:
        raise UserError(f"{path}: lacks {', '.join(missing) or 'weight'} (measured before "
                        "they were recorded: measure again)")
    return result


def table(results: list[dict]) -> str:
    """Markdown: a row per result, by domain then method, its settings beside it."""
    head = ["domain", "method", "weight", "draws", *(title for _, title, _ in COLUMNS),
            "updates per run"]
    rows = [[r["domain"], r["method"], f"{r['weight']:g}", f"{r['batches']} × {r['draws']}",
             *(f"{r['mean'][key]:.{digits}f}" for key, _, digits in COLUMNS),
             str(r["updates_per_run"])]
            for r in sorted(results, key=lambda r: (r["domain"], r["method"]))]
    return md_table(head, rows, "l" * 4 + "r" * (len(COLUMNS) + 1)) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--domain", default="replies")
    parser.add_argument("--method", default="polychromic",
                        help="a method with a sampled term (its params section's settings)")
    parser.add_argument("--base", default="models/base")
    parser.add_argument("--data", help="default: data/processed/<domain>")
    parser.add_argument("--batches", type=int, default=2, help="fixed training batches")
    parser.add_argument("--draws", type=int, default=8, help="diversity draws per batch (>= 2)")
    parser.add_argument("--calibration", type=int, default=4,
                        help="unmeasured draws that set the running advantage scale")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a params.yaml value for this measurement")
    parser.add_argument("--out", help="write the result as JSON here")
    parser.add_argument("--table", nargs="+", metavar="JSON",
                        help="measure nothing: the table of these results (--out files)")
    parser.add_argument("--into", metavar="MARKDOWN",
                        help="with --table: put it between the file's results markers")
    args = parser.parse_args(argv)
    if args.table:
        rendered = table([read_result(Path(path)) for path in args.table])
        if args.into:
            page = Path(args.into)
            page.write_text(replace_block(page.read_text(encoding="utf-8"), rendered,
                                          args.into), encoding="utf-8")
        print(rendered, end="")
        return
    if args.draws < 2 or args.batches < 1:
        raise UserError("--draws must be >= 2 and --batches >= 1")
    params = read_params()
    for assignment in args.set:
        override(params, assignment)
    config = train_config(params, args.domain)
    domain = load_domain(args.domain, params)
    data = Path(args.data or f"data/processed/{args.domain}")
    tokenizer = load_tokenizer(args.base)
    train, val = read_records(data / "train.jsonl"), read_records(data / "val.jsonl")
    examples = encode_records(train, domain, tokenizer, config.max_length, data / "train.jsonl")
    fix_schedule(config, len(examples))
    options = method_options(args.method, params, tokenizer, domain, train, val)
    term = options.get("term")
    if term is None:
        raise UserError(f"--method {args.method}: a method without a sampled term")
    weight = term.term_weight
    if weight == 0:
        raise UserError(f"{args.method}: its weight is 0: there is no term")
    seed = listed(params, "seeds")[0]
    torch.manual_seed(seed)
    runtime = runtime_config(params)
    model = add_lora(load_model(args.base, runtime=runtime), config.lora, seed)
    order = np.random.default_rng(seed).permutation(len(examples))
    size = config.batch_size
    if len(examples) < size * args.batches:
        raise UserError(f"{data}: {len(examples)} training examples, fewer than "
                        f"--batches x train.batch_size = {size * args.batches}")
    with tempfile.TemporaryDirectory() as out:
        arguments = training_arguments(config, Path(out), seed, runtime)
        arguments.eval_strategy, arguments.save_strategy = "no", "no"
        arguments.load_best_model_at_end = False
        trainer = build_trainer(args.method, model, arguments, examples, None, [], options)
        # the batches as training makes them: the trainer's own collator
        batches = [trainer.data_collator([examples[i] for i in order[b * size:(b + 1) * size]])
                   for b in range(args.batches)]
        calibrate(trainer, batches, args.calibration)
        per_batch = measure(trainer, batches, args.draws, weight)
    if options.get("checker") is not None:
        options["checker"].close()
    mean = {key: float(np.mean([b[key] for b in per_batch])) for key in per_batch[0]}
    # a training step's cost: the cross-entropy's forward and backward, and the term's
    # update every generate_every steps
    mean["seconds_per_step"] = mean["ce_seconds"] + mean["seconds_per_update"] / term.generate_every
    sampling = trainer.sampling
    result = {"domain": args.domain, "method": args.method, "weight": weight,
              "draws": args.draws,
              "batches": args.batches, "batch_size": size, "mean": mean, "per_batch": per_batch,
              "updates_per_run": -(-config.max_steps // term.generate_every),
              "settings": {f.name: getattr(term, f.name) for f in dataclasses.fields(term)
                           if f.name not in ("temperature", "top_k", "top_p", "max_new_tokens",
                                             "eval_prompts", "eval_samples", "collapse_below",
                                             "overfit_gap", "embedding_model")}
              | {k: getattr(sampling, k) for k in ("temperature", "top_k", "top_p",
                                                   "max_new_tokens")}
              | {"max_grad_norm": config.max_grad_norm}}
    print(json.dumps(result, indent=2))
    if args.out:
        write_json(args.out, result)


if __name__ == "__main__":
    run_main(main)
