"""The protocol's own stages on hand-made files: match picks the interpolated temperature
from evaluate's val metrics, power plans from val scores, frontier draws Figure 3 and says
where polychromic lies against LoRA's frontier."""

import json

import numpy as np
import pytest
import yaml

from polychromic import stats
from polychromic.config import UserError
from polychromic.stages import frontier, match, power
from tests.helpers import default_params


@pytest.fixture
def project(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(default_params()))
    return tmp_path


def metrics_file(path, system, temperature, diversity, pass1=0.2, scale=1.0):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"system": system, "sampling": {"temperature": temperature,
                                                               "adapter_scale": scale},
                                "diversity": {"distinct_classes": diversity},
                                "passk": {"pass@1": pass1}}))


def test_match_writes_the_interpolated_temperature(project):
    for t, v in [(0.5, 2.0), (0.7, 3.0), (0.9, 5.0), (1.1, 6.0), (1.3, 6.5)]:
        metrics_file(project / f"val/baseline/temperature-{t}.json", "baseline", t, v)
    # LoRA at its evaluated setting shares the folder (the protocol's val_reference) and is
    # not a point of the grid
    metrics_file(project / "val/baseline/evaluated.json", "baseline", 0.7, 9.0)
    metrics_file(project / "val/polychromic.json", "polychromic", 0.7, 4.0)
    match.main(["--domain", "qa", "--lora", "val/baseline", "--reference",
                "val/polychromic.json", "--out", "matched.json"])
    result = json.loads((project / "matched.json").read_text())
    assert [t for t, _ in result["curve"]] == [0.5, 0.7, 0.9, 1.1, 1.3]
    assert result["temperature"] == 0.8 and result["target"] == 4.0  # halfway from 3 to 5
    assert result["metric"] == "distinct_classes" and result["outside"] is None
    assert result["curve"][0] == [0.5, 2.0]
    metrics_file(project / "val/polychromic.json", "polychromic", 0.7, None)
    with pytest.raises(UserError, match="undefined on every prompt"):
        match.main(["--domain", "qa", "--lora", "val/baseline", "--reference",
                    "val/polychromic.json", "--out", "matched.json"])


def scores_file(path, rows):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_power_plans_from_val_scores(project):
    rng = np.random.default_rng(0)
    prompts = 40
    rows = {}
    for name, rate, diversity in (("reference", 0.30, 5.0), ("lora", 0.35, 4.0),
                                  ("matched", 0.33, 5.0)):
        passed = rng.binomial(10, rate, prompts)
        rows[name] = [{"id": f"q{i}", "n": 10, "passed": int(p), "pass@1": p / 10,
                       "pass@10": float(p > 0), "distinct_classes": diversity + rng.normal()}
                      for i, p in enumerate(passed)]
        scores_file(project / f"{name}.jsonl", rows[name])
    sealed = project / "sealed"
    sealed.mkdir()
    (sealed / "qa.sha256").write_text("# polychromic seal: the qa confirmation split\n"
                                      "# records: 2\n# data: x\n" + ("a" * 64 + "\n") * 2)
    power.main(["--domain", "qa", "--reference", "reference.jsonl", "--lora", "lora.jsonl",
                "--matched", "matched.jsonl", "--sealed", "sealed", "--out", "power.json"])
    plan = json.loads((project / "power.json").read_text())
    assert plan["available"] == 2 and plan["alpha"] == pytest.approx(0.05 / 3, rel=1e-5)
    diversity, passk, pass1 = plan["hypotheses"]
    assert (diversity["against"], passk["against"], pass1["against"]) == (
        "lora", "matched", "matched")
    assert diversity["prompts_needed"] == stats.pairs_needed(0.3, 0.05 / 3)
    # pass@1 against the matched system: margin 5% of its val mean, SDs at 10/20/40 samples
    matched_mean = np.mean([r["pass@1"] for r in rows["matched"]])
    assert pass1["margin"] == pytest.approx(0.05 * matched_mean, rel=1e-5)  # 6 digits
    sds = pass1["sd_at_samples"]
    assert sds["10"] == pytest.approx(np.std([a["pass@1"] - b["pass@1"] for a, b in zip(
        rows["reference"], rows["matched"], strict=True)], ddof=1), rel=1e-5)
    assert sds["10"] > sds["20"] > sds["40"]
    assert pass1["samples_chosen"] is None  # two sealed prompts cannot test 5%
    assert pass1["margin_share_reachable"] > 0.05


def test_frontier_draws_figure_3_and_places_polychromic(project):
    def run(folder, name, system, temperature, scale, diversity, pass1):
        metrics_file(project / "points" / folder / f"{name}.json", system, temperature,
                     diversity, pass1, scale)
        scores_file(project / "point_scores" / folder / f"{name}.jsonl",
                    [{"id": f"q{i}", "distinct_classes": diversity + d, "semantic": 0.5,
                      "pass@1": pass1 + d / 10, "pass@10": 0.5} for i, d in
                     enumerate((-0.1, 0.0, 0.1))])
    for t, v, q in [(0.5, 2.0, 0.40), (0.7, 3.0, 0.35), (0.9, 4.0, 0.30), (1.1, 5.0, 0.25),
                    (1.3, 6.0, 0.20)]:
        run("baseline/temperatures", f"temperature-{t}", "baseline", t, 1.0, v, q)
    run("baseline/adapter_scales", "adapter_scale-0.5", "baseline", 0.7, 0.5, 2.5, 0.30)
    evaluated = project / "evaluated" / "polychromic" / "seed42.json"
    metrics_file(evaluated, "polychromic", 0.7, 4.5, 0.33)
    scores_file(project / "evaluated_scores" / "polychromic" / "seed42.jsonl",
                [{"id": f"q{i}", "distinct_classes": 4.5, "semantic": 0.6, "pass@1": 0.33,
                  "pass@10": 0.6} for i in range(3)])
    frontier.main(["--domain", "qa", "--points", "points", "--point-scores", "point_scores",
                   "--evaluated", "evaluated", "--evaluated-scores", "evaluated_scores",
                   "--out", "frontier.json", "--plots", "plots"])
    result = json.loads((project / "frontier.json").read_text())
    assert len(result["points"]) == 7
    temperature = result["reference_vs_frontier"]["baseline temperature"]["pass@1"]
    # LoRA at diversity 4.5: pass@1 0.275
    assert temperature["gap"] == pytest.approx(0.33 - 0.275, rel=1e-4)
    assert temperature["clears"] is True  # its CI is a point: every prompt 0.33
    scale = result["reference_vs_frontier"]["baseline adapter_scale"]["pass@1"]
    assert scale == {"gap": None, "clears": None}  # one scale point: no line
    assert (project / "plots/figure3.png").read_bytes()[:4] == b"\x89PNG"
    csv = (project / "plots/figure3.csv").read_text().splitlines()
    assert csv[0].startswith("system,knob,value,distinct_classes,distinct_classes_low")
    assert len(csv) == 8


def test_frontier_leaves_an_undefined_metric_out_of_its_panel(project):
    """pass@10 is undefined with fewer than 10 samples a prompt: the figure and the csv
    still come out, with its cells empty and no line in its panel."""
    for t, v in [(0.5, 2.0), (0.9, 4.0)]:
        metrics_file(project / "points/baseline/temperatures" / f"temperature-{t}.json",
                     "baseline", t, v)
        scores_file(project / "point_scores/baseline/temperatures" / f"temperature-{t}.jsonl",
                    [{"id": f"q{i}", "distinct_classes": v, "semantic": 0.5, "pass@1": 0.2,
                      "pass@10": None} for i in range(3)])
    metrics_file(project / "evaluated/polychromic/seed42.json", "polychromic", 0.7, 3.0)
    scores_file(project / "evaluated_scores/polychromic/seed42.jsonl",
                [{"id": f"q{i}", "distinct_classes": 3.0, "semantic": 0.6, "pass@1": 0.3,
                  "pass@10": None} for i in range(3)])
    frontier.main(["--domain", "qa", "--points", "points", "--point-scores", "point_scores",
                   "--evaluated", "evaluated", "--evaluated-scores", "evaluated_scores",
                   "--out", "frontier.json", "--plots", "plots"])
    result = json.loads((project / "frontier.json").read_text())
    verdict = result["reference_vs_frontier"]["baseline temperature"]
    assert verdict["pass@10"] == {"gap": None, "clears": None}
    assert verdict["pass@1"]["gap"] == pytest.approx(0.1)
    assert (project / "plots/figure3.png").read_bytes()[:4] == b"\x89PNG"
    rows = (project / "plots/figure3.csv").read_text().splitlines()[1:]
    assert all(row.endswith(",,,") for row in rows)  # pass@10 and its CI: empty
