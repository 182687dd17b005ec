"""The results a reader sees are rendered from metrics/, never typed: the README's block and
docs/results-tables.md equal what `polychromic.results` makes of the committed metrics, and
the rendering says what the comparison file says."""

from __future__ import annotations

import json

import pytest
import yaml

from polychromic.config import UserError
from polychromic.results import (
    END,
    START,
    block_of,
    domain_block,
    headline,
    protocol_page,
    replace_block,
    tables_page,
)
from tests.helpers import REPO

DOMAINS = yaml.safe_load((REPO / "params.yaml").read_text())["domains"]


def test_the_readme_block_is_the_committed_metrics():
    block = block_of((REPO / "README.md").read_text(encoding="utf-8"))
    assert block == headline(DOMAINS, REPO / "metrics"), (
        "README.md's results block differs from metrics/: run `polychromic readme`")


def test_the_tables_page_is_the_committed_metrics():
    page = (REPO / "docs" / "results-tables.md").read_text(encoding="utf-8")
    assert page == tables_page(DOMAINS, REPO / "metrics"), (
        "docs/results-tables.md differs from metrics/: run `dvc repro results`")


def comparison(p_holm: float, met: bool) -> dict:
    return {"seeds": [1, 2], "n_prompts": 5, "reference": "poly", "lora_system": "lora",
            "correction": "holm", "alpha": 0.05,
            "verdict": {"minimum": {"met": met}, "strong": {"met": False}},
            "primary": {"family": [
                {"metric": "semantic", "test": "superiority", "margin": 0.0,
                 "mean_reference": 0.5, "mean_lora": 0.25, "mean_difference": 0.25,
                 "cohens_dz": 1.234, "p_holm": p_holm},
                {"metric": "pass@1", "test": "non-inferiority", "margin": 0.0125,
                 "mean_reference": None, "mean_lora": 0.25, "mean_difference": None,
                 "cohens_dz": None, "p_holm": None, "power": {"power_at_zero": 0.173}},
                {"metric": "pass@10", "test": "superiority", "margin": 0.0,
                 "against": "lora_matched", "mean_reference": 0.5, "mean_lora": 0.5,
                 "mean_difference": 0.0, "cohens_dz": 0.0, "p_holm": 0.5}]}}


def test_a_domain_block_says_what_the_comparison_says():
    text = domain_block("toy", comparison(0.01, True))
    lines = text.splitlines()
    assert lines[0] == "**toy** (5 dev prompts, 2 seeds): minimum bar met"
    assert lines[2] == ("| Metric | Hypothesis | poly | lora | Difference | d_z | p (holm) "
                        "| Holds at 0.05 | Power at 0 |")
    assert lines[4] == ("| semantic | superiority | 0.500 | 0.250 | 0.250 | 1.23 | 0.010 | yes "
                        "| – |")
    assert lines[5] == ("| pass@1 | non-inferiority (δ 0.0125) | – | 0.250 | – | – | – | – "
                        "| 17% |")
    # a hypothesis against another comparator (the matched LoRA) names it
    assert lines[6].startswith("| pass@10 | superiority vs lora_matched | 0.500 |")
    assert domain_block("toy", comparison(0.06, False)).splitlines()[4].endswith("| no | – |")


def test_the_block_is_replaced_between_its_markers_only():
    text = f"head\n{START}\nold\n{END}\ntail\n"
    assert replace_block(text, "new\n", "R") == f"head\n{START}\nnew\n{END}\ntail\n"
    assert block_of(replace_block(text, "new\n", "R")) == "new\n"
    with pytest.raises(UserError, match="R: needs one"):
        replace_block("no markers", "x", "R")
    with pytest.raises(UserError, match="R: needs one"):
        replace_block(f"{END}\n{START}\n", "x", "R")


def protocol_metrics(root):
    folder = root / "toy"
    folder.mkdir(parents=True)
    files = {
        "comparison.json": comparison(0.01, True),
        "matched.json": {"metric": "distinct_classes", "reference_temperature": 0.7,
                         "target": 4.5, "temperature": 0.95, "outside": None,
                         "curve": [[0.5, 3.0], [0.9, 4.25], [1.3, 6.0]]},
        "frontier.json": {"seed": 42, "diversity": "distinct_classes", "reference": "poly",
                          "reference_vs_frontier": {
                              "baseline temperature": {"pass@1": {"gap": -0.05,
                                                                  "clears": False},
                                                       "pass@10": {"gap": 0.1,
                                                                   "clears": True}},
                              "baseline adapter_scale": {"pass@1": {"gap": None,
                                                                    "clears": None},
                                                         "pass@10": {"gap": None,
                                                                     "clears": None}}}},
        "power.json": {"alpha": 0.0125, "power": 0.8, "available": 300, "hypotheses": [
            {"metric": "distinct_classes", "test": "superiority", "against": "lora",
             "val_sd_difference": 1.5, "effect_dz": 0.3, "prompts_needed": 110,
             "power_at_available": 0.99},
            {"metric": "pass@1", "test": "non-inferiority", "against": "matched",
             "val_sd_difference": 0.2, "margin": 0.02,
             "prompts_needed": {"10": 900, "20": 500, "40": None},
             "power_at_available": {"10": 0.3, "20": 0.5, "40": 0.6},
             "samples_chosen": None, "margin_share_reachable": 0.081}]}}
    for name, data in files.items():
        (folder / name).write_text(json.dumps(data))


def test_the_protocol_page_says_what_its_files_say(tmp_path):
    protocol_metrics(tmp_path)
    page = protocol_page(["toy"], tmp_path, "../plots")
    assert "LoRA reaches it at temperature **0.950** (LoRA's curve: 0.5: 3.000, " in page
    assert "| pass@10 | superiority vs lora_matched |" in page
    assert "| LoRA temperature | -0.050 (does not clear) | 0.100 (clears) |" in page
    assert "| LoRA adapter scale | – (outside the frontier) | – (outside the frontier) |" in page
    assert "![Figure 3, toy](../plots/toy/frontier/figure3.png)" in page
    assert ("| distinct_classes | superiority | lora | 1.500 | 110 | 99% | d_z 0.3 |"
            in page)
    assert ("| pass@1 | non-inferiority | matched | 0.200 | 10: 900, 20: 500, 40: – | "
            "10: 30%, 20: 50%, 40: 60% | margin 0.020, no samples suffice; reachable margin "
            "8.1% |") in page
    (tmp_path / "toy" / "power.json").unlink()
    with pytest.raises(UserError, match="power.json: cannot read the power plan"):
        protocol_page(["toy"], tmp_path, "../plots")
