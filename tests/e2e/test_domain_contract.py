"""The domain contract: a domain written here, in a test, as one new package plus one params
section (and its name in `domains`), runs through the unchanged pipeline with `dvc repro`,
every stage from prepare to the results page, and the metrics it gets are the ones its
checker and the shared metrics say."""

import json
import textwrap

import pytest

from polychromic import metrics
from tests.helpers import pipeline_repository, tiny_pipeline_params, traced_repro

ECHO = textwrap.dedent('''
    """Domain `echo` (a test's): say the word back."""
    from dataclasses import dataclass

    from polychromic.domains import Checker, Domain, NoSettings, Verdict

    WORDS = ["apple", "river", "stone", "cloud", "tiger", "piano", "lemon", "forest", "candle",
             "garden", "rocket", "silver"]


    @dataclass
    class EchoData:
        copies: int = 2


    class EchoChecker(Checker):
        def verdicts(self, items):
            return [[Verdict(r["task"]["word"] in s, {"length": float(len(s.split()))})
                     for s in samples] for r, samples in items]

        def rewards(self, items):
            return [[float(v.passed) for v in row] for row in self.verdicts(items)]


    class Echo(Domain):
        sections = {"data": EchoData, "prompt": NoSettings, "checker": NoSettings}
        quality_metrics = ("rouge_l", "log_perplexity")
        domain_metrics = {"length": (False, "Words")}

        def load_splits(self):
            records = [{"id": f"echo-{i}", "prompt": f"Say {w}.",
                        "references": [w] * self.settings["data"].copies, "task": {"word": w}}
                       for i, w in enumerate(WORDS)]
            return {"train": records[:4], "val": records[4:8], "dev": records[8:],
                    "fewshot": records[:2], "confirmation": []}

        def messages(self, record, examples=()):
            chat = [{"role": "system", "content": "Repeat the word."}]
            for example in examples:
                chat += [{"role": "user", "content": example["prompt"]},
                         {"role": "assistant", "content": example["references"][0]}]
            return chat + [{"role": "user", "content": record["prompt"]}]

        def checker(self, val):
            return EchoChecker()


    DOMAIN = Echo
''')


def echo_params(model_dir) -> dict:
    params = tiny_pipeline_params(model_dir, ["echo"])
    params["echo"] = {"data": {"copies": 2}, "prompt": {}, "checker": {}, "train": {},
                      "sampling": {"prompts": 3, "max_new_tokens": 5,
                                   "temperature": 1.0, "top_k": 0, "top_p": 1.0},
                      "primary": {"diversity": "distinct_1", "passk": "pass@10",
                                  "quality": ["pass@1"], "margin": 0.05}}
    params["generate"].update(few_shot_examples=2)
    params["train"].update(max_length=64)
    return params


@pytest.mark.slow
@pytest.mark.e2e
def test_a_new_domain_runs_through_the_unchanged_pipeline(tmp_path, tiny_model_dir):
    repo, _ = pipeline_repository(tmp_path, echo_params(tiny_model_dir),
                                  {"polychromic/domains/echo/__init__.py": ECHO})
    trace = tmp_path / "params-read.jsonl"
    traced_repro(repo, trace)  # every stage declares each params key it reads

    test = [json.loads(line) for line in (repo / "data/processed/echo/dev.jsonl").open()]
    assert [r["id"] for r in test] == ["echo-8", "echo-9", "echo-10", "echo-11"]
    assert test[0] == {"id": "echo-8", "prompt": "Say candle.",
                       "references": ["candle", "candle"], "task": {"word": "candle"}}
    for system in ("zero_shot", "few_shot", "baseline", "polychromic"):
        rows = [json.loads(line) for line in
                (repo / f"data/generations/echo/{system}/seed42.jsonl").open()]
        assert [r["id"] for r in rows] == ["echo-8", "echo-9", "echo-10"]  # sampling.prompts
        assert all(len(r["samples"]) == 10 and len(r["reference_nll"]) == 2 for r in rows)
        result = json.loads((repo / f"metrics/echo/{system}/seed42.json").read_text())
        # the shared metrics and the domain's own, by hand from the samples
        passed = [sum(r["task"]["word"] in s for s in row["samples"])
                  for r, row in zip(test, rows, strict=False)]
        assert result["passk"]["pass@1"] == pytest.approx(sum(passed) / 30)
        assert result["passk"]["pass@10"] == pytest.approx(sum(c > 0 for c in passed) / 3)
        words = [sum(len(s.split()) for s in row["samples"]) / 10 for row in rows]
        assert result["domain"]["length"] == pytest.approx(sum(words) / 3)
        distinct = [metrics.distinct_n(row["samples"], 1) for row in rows]
        assert result["diversity"]["distinct_1"] == pytest.approx(
            metrics.mean_defined(distinct)[0])
        # the default equivalence classes: the text up to case and spacing
        classes = [len({" ".join(s.lower().split()) for s in row["samples"]}) for row in rows]
        assert result["diversity"]["distinct_classes"] == pytest.approx(sum(classes) / 3)
        assert set(result["quality"]) == {"rouge_l", "log_perplexity", "perplexity"}
        assert result["quality"]["rouge_l"] == pytest.approx(sum(
            metrics.rouge(row["samples"][0], row["references"])["rouge_l"] for row in rows) / 3)
    # its primary hypotheses, from its own params section, and the pages that show them
    comparison = json.loads((repo / "metrics/echo/comparison.json").read_text())
    assert [(h["metric"], h["test"]) for h in comparison["primary"]["family"]] == [
        ("distinct_1", "superiority"), ("pass@10", "superiority"), ("pass@1", "non-inferiority")]
    assert "Words" in (repo / "metrics/report/echo/table1.md").read_text()
    assert "## echo" in (repo / "docs/results-tables.md").read_text()
