"""LoRA training on the tiny Llama: what changes, what must not, and the loss under
gradient accumulation."""

import torch
from transformers import AutoTokenizer
from transformers.training_args import OptimizerNames

from polychromic.domains.replies import Replies
from polychromic.methods import build_trainer
from polychromic.modeling import (
    IGNORE_INDEX,
    PackCollator,
    PadCollator,
    causal_lm_loss,
    encode_example,
    load_model,
    prompt_text,
)
from polychromic.settings import LoraSettings, TrainConfig
from polychromic.training import add_lora, training_arguments

DOMAIN = Replies("replies", {})
PAIRS = [("hi, how are you?", "good thanks, you?"),
         ("what did you do this weekend", "went hiking with my sister, it was great"),
         ("lol", "haha"),
         ("do you like pizza or pasta more? honestly i can't decide", "pizza, always"),
         ("just got home", "welcome back! long day?"),
         ("it's raining again", "ugh, same here")]


def prompt(tokenizer, text):
    return prompt_text(tokenizer, DOMAIN.messages({"prompt": text}))


def encoded(tokenizer, max_length=96):
    return [encode_example(tokenizer, prompt(tokenizer, p), r, max_length) for p, r in PAIRS]


def tiny_config(**overrides):
    values = {"learning_rate": 1e-2, "lr_schedule": "constant", "warmup_steps": 0,
              "max_steps": 3, "batch_size": 2, "eval_every": 100, "checkpoint_every": 100,
              "early_stopping_patience": 0, "logging_every": 1,
              "lora": LoraSettings(r=4, alpha=8, dropout=0.0, target_modules=["q_proj", "v_proj"])}
    config = TrainConfig(**{**values, **overrides})
    config.check("train")
    return config


def test_prompt_tokens_are_masked_and_reply_ends_the_turn(tiny_model_dir):
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    messages = DOMAIN.messages({"prompt": "hi there"})
    example = encode_example(tokenizer, prompt(tokenizer, "hi there"), "hello!", max_length=128)
    n_masked = example["labels"].count(IGNORE_INDEX)
    text = tokenizer.decode(example["input_ids"][:n_masked])
    assert text == tokenizer.apply_chat_template(messages, tokenize=False,
                                                 add_generation_prompt=True)
    assert tokenizer.decode(example["labels"][n_masked:]) == "hello!" + tokenizer.eos_token
    assert example["labels"][n_masked:] == example["input_ids"][n_masked:]
    assert encode_example(tokenizer, text, "hello!", max_length=n_masked) is None


def run_training(tiny_model_dir, tmp_path, config, optim=None, collator=None):
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = add_lora(load_model(tiny_model_dir), config.lora, seed=0)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    args = training_arguments(config, tmp_path / "checkpoints", seed=0)
    args.save_strategy = "no"
    args.disable_tqdm = True
    if optim is not None:
        args.optim = optim
    data = encoded(tokenizer)
    trainer = build_trainer("baseline", model, args, data, data[:2], [], {})
    if collator is not None:  # in place of build_trainer's PackCollator
        trainer.data_collator = collator
    trainer.train()
    after = dict(model.named_parameters())
    return before, after


def test_every_lora_parameter_changes_and_no_base_weight_does(tiny_model_dir, tmp_path):
    before, after = run_training(tiny_model_dir, tmp_path, tiny_config())
    lora = [n for n in after if "lora_" in n]
    assert lora and all(after[n].requires_grad for n in lora)
    for name, value in after.items():
        if "lora_" in name:
            assert not torch.equal(before[name], value), f"{name} did not change"
        else:
            assert not value.requires_grad, name
            assert torch.equal(before[name], value), f"base weight {name} changed"


def test_gradient_accumulation_matches_one_big_batch(tiny_model_dir, tmp_path):
    """One SGD step on 4 examples of unequal reply lengths: 1 x 4 and 2 x 2 (accumulated)
    give the same update, i.e. the loss is the token mean over the whole effective batch."""
    sgd = OptimizerNames.SGD
    _, big = run_training(tiny_model_dir, tmp_path / "a",
                          tiny_config(max_steps=1, batch_size=4), optim=sgd)
    _, accumulated = run_training(tiny_model_dir, tmp_path / "b",
                                  tiny_config(max_steps=1, batch_size=2, gradient_accumulation=2),
                                  optim=sgd)
    moved = [n for n in big if "lora_B" in n]
    assert moved
    for name in moved:
        torch.testing.assert_close(big[name], accumulated[name], rtol=1e-4, atol=1e-7)


def test_a_packed_batch_has_the_padded_batchs_loss_and_gradient(tiny_model_dir):
    """PackCollator (examples end to end, logits only where a label is predicted) against
    PadCollator and transformers' own loss on the same fixed batch of unequal lengths:
    the same loss and LoRA gradient, so packing changes the cost, not the training."""
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = add_lora(load_model(tiny_model_dir), tiny_config().lora, seed=0)
    for module in model.modules():  # lora_B starts at 0: move it so every gradient is live
        if hasattr(module, "lora_B"):
            torch.nn.init.normal_(module.lora_B["default"].weight, std=0.1)
    data = encoded(tokenizer)
    assert len({len(example["input_ids"]) for example in data}) > 1

    def loss_and_gradient(batch, loss_of):
        model.zero_grad()
        loss = loss_of(batch)
        loss.backward()
        return loss.item(), [p.grad.clone() for p in model.parameters() if p.requires_grad]

    padded = PadCollator(tokenizer.pad_token_id)(data)
    packed = PackCollator()(data)
    assert packed["input_ids"].shape == (1, sum(len(e["input_ids"]) for e in data))
    labelled = sum(sum(label != IGNORE_INDEX for label in e["labels"][1:]) for e in data)
    assert packed["logits_to_keep"].numel() == labelled
    reference = loss_and_gradient(padded, lambda b: model(**b).loss)  # transformers' loss
    for batch in (padded, packed):
        inputs = {k: v for k, v in batch.items() if k != "labels"}
        loss, gradient = loss_and_gradient(
            inputs, lambda b, y=batch["labels"]: causal_lm_loss(model(**b), y))
        assert abs(loss - reference[0]) < 1e-5 * reference[0]
        for mine, theirs in zip(gradient, reference[1], strict=True):
            torch.testing.assert_close(mine, theirs, rtol=1e-4, atol=1e-6)


def test_training_on_packed_batches_takes_the_padded_batches_step(tiny_model_dir, tmp_path):
    """Two SGD steps through the Trainer: packed and padded batches move the weights alike."""
    sgd = OptimizerNames.SGD
    _, packed = run_training(tiny_model_dir, tmp_path / "a", tiny_config(max_steps=2), sgd)
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    _, padded = run_training(tiny_model_dir, tmp_path / "b", tiny_config(max_steps=2), sgd,
                             PadCollator(tokenizer.pad_token_id))
    for name in (n for n in packed if "lora_" in n):
        torch.testing.assert_close(packed[name], padded[name], rtol=1e-4, atol=1e-7)


def test_the_saved_adapter_config_does_not_depend_on_the_hash_seed(tiny_model_dir, tmp_path):
    """peft keeps target_modules in a set; saved as it iterates, the adapter's bytes (and
    its hash in dvc.lock) would change with each process's PYTHONHASHSEED."""
    import os
    import subprocess
    import sys

    script = (
        "import sys; from polychromic.config import load_section;"
        "from polychromic.modeling import load_model;"
        "from polychromic.settings import TrainConfig;"
        "from polychromic.training import add_lora, save_adapter;"
        "config = load_section(TrainConfig, {'train': {'lora': {'target_modules': "
        "['q_proj', 'k_proj', 'v_proj', 'o_proj', 'up_proj']}}}, 'train');"
        "model = add_lora(load_model(sys.argv[1]), config.lora, 0);"
        "save_adapter(model, sys.argv[2])")
    written = []
    for seed in ("1", "2"):  # two orders of the set, and the file's order checked below
        out = tmp_path / seed
        env = {**os.environ, "PYTHONHASHSEED": seed}
        subprocess.run([sys.executable, "-c", script, str(tiny_model_dir), str(out)], env=env,
                       check=True, timeout=300)
        written.append((out / "adapter_config.json").read_bytes())
    assert written[0] == written[1]
    assert b'"k_proj",\n    "o_proj",\n    "q_proj",\n    "up_proj",\n    "v_proj"' in written[0]
