"""Stage `curves`: the train stages' DVCLive logs of a domain in one long table, every
method and seed, checked against hand-written logs; a broken log is one line naming it."""

import csv

import pytest
import yaml

from polychromic.config import UserError
from polychromic.stages import curves


def log(folder, metric, rows, header=None):
    path = folder / f"{metric}.tsv"
    path.parent.mkdir(parents=True, exist_ok=True)
    name = metric.split("/")[1]
    lines = [header or f"step\t{name}"] + [f"{step}\t{value}" for step, value in rows]
    path.write_text("\n".join(lines) + "\n")


def test_every_run_and_metric_in_one_table(tmp_path, monkeypatch):
    runs = tmp_path / "plots/qa/train"
    lora = runs / "baseline/seed42/plots/metrics"
    poly = runs / "polychromic/seed42/plots/metrics"
    log(lora, "train/loss", [(5, 2.5), (10, 2.0)])
    log(lora, "eval/loss", [(10, 2.2)])
    log(lora, "train/learning_rate", [(5, 1e-4)])
    log(poly, "train/loss", [(5, 2.6)])
    log(poly, "train/diversity_score", [(5, 0.3)])
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(
        {"methods": ["baseline", "polychromic"], "seeds": [42]}))
    monkeypatch.chdir(tmp_path)
    curves.main(["--domain", "qa", "--runs", "plots/qa/train", "--out", "curves/qa.csv"])
    with open(tmp_path / "curves/qa.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [(r["method"], r["metric"], r["step"], r["value"]) for r in rows] == [
        ("baseline", "eval/loss", "10", "2.2"),
        ("baseline", "train/loss", "5", "2.5"), ("baseline", "train/loss", "10", "2.0"),
        ("polychromic", "train/diversity_score", "5", "0.3"),
        ("polychromic", "train/loss", "5", "2.6")]  # no learning rate: the same for all
    assert {r["seed"] for r in rows} == {"42"}


def test_a_missing_run_names_its_folder(tmp_path):
    with pytest.raises(UserError, match="seed7/plots/metrics: no training logs"):
        curves.curve_rows({("baseline", 7): tmp_path / "baseline/seed7/plots/metrics"})


def test_a_log_with_another_header_names_file_and_line(tmp_path):
    log(tmp_path, "train/loss", [(5, 1.0)], header="epoch\tloss")
    with pytest.raises(UserError, match=r"train/loss.tsv:1: expected the header"):
        curves.run_curves(tmp_path)


def test_a_log_with_a_bad_number_names_the_file(tmp_path):
    log(tmp_path, "train/loss", [(5, "nan?")])
    with pytest.raises(UserError, match=r"loss.tsv: not a step and a number"):
        curves.run_curves(tmp_path)
