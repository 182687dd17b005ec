"""The domain contract: a domain written here, in a test, as one new package plus one params
section, runs through the unchanged stages prepare -> generate -> evaluate, and the metrics
it gets are the ones its checker and the shared metrics say."""

import json
import shutil
import textwrap

import pytest
import yaml

from polychromic import metrics
from tests.conftest import REPO, run_module

ECHO = textwrap.dedent('''
    """Domain `echo` (a test's): say the word back."""
    from dataclasses import dataclass

    from polychromic.domains import Checker, Domain, NoSettings, Sampling, Verdict

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
        sections = {"data": EchoData, "prompt": NoSettings, "sampling": Sampling,
                    "checker": NoSettings}
        quality_metrics = ("rouge_l", "log_perplexity")
        domain_metrics = {"length": (False, "Words")}

        def load_splits(self):
            records = [{"id": f"echo-{i}", "prompt": f"Say {w}.",
                        "references": [w] * self.settings["data"].copies, "task": {"word": w}}
                       for i, w in enumerate(WORDS)]
            return {"train": records[:4], "val": records[4:8], "test": records[8:],
                    "fewshot": records[:2]}

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


def run(cwd, module, *args):
    run_module(cwd, module, *args, src=cwd / "src")  # the copy with the test's domain


@pytest.mark.slow
def test_a_new_domain_runs_through_the_unchanged_stages(tmp_path, tiny_model_dir):
    shutil.copytree(REPO / "src", tmp_path / "src",
                    ignore=shutil.ignore_patterns("__pycache__"))
    package = tmp_path / "src" / "polychromic" / "domains" / "echo"
    package.mkdir()
    (package / "__init__.py").write_text(ECHO)
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["domains"] = ["echo"]
    params["echo"] = {"data": {"copies": 2}, "prompt": {}, "checker": {}, "train": {},
                      "sampling": {"test_prompts": 3, "max_new_tokens": 5,
                                   "temperature": 1.0, "top_p": 1.0}}
    params["generate"].update(n=10, batch_prompts=2, few_shot_examples=2)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))

    run(tmp_path, "prepare", "--domain", "echo", "--out", "data/echo")
    test = [json.loads(line) for line in (tmp_path / "data/echo/test.jsonl").open()]
    assert [r["id"] for r in test] == ["echo-8", "echo-9", "echo-10", "echo-11"]
    assert test[0] == {"id": "echo-8", "prompt": "Say candle.",
                       "references": ["candle", "candle"], "task": {"word": "candle"}}
    for system in ("zero_shot", "few_shot"):
        run(tmp_path, "generate", "--domain", "echo", "--system", system, "--seed", "1",
            "--base", str(tiny_model_dir), "--data", "data/echo", "--out", f"{system}.jsonl")
        run(tmp_path, "evaluate", "--domain", "echo", "--system", system, "--seed", "1",
            "--generations", f"{system}.jsonl", "--data", "data/echo",
            "--metrics", f"{system}.json", "--scores", f"{system}-scores.jsonl")

        rows = [json.loads(line) for line in (tmp_path / f"{system}.jsonl").open()]
        assert [r["id"] for r in rows] == ["echo-8", "echo-9", "echo-10"]  # test_prompts
        assert all(len(r["samples"]) == 10 and len(r["reference_nll"]) == 2 for r in rows)
        result = json.loads((tmp_path / f"{system}.json").read_text())
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
        assert set(result["quality"]) == {"rouge_l", "log_perplexity", "perplexity"}
        assert result["quality"]["rouge_l"] == pytest.approx(sum(
            metrics.rouge(row["samples"][0], row["references"])["rouge_l"] for row in rows) / 3)
