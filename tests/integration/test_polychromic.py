"""The polychromic trainer on the tiny Llama (untied, LoRA on attention and lm_head): where
its gradient goes, λ = 0, and whether a few dozen steps with λ > 0 keep samples more diverse
than λ = 0."""

import numpy as np
import pytest
import torch
from transformers import Trainer

from polychromic import metrics
from polychromic.methods.polychromic import PolychromicTrainer
from polychromic.modeling import PackCollator, PadCollator
from polychromic.sampling import next_token_distribution
from tests.helpers import (
    PROMPTS,
    arguments,
    chat,
    domain_sampling,
    gradients,
    lora_parameters,
    on_device,
    setup,
    trainer_for,
)


@pytest.fixture(scope="module")
def embedder():
    from polychromic.embedding import shared_embedder

    return shared_embedder("embedded:all-minilm-l6-v2", "polychromic.embedding_model")


def test_diversity_term_has_gradient_on_every_lora_parameter(untied_model_dir, tmp_path,
                                                             embedder):
    tokenizer, model, data, config = setup(untied_model_dir, n_generations=3,
                                           diversity_metric="semantic")
    for name, p in model.named_parameters():  # a trained adapter: B = 0 would zero A's grad
        if "lora_B" in name:
            p.data.normal_(0, 0.05)
    trainer = trainer_for(tmp_path, tokenizer, model, data, config, embedder=embedder)
    batch = on_device(model, PadCollator(tokenizer.pad_token_id)(data[:4]))
    model.train()
    trainer.scaler.running_ms = 0.01  # an earlier update set the scale
    term, score = trainer.sampled_term(model, batch)
    assert 0 < score <= 1
    params = lora_parameters(model)
    assert params and all("lora_" in n for n in params)
    for name, grad in gradients(term, params).items():
        assert grad.abs().sum() > 0, f"no diversity gradient on {name}"


def test_lambda_zero_is_the_baseline_and_lambda_adds_the_term(untied_model_dir, tmp_path,
                                                              embedder):
    tokenizer, model, data, config = setup(untied_model_dir, diversity_weight=0.0,
                                           diversity_metric="semantic")
    batch = on_device(model, PadCollator(tokenizer.pad_token_id)(data[:4]))
    params = lora_parameters(model)
    model.train()
    baseline = Trainer(model=model, args=arguments(tmp_path),
                       data_collator=PadCollator(tokenizer.pad_token_id))
    expected = gradients(baseline.compute_loss(model, batch), params)
    zero = trainer_for(tmp_path, tokenizer, model, data, config)
    for name, grad in gradients(zero.compute_loss(model, batch), params).items():
        assert torch.equal(grad, expected[name]), name

    # λ = 0.5: the gradient is the baseline's plus 0.5 × the diversity term's (same samples)
    config.diversity_weight = 0.5
    half = trainer_for(tmp_path, tokenizer, model, data, config, embedder=embedder)
    half.scaler.running_ms = 0.01  # an earlier update set the scale
    half.generator.manual_seed(3)
    loss = half.compute_loss(model, batch)
    combined = gradients(loss, params)
    half.scaler.running_ms = 0.01  # replay the same step from the same state
    half.generator.manual_seed(3)
    term, _ = half.sampled_term(model, batch)
    term_grads = gradients(term, params)
    for name, grad in combined.items():
        torch.testing.assert_close(grad, expected[name] + 0.5 * term_grads[name])
    assert any(not torch.equal(combined[n], expected[n]) for n in params)
    # the value is the loss's (the surrogate carrying the gradient adds nothing to it)
    quality = baseline.compute_loss(model, batch)
    assert loss.item() == pytest.approx(quality.item() + 0.5 * term.item(), rel=1e-5)
    # the logged split: ‖0.5·∇term‖ / ‖∇CE‖ and the cosine of the two gradients
    flat = lambda grads: torch.cat([g.flatten() for g in grads.values()])  # noqa: E731
    ce, div = flat(expected), 0.5 * flat(term_grads)
    assert half.logged["diversity_grad_ratio"] == [pytest.approx(
        (div.norm() / ce.norm()).item(), rel=1e-4)]
    assert half.logged["diversity_grad_cosine"] == [pytest.approx(
        torch.nn.functional.cosine_similarity(ce, div, dim=0).item(), abs=1e-5)]
    assert half.logged["quality_grad_norm"] == [pytest.approx(ce.norm().item(), rel=1e-5)]


def test_training_changes_every_lora_weight_and_no_base_weight(untied_model_dir, tmp_path):
    tokenizer, model, data, config = setup(untied_model_dir, diversity_weight=1.0)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    trainer_for(tmp_path, tokenizer, model, data, config, steps=3, lr=1e-2).train()
    for name, p in model.named_parameters():
        if "lora_" in name:
            assert not torch.equal(before[name], p), f"{name} did not change"
        else:
            assert torch.equal(before[name], p), f"base weight {name} changed"


def sampled_diversity(trainer, tokenizer, model, seed=0):
    tokenizer.padding_side = "left"
    prompts = [chat(tokenizer, p) for p in PROMPTS]
    encoded = tokenizer(prompts, return_tensors="pt", padding=True,
                        add_special_tokens=False).to(model.device)
    trainer.generator.manual_seed(seed)
    completions, _ = trainer.sample(model.eval(), encoded["input_ids"],
                                    encoded["attention_mask"], 6)
    texts = tokenizer.batch_decode(completions, skip_special_tokens=True)
    scores = [metrics.distinct_n(texts[i * 6:(i + 1) * 6], 1) for i in range(len(PROMPTS))]
    return float(np.mean([s for s in scores if s is not None]))


def test_diversity_weight_keeps_samples_more_diverse(untied_model_dir, tmp_path):
    """Cross-entropy towards one fixed reply collapses the samples; the diversity term, same
    seeds and data, keeps them measurably more diverse."""
    results = {}
    for weight in (0.0, 2.0):
        tokenizer, model, data, config = setup(untied_model_dir, diversity_weight=weight,
                                               n_generations=4, prompts_per_step=4,
                                               temperature=1.0, top_k=0, top_p=1.0)
        trainer = trainer_for(tmp_path / str(weight), tokenizer, model, data, config,
                              steps=30, lr=2e-2)
        trainer.train()
        results[weight] = sampled_diversity(trainer, tokenizer, model)
    # measured here: 0.17 (every sample "ok") against 0.68
    assert results[0.0] < 0.3, results
    assert results[2.0] > results[0.0] + 0.3, results


def test_completion_logprobs_match_one_forward_over_prompt_and_completion(untied_model_dir):
    """Encoding the prompt once and repeating its cache gives the log-probabilities (and
    gradients) of a plain forward over the concatenated, left-padded sequences."""
    tokenizer, model, data, config = setup(untied_model_dir)
    tokenizer.padding_side = "left"
    texts = [f"prompt {'word ' * k}" for k in (1, 5)]
    encoded = tokenizer(texts, return_tensors="pt", padding=True,
                        add_special_tokens=False).to(model.device)
    ids, mask = encoded["input_ids"], encoded["attention_mask"]
    torch.manual_seed(0)
    completions = torch.randint(0, 100, (6, 4)).to(model.device)
    keep = torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0], [1, 0, 0, 0]] * 2, dtype=torch.bool,
                        device=model.device)
    model.eval()
    plain_sampling = domain_sampling(temperature=0.7, top_k=0, top_p=1.0)
    fast = PolychromicTrainer.completion_logprobs(model, ids, mask, completions, keep,
                                                  plain_sampling)

    full_ids = torch.cat([ids.repeat_interleave(3, 0), completions], 1)
    full_mask = torch.cat([mask.repeat_interleave(3, 0), keep.long()], 1)
    logits = model(input_ids=full_ids, attention_mask=full_mask,
                   position_ids=(full_mask.cumsum(-1) - 1).clamp(min=0)).logits
    plain = torch.log_softmax(logits[:, ids.shape[1] - 1:-1] / 0.7, -1).gather(
        -1, completions.unsqueeze(-1)).squeeze(-1)
    torch.testing.assert_close(fast[keep], plain[keep], rtol=1e-4, atol=1e-5)
    params = lora_parameters(model)
    for name, p in model.named_parameters():
        if "lora_B" in name:
            p.data.normal_(0, 0.05)
    fast = PolychromicTrainer.completion_logprobs(model, ids, mask, completions, keep,
                                                  plain_sampling)
    logits = model(input_ids=full_ids, attention_mask=full_mask,
                   position_ids=(full_mask.cumsum(-1) - 1).clamp(min=0)).logits
    plain = torch.log_softmax(logits[:, ids.shape[1] - 1:-1] / 0.7, -1).gather(
        -1, completions.unsqueeze(-1)).squeeze(-1)
    fast_grads = gradients(fast[keep].sum(), params)
    for name, grad in gradients(plain[keep].sum(), params).items():
        torch.testing.assert_close(fast_grads[name], grad, rtol=1e-3, atol=1e-5)


def test_sample_logprobs_are_those_of_the_truncated_distribution_sampled_from(
        untied_model_dir, tmp_path):
    """With top-k and top-p on, each sampled token's log π is the log of the probability the
    sampler drew it with (temperature, then top-k, then top-p, renormalised), and dropout is
    off for both."""
    tokenizer, model, data, config = setup(untied_model_dir, temperature=0.8, top_k=7,
                                           top_p=0.6, n_generations=3)
    for name, p in model.named_parameters():
        if "lora_B" in name:
            p.data.normal_(0, 0.05)
    trainer = trainer_for(tmp_path, tokenizer, model, data, config)
    batch = on_device(model, PadCollator(tokenizer.pad_token_id)(data[:2]))
    ids, mask = trainer.batch_prompts(batch, 2)
    for module in model.modules():  # heavy LoRA dropout, which the term must not see
        if hasattr(module, "lora_dropout"):
            module.lora_dropout["default"] = torch.nn.Dropout(0.5)
    terms = []
    for training in (True, False):
        model.train(training)
        trainer.scaler.running_ms = 0.01
        trainer.generator.manual_seed(1)
        terms.append(trainer.sampled_term(model, batch)[0])
        assert model.training == training  # restored
    assert terms[0].item() != 0 and terms[0].item() == pytest.approx(terms[1].item(), rel=1e-6)
    model.eval()
    completions, keep = trainer.sample(model, ids, mask, 3)
    logprobs = PolychromicTrainer.completion_logprobs(model, ids, mask, completions, keep,
                                                      trainer.sampling)
    full_ids = torch.cat([ids.repeat_interleave(3, 0), completions], 1)
    full_mask = torch.cat([mask.repeat_interleave(3, 0), keep.long()], 1)
    with torch.no_grad():
        logits = model(input_ids=full_ids, attention_mask=full_mask,
                       position_ids=(full_mask.cumsum(-1) - 1).clamp(min=0)).logits
    step_logits = logits[:, ids.shape[1] - 1:-1]
    for row in range(completions.shape[0]):
        for t in range(int(keep[row].sum())):
            probs, candidate_ids = next_token_distribution(step_logits[row, t:t + 1], 0.8, 7,
                                                           0.6)
            token = completions[row, t]
            (where,) = (candidate_ids[0] == token).nonzero()[0]
            assert probs[0, where] > 0  # the sampler could draw it
            assert logprobs[row, t].item() == pytest.approx(probs[0, where].log().item(),
                                                            abs=1e-4)


def test_a_packed_batch_gives_the_padded_batchs_prompts_and_term(untied_model_dir, tmp_path,
                                                                 embedder):
    """train.py packs its batches (PackCollator): the term samples from the same prompts,
    and, from the same random state, gives the same value as on the padded batch."""
    tokenizer, model, data, config = setup(untied_model_dir, n_generations=3,
                                           prompts_per_step=3, diversity_metric="semantic")
    trainer = trainer_for(tmp_path, tokenizer, model, data, config, embedder=embedder)
    padded = on_device(model, PadCollator(tokenizer.pad_token_id)(data[:4]))
    packed = on_device(model, PackCollator()(data[:4]))
    for got, expected in zip(trainer.batch_prompts(packed, 3), trainer.batch_prompts(padded, 3),
                             strict=True):
        assert torch.equal(got, expected)
    terms = []
    for batch in (padded, packed):
        trainer.scaler.running_ms = 0.01
        trainer.generator.manual_seed(5)
        terms.append(trainer.sampled_term(model, batch)[0].item())
    assert terms[0] != 0 and terms[0] == terms[1]


def test_set_objective_rewards_come_from_the_domain_checker(untied_model_dir, tmp_path,
                                                           monkeypatch):
    """With objective `set`, each sample's reward is the domain checker's, for the record
    the batch row came from (`record_index`), on the same decoded samples as the diversity."""
    from polychromic.domains import Checker
    from polychromic.methods import polychromic as polychromic_method

    class Lengths(Checker):  # a graded reward: the share of 6 tokens a sample used
        calls = []

        def rewards(self, items):
            self.calls.append(items)
            return [[min(1.0, len(s.split()) / 6) for s in samples] for _, samples in items]

    seen = []
    real = polychromic_method.set_advantages
    monkeypatch.setattr(polychromic_method, "set_advantages",
                        lambda d, rewards, size: seen.append(list(rewards)) or real(
                            d, rewards, size))
    tokenizer, model, data, config = setup(untied_model_dir, objective="set", n_generations=3,
                                           prompts_per_step=2)
    records = [{"id": f"r{i}", "prompt": p, "references": ["ok"], "task": {}}
               for i, p in enumerate(PROMPTS)]
    checker = Lengths()
    trainer = PolychromicTrainer(
        model=model, args=arguments(tmp_path), train_dataset=data,
        data_collator=PadCollator(tokenizer.pad_token_id), term=config,
        tokenizer=tokenizer, checker=checker, records=records, sampling=domain_sampling())
    batch = on_device(model, PadCollator(tokenizer.pad_token_id)(data[:4]))
    model.train()
    term, _ = trainer.sampled_term(model, batch, torch.tensor([5, 2, 7, 0]))
    (items,) = checker.calls
    assert [record["id"] for record, _ in items] == ["r5", "r2"]  # the first prompts_per_step
    assert all(len(samples) == 3 for _, samples in items)
    assert seen == [[min(1.0, len(s.split()) / 6) for s in samples] for _, samples in items]
    assert term.requires_grad
    with pytest.raises(ValueError, match="needs the domain's checker"):
        PolychromicTrainer(model=model, args=arguments(tmp_path), train_dataset=data,
                           term=config, tokenizer=tokenizer,
                           sampling=domain_sampling())
