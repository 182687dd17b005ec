"""Stage `generate`: n sampled answers per test prompt for one system.

Systems: `zero_shot` (base model, the domain's prompt), `few_shot` (base model, the prompt
after k worked examples drawn once from the domain's few-shot pool with the seed), and a
trained method (base model + its LoRA adapter, the prompt as in training). The domain owns
the prompt format and the sampling settings (params `<domain>.sampling`); up to
`batch_prompts` prompts and their n samples are sampled together (fewer when their cache
would pass `cache_gb`), each prompt encoded once (`sampling.py`). Each row also records the
reference outputs' log-likelihood under the system (for their perplexity).

With --frontier (the protocol's frontiers and its val grid), one system is sampled at every
temperature of params.yaml's `frontier.temperatures` (or every adapter scale of
`frontier.adapter_scales`) in one process, each point to its own file in the --out folder,
`temperature-<t>.jsonl` (`adapter_scale-<s>.jsonl`): the same rows as one run per point,
without loading the model (and the Python stack) again for each.

With `runtime.processes` N > 1 the stage runs as N processes under torch.distributed.run, one
per GPU: the batches of prompts (planned as one process plans them, each with its own seed)
are dealt out in turn, and the main process gathers the rows and writes them, so the file is
the one a single process writes (tests/integration/test_generate_processes.py).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

from polychromic.config import UserError, load_section, read_params, require, run_main, stage_help
from polychromic.domains import RECORD_FIELDS, Domain, Record, few_shot_examples, load_domain
from polychromic.io import atomic_path, read_jsonl, write_jsonl
from polychromic.modeling import load_model, load_tokenizer, prompt_text
from polychromic.protocol import SPLITS_ANSWERED, split_path
from polychromic.runtime import launched, relaunch, runtime_config
from polychromic.sampling import full_attention_only, sample_and_score
from polychromic.settings import EvaluateConfig, FrontierConfig, GenerateConfig

PROMPTED = ("zero_shot", "few_shot")
KNOBS = ("temperature", "adapter_scale")  # what --frontier sweeps
# The runtime keys this stage reads. dvc.yaml tracks all but `processes`: N processes write
# the samples of one (tests/integration/test_generate_processes.py), so changing it reruns
# nothing.
RUNTIME_KEYS = ("device", "precision", "tf32", "quantization", "attention", "processes")
UNTRACKED_PARAMS = ("runtime.processes",)


def log_runs(args: argparse.Namespace, params: dict, written: dict[Path, list[dict]],
             seconds: dict[Path, float], precision: str) -> None:
    """One MLflow run per point sampled: the params read, where it was sampled (split,
    temperature, adapter scale), the base model, and how long it took."""
    from polychromic import tracking

    read = tracking.declared(params, ["generate", "evaluate.ks",
                                      *(f"runtime.{key}" for key in RUNTIME_KEYS),
                                      f"{args.domain}.prompt", f"{args.domain}.sampling"])
    for out, rows in written.items():
        point = {"split": args.split, "temperature": rows[0]["temperature"] if rows else None,
                 "adapter_scale": rows[0]["adapter_scale"] if rows else None,
                 "adapter": args.adapter or ""}
        with tracking.mlflow_run("generate", args.domain, args.system, read | {"point": point},
                                 seed=args.seed, precision=precision,
                                 method=args.system if args.adapter else "",
                                 tags=tracking.base_model_tags(args.base)):
            samples = sum(len(r["samples"]) for r in rows)
            tracking.log_metrics({"prompts": len(rows), "samples": samples,
                                  "seconds": seconds[out],
                                  "samples_per_second": samples / max(seconds[out], 1e-9)})


def matched_temperature(path: Path) -> float:
    """The temperature a match stage's file gives."""
    try:
        value = json.loads(path.read_text(encoding="utf-8"))["temperature"]
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise UserError(f"{path}: no matched temperature ({err})") from None
    if not isinstance(value, int | float) or isinstance(value, bool):
        raise UserError(f"{path}: 'temperature' must be a number, not {value!r}")
    return float(value)



def cache_bytes_per_token(model) -> int:
    """KV-cache bytes of one token of one sample."""
    config = model.config.get_text_config(decoder=True)
    heads = getattr(config, "num_key_value_heads", None) or config.num_attention_heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    return 2 * config.num_hidden_layers * heads * head_dim * model.dtype.itemsize


def batches(prompt_lengths: list[int], new_tokens: int, limit: int, samples: int,
            budget: float, shared: bool = True) -> list[range]:
    """Consecutive prompts per batch: at most `limit`, and while the batch's cache stays
    within `budget` tokens (at least one prompt per batch). Shared (`SharedPromptLayer`):
    each prompt's keys once, padded to the batch's longest, and each sample's new tokens;
    otherwise every sample holds the longest prompt and its new tokens."""
    def cache_tokens(prompts: int, width: int) -> int:
        if shared:
            return prompts * width + prompts * samples * new_tokens
        return prompts * samples * (width + new_tokens)

    out, start = [], 0
    while start < len(prompt_lengths):
        end = start + 1
        while end < len(prompt_lengths) and end - start < limit and cache_tokens(
                end + 1 - start, max(prompt_lengths[start:end + 1])) <= budget:
            end += 1
        out.append(range(start, end))
        start = end
    return out


def generate_rows(model, tokenizer, domain: Domain, records: list[Record],
                  examples: list[Record], config: GenerateConfig, system: str, seed: int,
                  precision: str, progress=None, temperature: float | None = None,
                  adapter_scale: float = 1.0, shard: tuple[int, int] = (0, 1)
                  ) -> list[tuple[int, dict]]:
    """(record index, row) for each record: its samples, and each reference's NLL under the
    system (which computed in `precision`), at the domain's temperature or `temperature`.
    `shard` (rank, processes): only the batches whose number is rank modulo processes; each
    batch samples with its own seed, so a record's row does not depend on the shard."""
    sampling, rows = domain.sampling, []
    temperature = sampling.temperature if temperature is None else temperature
    texts = [prompt_text(tokenizer, domain.messages(r, examples), domain.assistant_prefix(r))
             for r in records]
    lengths = [len(tokenizer(t, add_special_tokens=False)["input_ids"]) for t in texts]
    budget = config.cache_gb * 2**30 / cache_bytes_per_token(model)
    plan = batches(lengths, sampling.max_new_tokens, config.batch_prompts, config.n, budget,
                   full_attention_only(model))
    for batch in plan[shard[0]::shard[1]]:
        targets = [[domain.target(records[i], ref) for ref in records[i]["references"]]
                   for i in batch]
        samples, scores = sample_and_score(
            model, tokenizer, [texts[i] for i in batch], targets, config.n,
            temperature=temperature, top_k=sampling.top_k, top_p=sampling.top_p,
            max_new_tokens=sampling.max_new_tokens, stop=domain.stop, seed=seed + batch.start)
        for i, record_samples, (nll, tokens) in zip(batch, samples, scores, strict=True):
            record = records[i]
            rows.append((i, {"id": record["id"], "prompt": record["prompt"],
                         "references": record["references"], "system": system, "seed": seed,
                         "precision": precision, "temperature": temperature,
                         "adapter_scale": adapter_scale,
                         "samples": record_samples, "reference_nll": nll,
                         "reference_tokens": tokens}))
        if progress is not None:
            progress(len(batch))
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=stage_help(__doc__, (GenerateConfig, "generate")),
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--domain", required=True)
    parser.add_argument("--system", required=True,
                        help="zero_shot, few_shot, or a trained method (with --adapter)")
    parser.add_argument("--base", required=True, help="base model checkpoint directory")
    parser.add_argument("--adapter", help="LoRA adapter directory (trained methods)")
    parser.add_argument("--data", required=True, help="the domain's prepared splits directory")
    parser.add_argument("--split", default="dev", choices=SPLITS_ANSWERED,
                        help="prompts to answer (val: for choosing settings; confirmation: "
                        "the unsealed records, --unsealed)")
    parser.add_argument("--unsealed", help="the confirmation records (stage unseal's file)")
    parser.add_argument("--seed", type=int, required=True,
                        help="sampling seed (one of params.yaml's seeds; reseeded per batch) and "
                        "few-shot example draw")
    parser.add_argument("--out", required=True, help="generations JSONL to write")
    parser.add_argument("--temperature", type=float,
                        help="sample at this temperature, not the domain's (a frontier point)")
    parser.add_argument("--temperature-from", type=Path, metavar="JSON",
                        help="sample at the 'temperature' this file gives (the match stage's "
                        "matched temperature)")
    parser.add_argument("--adapter-scale", type=float, default=1.0,
                        help="the adapter's update times this (0: the base model; 1: as "
                        "trained; a frontier point)")
    parser.add_argument("--frontier", choices=KNOBS,
                        help="sample at each value of frontier.temperatures (temperature) or "
                        "frontier.adapter_scales (adapter_scale), --out being a folder")
    args = parser.parse_args(argv)
    params = read_params()
    runtime = runtime_config(params, RUNTIME_KEYS)
    config = load_section(GenerateConfig, params, "generate")
    ks = load_section(EvaluateConfig, params, "evaluate", only=("ks",)).ks
    require(config.n >= max(ks), "generate.n", f"({config.n}) must be >= the largest k in "
            f"evaluate.ks ({max(ks)})")
    if (args.system in PROMPTED) == (args.adapter is not None):
        raise UserError(f"system {args.system!r}: " + (
            "a prompted system takes no adapter" if args.adapter else
            f"unknown system (prompted systems: {', '.join(PROMPTED)}; a trained method "
            "needs --adapter)"))
    domain = load_domain(args.domain, params)
    if args.temperature_from is not None:
        args.temperature = matched_temperature(args.temperature_from)
    if args.temperature is not None and not args.temperature > 0:
        raise UserError(f"--temperature {args.temperature}: must be > 0")
    points = frontier_points(params, args.frontier, args.temperature, args.adapter_scale,
                             Path(args.out))
    for _, scale, _ in points:
        if not 0 <= scale <= 2 or (scale != 1 and args.adapter is None):
            raise UserError(f"adapter scale {scale}: must be in [0, 2], and needs --adapter")
    if runtime.processes > 1 and not launched():  # the input checked once, before launching
        sys.exit(relaunch("polychromic.stages.generate", runtime.processes,
                          sys.argv[1:] if argv is None else argv))
    shard = join_processes(runtime)

    from tqdm import tqdm

    examples = []
    if args.system == "few_shot":
        pool = read_jsonl(Path(args.data, "fewshot.jsonl"), RECORD_FIELDS)
        examples = few_shot_examples(pool, config.few_shot_examples, args.seed)
    records = read_jsonl(split_path(args.data, args.split, args.unsealed), RECORD_FIELDS)
    records = records[:domain.sampling.prompts]
    tokenizer = load_tokenizer(args.base)
    tokenizer.padding_side = "left"  # generation continues from the right edge
    written, seconds, model, merged_scale = {}, {}, None, None
    for temperature, scale, out in points:
        if scale != merged_scale:  # a scale is merged into the weights: load again
            model = load_model(args.base, args.adapter, runtime, merge_adapter=True,
                               adapter_scale=scale).eval()
            merged_scale = scale
        started = time.perf_counter()
        bar = tqdm(total=len(records) if shard[1] == 1 else None, unit="prompt",
                   desc=f"generate {args.domain}/{args.system} {out.stem}",
                   disable=shard[0] != 0)  # the main process's prompts, when sharded
        with runtime.autocast(), bar as progress:
            rows = generate_rows(model, tokenizer, domain, records, examples, config,
                                 args.system, args.seed, runtime.mixed_precision(),
                                 progress.update, temperature, scale, shard)
        written[out] = gathered(rows, shard)
        seconds[out] = time.perf_counter() - started
    if shard[1] > 1:
        import torch.distributed as dist

        dist.destroy_process_group()
    if shard[0] != 0:  # the main process writes and records
        return
    log_runs(args, params, written, seconds, runtime.mixed_precision())
    if args.frontier is None:
        write_jsonl(args.out, written[Path(args.out)])
    else:  # the folder appears whole or not at all
        with atomic_path(args.out) as folder:
            folder.mkdir()
            for out, rows in written.items():
                write_jsonl(folder / out.name, rows)
    print(f"{args.domain}/{args.system}: {len(records)} prompts x {config.n} samples at "
          f"{len(written)} point(s) -> {args.out}")


def join_processes(runtime) -> tuple[int, int]:
    """(rank, processes) of this process: (0, 1) alone; under torch.distributed.run it joins
    the gloo group (rows travel as Python objects on any device) and takes its own GPU."""
    if not launched():
        return 0, 1
    import torch
    import torch.distributed as dist

    if runtime.model_device() == "cuda":
        torch.cuda.set_device(int(os.environ["LOCAL_RANK"]))
    dist.init_process_group("gloo")
    return dist.get_rank(), dist.get_world_size()


def gathered(rows: list[tuple[int, dict]], shard: tuple[int, int]) -> list[dict]:
    """Every process's rows in record order (on the main process; [] on the others)."""
    if shard[1] > 1:
        import torch.distributed as dist

        parts: list = [None] * shard[1]
        dist.gather_object(rows, parts if shard[0] == 0 else None, dst=0)
        if shard[0] != 0:
            return []
        rows = [row for part in parts for row in part]
    return [row for _, row in sorted(rows, key=lambda pair: pair[0])]


def frontier_points(params: dict, knob: str | None, temperature: float | None, scale: float,
                    out: Path) -> list[tuple[float | None, float, Path]]:
    """(temperature, adapter scale, output file) of each point to sample: the one the
    command line gives, or with `knob` each value of its frontier list (file
    <knob>-<value>.jsonl in the folder `out`; the other knob as given)."""
    if knob is None:
        return [(temperature, scale, out)]
    key = {"temperature": "temperatures", "adapter_scale": "adapter_scales"}[knob]
    values = getattr(load_section(FrontierConfig, params, "frontier", only=(key,)), key)
    require(len(values) > 0 and len(set(values)) == len(values), f"frontier.{key}",
            "must list distinct values")
    return [(value, scale, out / f"{knob}-{value}.jsonl") if knob == "temperature"
            else (temperature, value, out / f"{knob}-{value}.jsonl") for value in values]


if __name__ == "__main__":
    run_main(main)
