"""What the tests share: paths, running stages and commands, tiny models, params and data.

Test modules import this module and conftest's fixtures, never another test module. Heavy
libraries (torch, transformers) are imported inside the functions that need them, so that
importing this module costs a unit test nothing.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]


# -- running stages and commands -------------------------------------------------------------
def module_name(module: str) -> str:
    """`prepare` -> polychromic.stages.prepare; a dotted name (`commands.doctor`) is taken
    inside the package as it is: polychromic.commands.doctor."""
    return f"polychromic.{module}" if "." in module else f"polychromic.stages.{module}"


def run_module(cwd: Path, module: str, *args: str) -> None:
    """Run stage `module` (see `module_name`) in `cwd`, with the MLflow store there; it must
    succeed. Run as `python -m` from `cwd`: a copy of the package in `cwd` is imported
    before the installed one."""
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{cwd / 'mlflow.db'}"}
    result = subprocess.run([sys.executable, "-m", module_name(module), *args], cwd=cwd,
                            env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]


def run_stage(cwd: Path, module: str, args: list[str], params: dict):
    """Write `params` as cwd's params.yaml and run stage `module` there; its result."""
    (cwd / "params.yaml").write_text(yaml.safe_dump(params))
    return subprocess.run([sys.executable, "-m", module_name(module), *args], cwd=cwd,
                          capture_output=True, text=True, timeout=300)


def assert_one_line_error(result, expected: str) -> None:
    """A stage's refusal: exit status 2 and one line, `error: ...`, that holds `expected`."""
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert expected in lines[0]


def sh(cwd: Path, *cmd: str, timeout: int = 600, check: bool = True) -> str:
    """Run a command (git, dvc) in `cwd` outside this process's DVC and MLflow settings; it
    must succeed (`check`; else its stdout and stderr, for a refusal). Its stdout."""
    env = {**os.environ, "DVC_NO_ANALYTICS": "1", "GIT_AUTHOR_NAME": "t",
           "GIT_AUTHOR_EMAIL": "t@example.com", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@example.com"}
    env.pop("DVC_ROOT", None)
    env.pop("MLFLOW_TRACKING_URI", None)  # mlflow.set_tracking_uri sets it in this process
    result = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True,
                            timeout=timeout)
    tail = f"{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    if not check:
        assert result.returncode != 0, f"{' '.join(cmd)} succeeded:\n{tail}"
        return result.stdout + result.stderr
    assert result.returncode == 0, f"{' '.join(cmd)}:\n{tail}"
    return result.stdout


# -- params ------------------------------------------------------------------------------------
SMALL_ENCODER = "embedded:all-minilm-l6-v2"


def default_params() -> dict:
    """The repository's params.yaml, with the reward's small encoder standing in for
    evaluation's independent one (all-mpnet-base-v2, five times the weights): the same code
    path, and tests/integration/test_metrics.py loads the real one."""
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["evaluate"]["independent_model"] = SMALL_ENCODER
    params["replies"]["checker"]["embedding_model"] = SMALL_ENCODER
    return params


def params_with(**sections) -> dict:
    """params.yaml with these sections' keys laid over (a non-mapping value replaces)."""
    params = default_params()
    for key, values in sections.items():
        params[key] = {**params[key], **values} if isinstance(values, dict) else values
    return params


def tiny_qa_run_params() -> dict:
    """params.yaml for running qa's stages one by one in seconds: the tiny model, a few
    questions, 2 steps, 4 samples."""
    params = default_params()
    params["domains"] = ["qa"]
    params["qa"]["data"].update(train_per_family=4, val_per_family=2, dev_per_family=1)
    params["qa"]["sampling"].update(prompts=3, max_new_tokens=6)
    params["train"].update(max_steps=2, batch_size=2, eval_every=1, checkpoint_every=2,
                           eval_examples=2, warmup_steps=0, logging_every=1)
    params["train"]["lora"].update(r=2, alpha=4)
    params["generate"].update(n=4, batch_prompts=3)
    params["evaluate"]["ks"] = [1, 4]
    return params


def tiny_pipeline_params(model_dir: Path, domains=("replies", "code")) -> dict:
    """params.yaml for a `dvc repro` of the whole pipeline in minutes: the tiny model, a few
    prompts and steps."""
    params = default_params()
    params["domains"] = list(domains)
    params["base_model"]["source"] = str(model_dir)
    params["replies"]["data"].update(max_prompts=80)
    params["replies"]["sampling"].update(prompts=3, max_new_tokens=6)
    params["replies"]["checker"].update(calibration_pairs=300)
    params["code"]["sampling"].update(prompts=3, max_new_tokens=12)
    params["train"].update(max_steps=2, batch_size=2, eval_every=1, checkpoint_every=2,
                           eval_examples=4, max_length=384, warmup_steps=0, logging_every=1)
    params["train"]["lora"].update(r=2, alpha=4)
    params["generate"].update(n=10, batch_prompts=2)
    params["polychromic"].update(max_new_tokens=4, eval_prompts=2, eval_samples=2,
                                 generate_every=1)
    return params


def tiny_train_params(**train) -> dict:
    """params.yaml for a train stage of a few steps on `write_pairs`' data: r = 2, short
    polychromic samples scored with the distinct metric; `train` keys laid over."""
    params = default_params()
    params["train"].update({"eval_examples": 4, "logging_every": 1, "warmup_steps": 0,
                            "max_length": 128, **train})
    params["train"]["lora"].update(r=2, alpha=4)
    params["polychromic"].update(n_generations=2, max_new_tokens=4, eval_prompts=2,
                                 eval_samples=2, generate_every=1, diversity_metric="distinct")
    return params


# -- data --------------------------------------------------------------------------------------
def write_lines(path: Path, lines: list[str]) -> Path:
    """A text file of these lines."""
    path.write_text("".join(line + "\n" for line in lines))
    return path


PAIRS = [("hi, how are you?", "good thanks, you?"),
         ("what did you do this weekend", "went hiking with my sister"),
         ("lol", "haha"), ("do you like pizza or pasta more?", "pizza, always"),
         ("just got home", "welcome back! long day?"), ("it's raining again", "ugh, same here")]
"""(prompt, reply) pairs: a train set of a few steps."""


def write_pairs(folder: Path, splits: dict[str, list[tuple[str, str]]]) -> None:
    """Prepared records (`<split>.jsonl`) of (prompt, reply) pairs in `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    for split, pairs in splits.items():
        (folder / f"{split}.jsonl").write_text("".join(
            json.dumps({"id": f"{split}-{i}", "prompt": p, "references": [r], "task": {}}) + "\n"
            for i, (p, r) in enumerate(pairs)))


def jsonl(*records) -> str:
    """Records as JSON lines."""
    return "".join(json.dumps(r) + "\n" for r in records)


USER_REPLIES_HEADER = "tweet_id,tweet,reply,reply_likes,reply_author"
USER_REPLIES_ROWS = ["1,How was the game?,We won!,5,ann", "1,How was the game?,Lost again,2,bob",
                     '2,"Coffee, or tea?",Coffee always,0,cy']
"""A user's replies file as a spreadsheet exports it (CSV rows under USER_REPLIES_HEADER)."""


def write_user_replies(root: Path, name: str, data: bytes | str) -> Path:
    """A user's replies file `name` where prepare reads it (data/user/replies/ in `root`)."""
    path = root / "data" / "user" / "replies" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data if isinstance(data, bytes) else data.encode())
    return path


def user_reply(tweet_id="1", tweet="hi", text="hey", **extra) -> dict:
    """One record of a user's replies file."""
    return {"tweet_id": tweet_id, "tweet": tweet, "reply": text, **extra}


def curves(plots: Path) -> dict[str, list[list[str]]]:
    """step and value of every logged curve (DVCLive's timestamps differ between runs)."""
    return {str(path.relative_to(plots)): [line.split("\t")[1:] for line in
                                           path.read_text().splitlines()]
            for path in sorted(plots.rglob("*.tsv"))}


# -- the tiny model ----------------------------------------------------------------------------
def build_tiny_llama(out: Path, tokenizer_dir: Path, tie_word_embeddings: bool) -> Path:
    """A 2-layer, 32-wide random Llama checkpoint with the real tokenizer."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64,
                         num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                         max_position_embeddings=512, tie_word_embeddings=tie_word_embeddings,
                         bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                         pad_token_id=tokenizer.pad_token_id)
    torch.manual_seed(0)
    model = LlamaForCausalLM(config)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def save_random_adapter(model_dir: Path, out: Path) -> None:
    """A LoRA adapter (r 2 on q and v) on `model_dir` whose B is drawn as if trained (not
    zero), seeded: samples with it differ from the base model's."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(model_dir),
                           LoraConfig(r=2, lora_alpha=4, target_modules=["q_proj", "v_proj"]))
    for name, parameter in model.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(parameter, std=0.5)
    model.save_pretrained(out)


def domain_sampling(**settings):
    """A domain's `Sampling` (every key required): the replies-like settings that the tests
    were written with (30 prompts, 32 new tokens, temperature 0.7, top-k 50, top-p
    0.95), `settings` laid over."""
    from polychromic.domains import Sampling

    return Sampling(**{"prompts": 30, "max_new_tokens": 32, "temperature": 0.7,
                       "top_k": 50, "top_p": 0.95, **settings})


# -- the polychromic trainer on the tiny model -------------------------------------------------
PROMPTS = ["hi", "how are you", "what's up", "good morning", "any plans today?", "lol",
           "did you eat yet", "i'm bored"]
"""Prompts of the polychromic trainer's tests (each trained towards one fixed reply)."""


def replies_domain():
    """The replies domain without settings: its prompt format only."""
    from polychromic.domains.replies import Replies

    return Replies("replies", {})


def chat(tokenizer, prompt: str) -> str:
    """`prompt` as the replies domain puts it to the model."""
    from polychromic.modeling import prompt_text

    return prompt_text(tokenizer, replies_domain().messages({"prompt": prompt}))


def setup(model_dir: Path, reply: str = "ok", **config):
    """(tokenizer, model with LoRA on q, v and lm_head, PROMPTS each encoded with `reply`,
    a checked PolychromicConfig: distinct-1, 6 new tokens, sampling every step, `config`
    laid over)."""
    from transformers import AutoTokenizer

    from polychromic.methods.polychromic import PolychromicConfig
    from polychromic.modeling import encode_example, load_model
    from polychromic.settings import LoraSettings
    from polychromic.training import add_lora

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    lora = LoraSettings(r=8, alpha=16, dropout=0.0,
                        target_modules=["q_proj", "v_proj", "lm_head"])
    model = add_lora(load_model(model_dir), lora, seed=0)
    data = [encode_example(tokenizer, chat(tokenizer, p), reply, 96) for p in PROMPTS]
    polychromic = PolychromicConfig(**{"diversity_metric": "distinct", "distinct_n": 1,
                                       "max_new_tokens": 6, "eval_prompts": 1,
                                       "generate_every": 1, **config})
    polychromic.check("polychromic")
    return tokenizer, model, data, polychromic


def arguments(tmp_path: Path, steps: int = 1, lr: float = 1e-3):
    """TrainingArguments of a short constant-rate run, batches of 4, nothing saved."""
    from transformers import TrainingArguments

    return TrainingArguments(output_dir=str(tmp_path), max_steps=steps, learning_rate=lr,
                             per_device_train_batch_size=4, lr_scheduler_type="constant",
                             report_to=[], save_strategy="no", disable_tqdm=True, seed=0,
                             logging_steps=1)


def trainer_for(tmp_path: Path, tokenizer, model, data, polychromic, steps: int = 1,
                lr: float = 1e-3, embedder=None):
    """A PolychromicTrainer over padded batches, sampling with `domain_sampling()`'s settings (the
    config's own where it sets them)."""
    from polychromic.methods.polychromic import PolychromicTrainer
    from polychromic.modeling import PadCollator

    collator = PadCollator(tokenizer.pad_token_id)
    return PolychromicTrainer(model=model, args=arguments(tmp_path, steps, lr),
                              train_dataset=data, data_collator=collator,
                              term=polychromic, tokenizer=tokenizer, embedder=embedder,
                              sampling=domain_sampling())


def on_device(model, batch: dict) -> dict:
    """The batch where the model is (the Trainer does this for the batches it makes)."""
    import torch

    return {k: v.to(model.device) if isinstance(v, torch.Tensor) else v
            for k, v in batch.items()}


def lora_parameters(model) -> dict:
    return {n: p for n, p in model.named_parameters() if p.requires_grad}


def gradients(loss, params: dict) -> dict:
    import torch

    return dict(zip(params, torch.autograd.grad(loss, list(params.values())), strict=True))


# -- the report stage's inputs -----------------------------------------------------------------
REPORT_SYSTEMS = ["baseline", "polychromic"]
REPORT_METRICS = {  # one lower-is-better column, and one whose values tie when printed
    "self_bleu": {"group": "diversity", "higher_is_better": False, "label": "Self-BLEU"},
    "semantic": {"group": "diversity", "higher_is_better": True, "label": "Semantic div."},
    "rouge_l": {"group": "quality", "higher_is_better": True, "label": "ROUGE-L"},
    "pass@4": {"group": "passk", "higher_is_better": True, "label": "pass@4 (% #&)"},
}
REPORT_ARGS = ["--domain", "replies", "--comparison", "comparison.json", "--scores", "scores",
               "--generations", "gens", "--tables", "out/tables", "--figures", "out/figures"]
"""The report stage's arguments in a `report_project` folder."""


def _summary(mean):
    return {"mean": mean, "ci95": None if mean is None else [mean - 0.01, mean + 0.01]}


def _criterion(name, value, threshold, met):
    return {"criterion": name, "value": value, "threshold": threshold, "met": met}


def report_comparison(**p_holm) -> dict:
    """A comparison.json of REPORT_SYSTEMS: polychromic is better on Self-BLEU (lower) and
    semantic, ties on ROUGE-L; `p_holm`: corrected Wilcoxon p by metric (`pass_4`)."""
    values = {"baseline": {"self_bleu": 0.30, "semantic": 0.70, "rouge_l": 0.1004, "pass@4": None},
              "polychromic": {"self_bleu": 0.20, "semantic": 0.80, "rouge_l": 0.1001,
                              "pass@4": 0.5}}
    return {
        "domain": "replies", "seeds": [1, 2], "n_prompts": 3, "reference": "polychromic",
        "metrics": REPORT_METRICS, "correction": "holm", "alpha": 0.05, "judge": None,
        "systems": {s: {m: _summary(v) for m, v in row.items()} for s, row in values.items()},
        "comparisons": [{"metric": m, "a": "polychromic", "b": "baseline", "n": 3,
                         "alternative": "a > b", "wilcoxon_p": 0.001,  # raw p: never marked
                         "wilcoxon_p_holm": p_holm.get(m.replace("@", "_"))}
                        for m in REPORT_METRICS],
        "verdict": {"minimum": {"met": False, "criteria": [_criterion(
            "semantic higher than LoRA", 0.17, "p < 0.05", False), _criterion(
            "judge | win rate", None, "> 0.5", None)]}, "strong": {"met": True, "criteria": [
                _criterion("pass@4 gain", 0.2, ">= 0.1", True)]}}}


def report_scores(*rows) -> list[dict]:
    """Per-prompt scores (ids t0, t1, ...) of (samples, passed) pairs."""
    return [{"id": f"t{i}", "n": n, "passed": c} for i, (n, c) in enumerate(rows)]


def report_generations(system: str, ids: list[str], n: int = 3) -> list[dict]:
    return [{"id": t, "prompt": f"prompt {t} | with a pipe", "references": [f"ref {t}"],
             "system": system, "samples": [f"{system} {t} sample {j}" for j in range(n)]}
            for t in ids]


def write_jsonl(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def report_project(root: Path) -> Path:
    """The report stage's inputs in `root`: 2 systems x 2 seeds x 3 prompts, params.yaml and
    comparison.json."""
    params = {"systems": REPORT_SYSTEMS, "seeds": [1, 2],
              "report": {"examples": 2, "example_samples": 2, "seed": 0}}
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    passed = {"baseline": [[0, 1, 0], [0, 0, 1]], "polychromic": [[1, 4, 0], [2, 4, 0]]}
    for system in REPORT_SYSTEMS:
        for seed, counts in zip([1, 2], passed[system], strict=True):
            write_jsonl(root / "scores" / system / f"seed{seed}.jsonl",
                        report_scores(*[(4, c) for c in counts]))
            write_jsonl(root / "gens" / system / f"seed{seed}.jsonl",
                        report_generations(system, ["t0", "t1", "t2"]))
    (root / "comparison.json").write_text(json.dumps(report_comparison(semantic=0.02)))
    return root


# -- dvc.yaml: matrix items and what a stage declares ----------------------------------------
def matrix_items(stage: dict, params: dict) -> list[dict]:
    """The matrix items of a dvc.yaml stage, as `${item.*}` values (one empty item if none);
    a `foreach` stage's items are its mapping's values (or its list)."""
    import re

    if "foreach" in stage:
        values = params
        for part in re.fullmatch(r"\$\{(.+)\}", stage["foreach"]).group(1).split("."):
            values = values[part]
        return list(values.values()) if isinstance(values, dict) else list(values)
    matrix = stage.get("matrix")
    if not matrix:
        return [{}]
    items = [{}]
    for key, values in matrix.items():
        if isinstance(values, str):  # ${domains}, ${seeds}
            values = params
            for part in re.fullmatch(r"\$\{(.+)\}", matrix[key]).group(1).split("."):
                values = values[part]
        items = [{**item, key: value} for item in items for value in values]
    return items


def interpolate(text: str, item: dict, variables: dict | None = None) -> str:
    """dvc.yaml's `${item.x}`, and `${a.b}` from `variables` (its vars and params)."""
    import re

    def value(match: re.Match) -> str:
        name = match.group(1)
        if name.startswith("item."):
            return str(item[name[5:]])
        found = variables or {}
        for part in name.split("."):
            found = found[part]
        return str(found)

    return re.sub(r"\$\{([\w.]+)\}", value, text)


def untracked_params(module: str) -> tuple[str, ...]:
    """The params keys stage `module` reads but need not track in dvc.yaml, its
    UNTRACKED_PARAMS (each tested not to change its outputs); none for a module that is not
    the package's."""
    import importlib

    try:
        return tuple(getattr(importlib.import_module(module), "UNTRACKED_PARAMS", ()))
    except ModuleNotFoundError:
        return ()


def undeclared_params(repo: Path, trace: Path, folders: tuple[str, ...] = (".",)) -> list[str]:
    """Each stage run that `trace` recorded (config.TRACE_ENV: its arguments and the params
    keys it read) against the params its stage declares, in the dvc.yaml of any of
    `folders` (each with its own params.yaml): every key read that no declared param covers,
    as 'stage item: key'. A run that matches no stage is one too."""
    import shlex

    declared: dict[tuple[str, ...], tuple[str, list[str]]] = {}
    for folder in folders:
        pipeline = yaml.safe_load((repo / folder / "dvc.yaml").read_text())
        params = yaml.safe_load((repo / folder / "params.yaml").read_text())
        variables = {**params, **{k: v for entry in pipeline.get("vars", [])
                                  if isinstance(entry, dict) for k, v in entry.items()}}
        for name, stage in pipeline["stages"].items():
            body = stage.get("do", stage)  # a foreach stage's body
            for item in matrix_items(stage, params):
                commands = body["cmd"] if isinstance(body["cmd"], list) else [body["cmd"]]
                keys = [interpolate(p, item, variables) for p in body.get("params", [])]
                for command in commands:
                    words = shlex.split(interpolate(command, item, variables))
                    while "=" in words[0]:  # an environment assignment before the command
                        words = words[1:]
                    where = name if folder == "." else f"{folder}:{name}"
                    declared[tuple(words[3:])] = (f"{where} {item}",
                                                  [*keys, *untracked_params(words[2])])
    found = []
    runs = [json.loads(line) for line in trace.read_text().splitlines()]
    assert runs, f"{trace}: no stage recorded what it read"
    for run in runs:
        if tuple(run["argv"]) not in declared:
            found.append(f"a run of no stage: {run['argv']}")
            continue
        where, keys = declared[tuple(run["argv"])]
        found += [f"{where}: {key}" for key in run["read"]
                  if not any(key == k or key.startswith(f"{k}.") for k in keys)]
    return found


# -- a temporary copy of the repository --------------------------------------------------------
PIPELINE_FILES = ["polychromic", "data/user", "dvc.yaml", "params.yaml", "pyproject.toml",
                  ".gitignore", ".dvcignore", ".dvc/config", ".dvc/.gitignore",
                  "protocol/sealed"]


def pipeline_repository(tmp_path: Path, params: dict,
                        files: dict[str, str] | None = None) -> tuple[Path, str]:
    """A git repository at tmp_path/repo with the project's pipeline files, `params` as its
    params.yaml and `files` (relative path -> text) added; its HEAD. Stages run there import
    its copy of the package (python -m from the repository's root)."""
    import shutil

    repo = tmp_path / "repo"
    for name in PIPELINE_FILES:
        source, target = REPO / name, repo / name
        target.parent.mkdir(parents=True, exist_ok=True)
        if source.is_dir():
            shutil.copytree(source, target, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy(source, target)
    for name, text in (files or {}).items():
        (repo / name).parent.mkdir(parents=True, exist_ok=True)
        (repo / name).write_text(text)
    (repo / "params.yaml").write_text(yaml.safe_dump(params))
    sh(repo, "git", "init", "-q")
    sh(repo, "git", "add", "-A")
    sh(repo, "git", "commit", "-qm", "tiny")
    return repo, sh(repo, "git", "rev-parse", "HEAD").strip()


def study_repository(tmp_path: Path, root: Path, files: dict[str, str]) -> Path:
    """A copy at tmp_path/repo of `root`, a repository whose root pipeline is reproduced
    (tests/e2e/conftest.py's `qa_root`), with a study's `files` (relative path -> text)
    added and committed: each study's test starts from the same root outputs."""
    import shutil

    repo = tmp_path / "repo"
    shutil.copytree(root, repo, symlinks=True)
    for name, text in files.items():
        (repo / name).parent.mkdir(parents=True, exist_ok=True)
        (repo / name).write_text(text)
    sh(repo, "git", "add", "-A")
    sh(repo, "git", "commit", "-qm", "the study")
    return repo


def repro_study(repo: Path, name: str, trace: Path) -> Path:
    """`dvc repro` of the root pipeline (a study reads its outputs), then of
    studies/<name>/dvc.yaml with every stage noting the params it reads in `trace`: each
    read is declared, and the root's dvc.lock is left as it was. The study's folder."""
    from polychromic.config import TRACE_ENV

    sh(repo, "dvc", "repro", timeout=1800)
    root_lock = (repo / "dvc.lock").read_text()
    os.environ[TRACE_ENV] = str(trace)
    try:
        sh(repo, "dvc", "repro", f"studies/{name}/dvc.yaml", timeout=1800)
    finally:
        os.environ.pop(TRACE_ENV)
    assert undeclared_params(repo, trace, (".", f"studies/{name}")) == []
    assert (repo / "dvc.lock").read_text() == root_lock  # the root pipeline untouched
    return repo / "studies" / name


def traced_repro(repo: Path, trace: Path) -> None:
    """`dvc repro` in `repo` with every stage noting the params it reads in `trace`; fails
    on a key that a stage's `params:` in dvc.yaml does not cover (a change of it would
    leave a stale output cached)."""
    from polychromic.config import TRACE_ENV

    previous = os.environ.get(TRACE_ENV)
    os.environ[TRACE_ENV] = str(trace)
    try:
        sh(repo, "dvc", "repro")
    finally:
        if previous is None:
            os.environ.pop(TRACE_ENV)
        else:
            os.environ[TRACE_ENV] = previous
    undeclared = undeclared_params(repo, trace)
    assert not undeclared, undeclared


def selection_outputs(root, choices: dict, arm_changes: dict | None = None) -> None:
    """What the selection study leaves (params, the chosen arms' params, selection.json)
    for `choices` (domain -> arm or None); each arm's params as the study writes them."""
    import json

    from polychromic.studies import selection_files

    folder = root / "studies/selection"
    folder.mkdir(parents=True, exist_ok=True)
    arms = {"lora": {"method": "baseline"},
            "qd-1": {"method": "quality_diversity", "quality_diversity": {"weight": 1.0}},
            "pk-1": {"method": "passk", "domains": ["code", "qa"], "passk": {"weight": 1.0}}}
    for arm, changes in (arm_changes or {}).items():
        arms[arm] = {**arms[arm], **changes}
    (folder / "selection.yaml").write_text(yaml.safe_dump(
        {"common": {"seeds": [42]}, "arms": arms}, sort_keys=False))
    for path, text in selection_files(root).items():
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        (root / path).write_text(text)
    for domain, arm in choices.items():
        (folder / "metrics" / domain).mkdir(parents=True, exist_ok=True)
        (folder / "metrics" / domain / "selection.json").write_text(json.dumps(
            {"domain": domain, "split": "val", "chosen": arm}))
