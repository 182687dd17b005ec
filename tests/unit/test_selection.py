"""The selection rule of docs/objectives.md on crafted arms."""

import pytest

from polychromic.selection import select


def arm(name, weight, pass1, pass10, diversity):
    return {"arm": name, "weight": weight, "pass@1": {"mean": pass1},
            "pass@10": {"mean": pass10}, "distinct_classes": {"mean": diversity}}


def test_the_best_eligible_pass_at_10_wins():
    arms = [arm("lora", None, 0.50, 0.70, 3.0),
            arm("qd-0.1", 0.1, 0.49, 0.72, 3.1),   # within the margin (0.475), more diverse
            arm("qd-1", 1.0, 0.40, 0.90, 5.0),     # pass@1 too low
            arm("set-0.3", 0.3, 0.55, 0.80, 2.9),  # less diverse than LoRA
            arm("pk-0.3", 0.3, 0.50, 0.75, 3.0)]   # eligible, best pass@10
    result = select(arms, "lora", "distinct_classes", 0.05)
    assert result["quality_floor"] == pytest.approx(0.475)
    assert result["chosen"] == "pk-0.3"
    why = {r["arm"]: r["why_not"] for r in result["rows"]}
    assert why == {"qd-0.1": [], "qd-1": ["pass@1 below LoRA's minus the margin"],
                   "set-0.3": ["distinct_classes below LoRA's"], "pk-0.3": []}


def test_ties_go_to_the_smaller_weight_then_the_earlier_arm():
    arms = [arm("lora", None, 0.5, 0.7, 3.0), arm("a-1", 1.0, 0.5, 0.8, 3.0),
            arm("b-0.3", 0.3, 0.5, 0.8 + 1e-12, 3.0), arm("c-0.3", 0.3, 0.5, 0.8, 3.0)]
    assert select(arms, "lora", "distinct_classes", 0.05)["chosen"] == "b-0.3"


def test_none_eligible_chooses_nothing():
    arms = [arm("lora", None, 0.5, 0.7, 3.0), arm("a", 0.1, 0.1, 0.9, 9.0)]
    assert select(arms, "lora", "distinct_classes", 0.05)["chosen"] is None
    with pytest.raises(ValueError, match="no LoRA arm"):
        select(arms[1:], "lora", "distinct_classes", 0.05)
