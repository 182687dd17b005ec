"""The results a reader sees are rendered from metrics/, never typed: the README's block and
docs/results-tables.md equal what `polychromic.results` makes of the committed metrics, and
the rendering says what the comparison file says."""

from __future__ import annotations

import pytest
import yaml

from polychromic.config import UserError
from polychromic.results import (
    END,
    START,
    block_of,
    domain_block,
    headline,
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
