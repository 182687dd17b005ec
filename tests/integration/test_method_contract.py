"""The method contract: a method written here, in a test, as one new module of
`polychromic.methods` plus its params section, runs through the unchanged stages train ->
generate -> evaluate, and its own settings and batch fields reach its Trainer.

The method `still` scales the cross-entropy by its `factor` (0 here): AdamW then never moves
the adapter, whose B starts at 0, so the trained system is the base model exactly and its
samples are the zero-shot system's, draw for draw."""

import json
import shutil
import textwrap

import pytest
import yaml

from tests.helpers import REPO, run_module, tiny_qa_run_params

STILL = textwrap.dedent('''
    """Method `still` (a test's): LoRA whose loss is scaled by `factor`."""
    from dataclasses import dataclass, field

    from polychromic.methods import Method, register


    @dataclass
    class StillConfig:
        factor: float = field(default=1.0, metadata={"help": "loss multiplier"})


    def trainer_class():
        from transformers import Trainer

        class StillTrainer(Trainer):
            def __init__(self, *args, factor, **kwargs):
                super().__init__(*args, **kwargs)
                self.factor = factor

            def compute_loss(self, model, inputs, return_outputs=False,
                             num_items_in_batch=None):
                inputs = dict(inputs)
                if model.training:  # the method's batch field reaches its trainer
                    assert inputs.pop("record_index").ndim == 1
                loss = super().compute_loss(model, inputs, return_outputs,
                                            num_items_in_batch)
                return loss * self.factor if model.training else loss

        return StillTrainer


    register(Method(name="still", trainer_class=trainer_class, config=StillConfig,
                    options=lambda config, *_: {"factor": config.factor},
                    batch_fields=("record_index",)))
''')


def tiny_qa_params() -> dict:
    params = tiny_qa_run_params()
    params["methods"], params["systems"] = ["baseline", "still"], ["zero_shot", "baseline", "still"]
    params["still"] = {"factor": 0.0}
    return params


@pytest.mark.slow
def test_a_new_method_runs_through_the_unchanged_stages(tmp_path, tiny_model_dir):
    shutil.copytree(REPO / "polychromic", tmp_path / "polychromic",
                    ignore=shutil.ignore_patterns("__pycache__"))
    (tmp_path / "polychromic" / "methods" / "still.py").write_text(STILL)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(tiny_qa_params()))
    base = str(tiny_model_dir)
    run_module(tmp_path, "prepare", "--domain", "qa", "--out", "data/qa")
    run_module(tmp_path, "train", "--domain", "qa", "--method", "still", "--seed", "3",
               "--base", base, "--data", "data/qa", "--out", "models/still")
    summary = json.loads((tmp_path / "models/still/train_summary.json").read_text())
    assert summary["steps"] == 2
    run_module(tmp_path, "generate", "--domain", "qa", "--system", "still", "--seed", "3",
               "--base", base, "--adapter", "models/still", "--data", "data/qa",
               "--out", "still.jsonl")
    run_module(tmp_path, "generate", "--domain", "qa", "--system", "zero_shot", "--seed", "3",
               "--base", base, "--data", "data/qa", "--out", "zero_shot.jsonl")
    for system in ("still", "zero_shot"):
        run_module(tmp_path, "evaluate", "--domain", "qa", "--system", system, "--seed", "3",
                   "--generations", f"{system}.jsonl", "--data", "data/qa",
                   "--metrics", f"{system}.json", "--scores", f"{system}-scores.jsonl")
    still, zero = ([json.loads(line) for line in (tmp_path / f"{s}.jsonl").open()]
                   for s in ("still", "zero_shot"))
    assert [r["samples"] for r in still] == [r["samples"] for r in zero]
    metrics = {s: json.loads((tmp_path / f"{s}.json").read_text()) for s in ("still", "zero_shot")}
    assert metrics["still"]["system"] == "still"
    assert metrics["still"]["passk"] == metrics["zero_shot"]["passk"]
    assert metrics["still"]["diversity"] == metrics["zero_shot"]["diversity"]


def test_an_unknown_method_is_one_line_naming_the_known_ones(tmp_path, capsys, monkeypatch):
    from polychromic.stages import train

    params = tiny_qa_params()
    params["methods"] = ["baseline", "nonesuch"]
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exit_:
        from polychromic.config import run_main

        run_main(train.main, ["--domain", "qa", "--method", "nonesuch", "--seed", "1",
                              "--base", "b", "--data", "d", "--out", "o"])
    assert exit_.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err == ("error: params.yaml: 'methods' names unknown method 'nonesuch' "
                   "(known: baseline, passk, polychromic, quality_diversity, set_objective)")
