"""The bf16 path against fp32 on the tiny Llama (runtime.precision: bf16 stores the base
weights in bf16, keeps LoRA in fp32 and runs under bf16 autocast).

Tolerances: bf16 keeps 8 significant bits, a relative rounding of 2^-9 per value. Measured
on this batch (2026-12-04): the loss 1e-5 apart (relative), the LoRA gradients at cosine
> 0.99996 and norms within 0.6%, a sampling step's logits within 2.3% of their spread.
The tests allow about 2-100x that: the loss within 0.1%, each gradient at cosine > 0.999
and its norm within 2%, the logits within 5% of their spread. A CPU without native bf16
emulates it: the same numbers, slower."""

import json
import math

import pytest
import torch

from polychromic.modeling import PackCollator, causal_lm_loss, encode_example, load_model
from polychromic.runtime import Runtime
from polychromic.settings import LoraSettings
from polychromic.training import add_lora, save_adapter
from tests.helpers import PROMPTS, chat, run_module, tiny_qa_run_params

LORA = LoraSettings(r=8, alpha=16, dropout=0.0, target_modules=["q_proj", "v_proj", "up_proj"])


def lora_model(model_dir, precision: str):
    """The tiny model with LoRA, its B matrices seeded away from zero (at zero, A has no
    gradient), the same in either precision."""
    model = add_lora(load_model(model_dir, runtime=Runtime(precision=precision)), LORA, seed=0)
    generator = torch.Generator().manual_seed(1)
    for name, parameter in sorted(model.named_parameters()):
        if "lora_B" in name:
            parameter.data = torch.randn(parameter.shape, generator=generator) * 0.05
    return model


def batch_of(model_dir) -> dict:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    examples = [encode_example(tokenizer, chat(tokenizer, p), "fine thanks", 96)
                for p in PROMPTS[:4]]
    return PackCollator()(examples)


def loss_and_gradients(model, batch: dict, precision: str):
    labels = batch["labels"]
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    with Runtime(precision=precision).autocast():
        loss = causal_lm_loss(model(**inputs), labels)
    named = {n: p for n, p in model.named_parameters() if p.requires_grad}
    grads = torch.autograd.grad(loss, list(named.values()))
    return loss.item(), dict(zip(named, grads, strict=True))


def test_bf16_stores_the_base_in_bf16_and_lora_in_fp32(tiny_model_dir):
    model = lora_model(tiny_model_dir, "bf16")
    kinds = {}
    for name, parameter in model.named_parameters():
        kinds.setdefault(("lora" if "lora_" in name else "base", parameter.dtype), []).append(name)
    assert set(kinds) == {("base", torch.bfloat16), ("lora", torch.float32)}, list(kinds)
    assert all(p.requires_grad == ("lora_" in n) for n, p in model.named_parameters())
    rotary = [b for n, b in model.named_buffers() if n.endswith("inv_freq")]
    assert rotary and all(b.dtype == torch.float32 for b in rotary)  # angles not rounded


def test_loss_and_lora_gradients_agree_with_fp32(tiny_model_dir):
    batch = batch_of(tiny_model_dir)
    loss32, grads32 = loss_and_gradients(lora_model(tiny_model_dir, "fp32"), batch, "fp32")
    loss16, grads16 = loss_and_gradients(lora_model(tiny_model_dir, "bf16"), batch, "bf16")
    assert math.isfinite(loss32) and loss16 == pytest.approx(loss32, rel=1e-3)
    assert grads16.keys() == grads32.keys() and len(grads32) == 2 * 3 * 2  # A, B x 3 x layers
    for name, g32 in grads32.items():
        g16 = grads16[name]
        assert g16.dtype == torch.float32, name  # LoRA's gradients (and optimiser) in fp32
        assert g32.norm() > 0, name
        cosine = torch.nn.functional.cosine_similarity(g16.flatten(), g32.flatten(), dim=0)
        assert cosine > 0.999, (name, cosine.item())
        assert g16.norm() / g32.norm() == pytest.approx(1.0, abs=0.02), name


def sampling_step(model, input_ids, precision: str):
    """The logits of a prompt's next token, and the KV cache left for the next step."""
    with torch.no_grad(), Runtime(precision=precision).autocast():
        out = model(input_ids=input_ids, use_cache=True)
    return out.logits[:, -1].float(), out.past_key_values


def test_a_sampling_steps_logits_agree_and_the_cache_is_bf16(tiny_model_dir, tmp_path):
    """Through generate's own loading: the adapter merged, then stored in bf16."""
    save_adapter(lora_model(tiny_model_dir, "fp32"), tmp_path / "adapter")
    prompt = torch.tensor([[1, 5, 9, 14, 3, 7, 22, 40]])
    logits, caches = {}, {}
    for precision in ("fp32", "bf16"):
        model = load_model(tiny_model_dir, tmp_path / "adapter", Runtime(precision=precision),
                           merge_adapter=True).eval()
        if precision == "bf16":
            assert {p.dtype for p in model.parameters()} == {torch.bfloat16}
        logits[precision], caches[precision] = sampling_step(model, prompt, precision)
    spread = logits["fp32"].std()
    assert (logits["bf16"] - logits["fp32"]).abs().max() < 0.05 * spread
    assert caches["fp32"].layers[0].keys.dtype == torch.float32
    assert caches["bf16"].layers[0].keys.dtype == torch.bfloat16  # half the cache's bytes


@pytest.mark.slow
def test_a_bf16_run_writes_its_precision_everywhere(tmp_path, tiny_model_dir):
    """train, generate and evaluate in bf16: the precision is in the adapter's summary, the
    training metrics, every generation and score row, the metrics and every MLflow run."""
    import mlflow

    params = tiny_qa_run_params()
    params["runtime"] = {**params.get("runtime", {}), "precision": "bf16"}
    (tmp_path / "params.yaml").write_text(json.dumps(params))
    base = str(tiny_model_dir)
    run_module(tmp_path, "prepare", "--domain", "qa", "--out", "data/qa")
    run_module(tmp_path, "train", "--domain", "qa", "--method", "baseline", "--seed", "3",
               "--base", base, "--data", "data/qa", "--out", "models/lora", "--plots", "plots")
    run_module(tmp_path, "generate", "--domain", "qa", "--system", "baseline", "--seed", "3",
               "--base", base, "--adapter", "models/lora", "--data", "data/qa",
               "--out", "gen.jsonl")
    run_module(tmp_path, "evaluate", "--domain", "qa", "--system", "baseline", "--seed", "3",
               "--generations", "gen.jsonl", "--data", "data/qa", "--metrics", "m.json",
               "--scores", "s.jsonl")
    read = lambda name: json.loads((tmp_path / name).read_text())  # noqa: E731
    rows = lambda name: [json.loads(line) for line in (tmp_path / name).open()]  # noqa: E731
    assert read("models/lora/train_summary.json")["precision"] == "bf16"
    assert read("plots/metrics.json")["precision"] == "bf16"
    assert read("m.json")["precision"] == "bf16"
    assert {r["precision"] for r in rows("gen.jsonl")} == {"bf16"}
    assert {r["precision"] for r in rows("s.jsonl")} == {"bf16"}
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    runs = mlflow.search_runs(experiment_names=["polychromic-lora"])
    assert sorted(runs["tags.stage"]) == ["evaluate", "generate", "train"]
    assert set(runs["tags.precision"]) == {"bf16"}


@pytest.mark.slow
def test_the_precision_study_runs_each_arm_once_on_validation(tmp_path, tiny_model_dir):
    """`polychromic precision` on the tiny model: 2 seeds x fp32/bf16, each arm's record in
    its precision and from val prompts only; a second call reruns nothing."""
    import subprocess
    import sys

    params = tiny_qa_run_params()
    params["qa"]["primary"]["passk"] = "pass@4"  # 4 samples a prompt
    (tmp_path / "params.yaml").write_text(json.dumps(params))
    run_module(tmp_path, "prepare", "--domain", "qa", "--out", "data/processed/qa")
    command = [sys.executable, "-m", "polychromic.commands.precision", "--domains", "qa",
               "--methods", "baseline", "--seeds", "3", "4", "--base", str(tiny_model_dir)]
    first = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert first.returncode == 0, first.stderr[-3000:]
    val = {json.loads(line)["id"] for line in (tmp_path / "data/processed/qa/val.jsonl").open()}
    for precision in ("fp32", "bf16"):
        for seed in (3, 4):
            folder = tmp_path / f"studies/precision/qa/baseline/{precision}/seed{seed}"
            record = json.loads((folder / "arm.json").read_text())
            assert (record["precision"], record["seed"]) == (precision, seed)
            rows = [json.loads(line) for line in (folder / "val.jsonl").open()]
            assert {r["id"] for r in rows} <= val and {r["precision"] for r in rows} == {
                precision}
            assert set(record["values"]) == {"val_loss", "distinct_classes", "pass@4", "pass@1"}
    study = json.loads((tmp_path / "metrics/studies/precision.json").read_text())
    assert [r["metric"] for r in study["rows"]] == ["val_loss", "distinct_classes", "pass@4",
                                                   "pass@1"]
    assert all(r["seeds"] == [3, 4] for r in study["rows"])
    table = (tmp_path / "docs/precision-results.md").read_text()
    assert "| qa | baseline | val_loss | 2 |" in table
    again = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0 and "seed3 ..." not in again.stdout
    assert json.loads((tmp_path / "metrics/studies/precision.json").read_text()) == study
