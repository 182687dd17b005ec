"""Stage `train`: a LoRA adapter on a domain's train split, for one method and seed.

The method (`polychromic.methods`: `baseline` is standard LoRA, `polychromic` adds the
diversity term) builds the Trainer; everything around it is the same for every method. The
examples are the domain's prompts with each reference output as the target
(`training.encode_records`); val loss is on val examples. Settings: the `train` section, with
the domain's own values (`<domain>.train`) over it, and the method's own section.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import sys
import time
from dataclasses import asdict, fields
from pathlib import Path

from polychromic import checkpoints as resume
from polychromic import tracking
from polychromic.config import read_params, run_main, stage_help
from polychromic.domains import Checker, load_domain
from polychromic.io import at_precision, atomic_path
from polychromic.methods import (
    build_trainer,
    known_methods,
    method_config,
    method_options,
)
from polychromic.modeling import load_model, load_tokenizer
from polychromic.runtime import launched, relaunch, runtime_config
from polychromic.settings import TrainConfig, train_config
from polychromic.training import (
    TrainingCurves,
    add_lora,
    callbacks_for,
    encode_records,
    fix_schedule,
    read_records,
    save_adapter,
    training_arguments,
)


def final_val_loss(trainer) -> float:
    """Val loss of the adapter that is saved (the best one when early stopping loaded it):
    the evaluation logged at that adapter's step, or, when there was none, a new pass (its
    own prefix keeps it out of the eval/loss curve and away from early stopping)."""
    state = trainer.state
    step = state.global_step
    if trainer.args.load_best_model_at_end and state.best_model_checkpoint:
        step = resume.step_of(Path(state.best_model_checkpoint))
    logged = [entry["eval_loss"] for entry in state.log_history
              if "eval_loss" in entry and entry.get("step") == step]
    if logged:
        return logged[-1]
    from transformers import EarlyStoppingCallback

    trainer.remove_callback(EarlyStoppingCallback)
    return trainer.evaluate(metric_key_prefix="final")["final_loss"]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=stage_help(__doc__, (TrainConfig, "train")),
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--domain", required=True)
    parser.add_argument("--method", required=True, help=", ".join(known_methods()))
    parser.add_argument("--base", required=True, help="base model checkpoint directory")
    parser.add_argument("--data", required=True, help="directory with train.jsonl and val.jsonl")
    parser.add_argument("--out", required=True, help="adapter directory to write")
    parser.add_argument("--seed", type=int, required=True, help="one of params.yaml's seeds")
    parser.add_argument("--plots", help="DVCLive directory for training curves")
    parser.add_argument("--checkpoints", help="checkpoint directory (default: <out>.checkpoints)")
    args = parser.parse_args(argv)
    params = read_params()
    runtime = runtime_config(params)
    if runtime.processes > 1 and not launched():
        sys.exit(relaunch("polychromic.stages.train", runtime.processes,
                          sys.argv[1:] if argv is None else argv))
    config = train_config(params, args.domain)
    settings = method_config(args.method, params)  # an unknown method fails here, early
    domain = load_domain(args.domain, params)

    from transformers import set_seed

    set_seed(args.seed)
    tokenizer = load_tokenizer(args.base)
    train_path, val_path = Path(args.data, "train.jsonl"), Path(args.data, "val.jsonl")
    train, val = read_records(train_path), read_records(val_path)
    train_set = encode_records(train, domain, tokenizer, config.max_length, train_path)
    eval_set = encode_records(val, domain, tokenizer, config.max_length, val_path,
                              limit=config.eval_examples)
    # the processes that share each step (runtime.processes, or a launcher's own)
    fix_schedule(config, len(train_set), int(os.environ.get("WORLD_SIZE", "1")))
    logged = {"train": asdict(config) | {"seed": args.seed}}
    if fields(settings):
        logged[args.method] = asdict(settings)
    options = method_options(args.method, params, tokenizer, domain, train, val)
    model = add_lora(load_model(args.base, runtime=runtime), config.lora, args.seed)
    out = Path(args.out)
    checkpoints = Path(args.checkpoints or f"{args.out}.checkpoints")
    # Under `accelerate launch`/torchrun every process runs this; the main one cleans up,
    # resumes the same checkpoint as the others, and alone writes outputs and MLflow runs.
    arguments = training_arguments(config, checkpoints, args.seed, runtime)
    main_process = arguments.process_index == 0
    with arguments.main_process_first(desc="checkpoints"):
        for leftover in out.parent.glob(f".{out.name}.*"):  # io.atomic_path's, after a kill
            shutil.rmtree(leftover, ignore_errors=True)
        start_from = resume.resumable(checkpoints, run_fingerprint(
            args, params, logged, [train_path, val_path]))

    precision = runtime.mixed_precision()
    read = logged | tracking.declared(params, ["runtime"] + [
        f"{args.domain}.{key}" for key in ("train", "prompt", "sampling", "checker")])
    run = (tracking.mlflow_run("train", args.domain, args.method, read, seed=args.seed,
                               method=args.method, precision=precision,
                               tags=tracking.base_model_tags(args.base))
           if main_process else contextlib.nullcontext())
    with run:
        curves = TrainingCurves(args.plots, main_process)
        keeper = resume.CheckpointKeeper(checkpoints)
        trainer = build_trainer(args.method, model, arguments, train_set, eval_set,
                                [*callbacks_for(config, curves), keeper], options)
        keeper.trainer = trainer
        if start_from is not None:
            resume.load_method_state(trainer, start_from)
            print(f"{args.domain}/{args.method}: resuming from {start_from} "
                  f"(step {resume.step_of(start_from)})")
        started = time.perf_counter()
        result = trainer.train(resume_from_checkpoint=start_from and str(start_from))
        seconds = time.perf_counter() - started
        final = {"final_loss": final_val_loss(trainer)}
        for value in options.values():  # a checker may hold processes (code's sandbox)
            if isinstance(value, Checker):
                value.close()
        flags = getattr(trainer, "flags", {})
        # What identifies the adapter, and nothing that differs between identical runs (wall
        # time; a resumed run's loss over its own steps): those go to MLflow and stdout.
        best = trainer.state.best_model_checkpoint
        summary = {"eval_loss": final["final_loss"], "steps": trainer.state.global_step,
                   "best_step": best and resume.step_of(Path(best)),
                   "train_examples": len(train_set), "eval_examples": len(eval_set),
                   "epochs": round(trainer.state.epoch or 0.0, 2), "flags": flags,
                   "precision": precision}
        if not main_process:
            return
        tracking.log_metrics({"final/eval_loss": final["final_loss"],
                              "final/train_loss": result.training_loss,
                              "final/train_seconds": seconds,
                              **{f"flags.{k}": float(v) for k, v in flags.items()}})
        curves.finish({"final": {"eval_loss": final["final_loss"]},
                       "flags": {k: int(v) for k, v in flags.items()}, "precision": precision})
        with atomic_path(args.out) as tmp:
            save_adapter(trainer.model, tmp)
            (tmp / "train_summary.json").write_text(json.dumps(at_precision(summary), indent=2)
                                                    + "\n")
    shutil.rmtree(checkpoints, ignore_errors=True)
    print(f"{args.domain}/{args.method}: {json.dumps(summary)}; {seconds:.1f} s"
          + (f" from step {resume.step_of(start_from)}" if start_from else ""))


def run_fingerprint(args, params: dict, logged: dict, data: list[Path]) -> str:
    """What decides a train run, for checkpoints.resumable: its settings, the domain's
    params, the data, the base model's files (by size and time) and this package's code."""
    source = Path(__file__).resolve().parents[1]
    settings = {"domain": args.domain, "method": args.method, "seed": args.seed,
                "base": str(Path(args.base).resolve()), "logged": logged,
                "domain_params": params.get(args.domain), "base_model": params.get("base_model")}
    return resume.fingerprint(settings, [*data, *sorted(source.rglob("*.py"))],
                              sorted(p for p in Path(args.base).iterdir() if p.is_file()))


if __name__ == "__main__":
    run_main(main)
