"""The selection rule of docs/objectives.md, on val: among the settings whose pass@1 is at
least LoRA's minus the margin and whose primary diversity is at least LoRA's, the highest
pass@10; ties to the smaller weight, then to the earlier arm. A pure function of each arm's
means, so that the rule is tested apart from any run."""

from __future__ import annotations

from collections.abc import Sequence

TIE = 1e-9


def select(arms: Sequence[dict], lora: str, diversity: str, margin_share: float,
           passk: str = "pass@10", quality: str = "pass@1") -> dict:
    """`arms`: in the rule's order, each {"arm", "weight", <metric>: {"mean", ...}} (LoRA's
    among them, named `lora`). Returns each arm's eligibility and the choice (None: none
    eligible)."""
    by_name = {a["arm"]: a for a in arms}
    if lora not in by_name:
        raise ValueError(f"no LoRA arm {lora!r} among the arms")
    base = by_name[lora]
    floor = base[quality]["mean"] - margin_share * base[quality]["mean"]
    rows = []
    for position, a in enumerate(arms):
        if a["arm"] == lora:
            continue
        reasons = []
        if a[quality]["mean"] is None or a[quality]["mean"] < floor:
            reasons.append(f"{quality} below LoRA's minus the margin")
        if a[diversity]["mean"] is None or a[diversity]["mean"] < base[diversity]["mean"]:
            reasons.append(f"{diversity} below LoRA's")
        rows.append({"arm": a["arm"], "position": position, "eligible": not reasons,
                     "why_not": reasons})
    eligible = [r for r in rows if r["eligible"]]

    def rank(row: dict) -> tuple:
        a = by_name[row["arm"]]
        return (-round(a[passk]["mean"] / TIE) * TIE, a.get("weight") or 0.0, row["position"])

    chosen = min(eligible, key=rank)["arm"] if eligible else None
    return {"lora": lora, "quality_floor": floor, "diversity_floor": base[diversity]["mean"],
            "rows": rows, "chosen": chosen}
