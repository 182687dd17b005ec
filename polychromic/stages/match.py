"""Stage `match`: the temperature at which LoRA's diversity on val equals polychromic's.

Temperature alone makes LoRA more diverse. The protocol's pass@k and quality hypotheses
therefore compare polychromic with LoRA sampled at the temperature where LoRA's diversity
(the domain's primary diversity metric, `<domain>.primary.diversity`, which no objective
sees) equals polychromic's at the domain's temperature, both measured on val with seed 42
(`frontier.matched_temperature`: linear interpolation on LoRA's temperature grid; the
nearest end of the grid, flagged, when polychromic is outside LoRA's range). The dev and
confirmation prompts play no part in the choice.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from polychromic.config import UserError, load_section, read_params, run_main
from polychromic.domains import domain_class
from polychromic.frontier import matched_temperature
from polychromic.io import write_json
from polychromic.settings import PrimaryHypotheses


def diversity_of(path: Path, metric: str) -> tuple[float, float | None]:
    """(temperature, the metric's mean) from an evaluate metrics file."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        value = data["diversity"][metric]
        temperature = data["sampling"]["temperature"]
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise UserError(f"{path}: not evaluate's metrics with diversity '{metric}' and a "
                        f"sampling temperature ({err})") from None
    if value is None:
        raise UserError(f"{path}: diversity '{metric}' is undefined on every prompt")
    return temperature, value


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--domain", required=True)
    parser.add_argument("--lora", required=True, type=Path,
                        help="folder of LoRA's val metrics, one file per temperature")
    parser.add_argument("--reference", required=True, type=Path,
                        help="polychromic's val metrics at the domain's temperature")
    parser.add_argument("--out", required=True, type=Path)
    args = parser.parse_args(argv)
    params = read_params()
    domain_class(args.domain)
    metric = load_section(PrimaryHypotheses, params, f"{args.domain}.primary").diversity
    # the grid only: the folder also holds LoRA at its evaluated setting (evaluated.json)
    files = sorted(args.lora.glob("temperature-*.json"))
    if len(files) < 2:
        raise UserError(f"{args.lora}: LoRA's val metrics at two temperatures at least "
                        "(temperature-<T>.json)")
    curve = [diversity_of(path, metric) for path in files]
    temperature, target = diversity_of(args.reference, metric)
    match = matched_temperature(curve, target)
    write_json(args.out, {"domain": args.domain, "metric": metric, "split": "val",
                          "reference_temperature": temperature, "target": target,
                          "curve": [list(point) for point in sorted(curve)], **match})
    print(f"{args.domain}: LoRA matches polychromic's {metric} {target:.4f} at temperature "
          f"{match['temperature']}" + (f" ({match['outside']} its grid)" if match["outside"]
                                       else "") + f" -> {args.out}")


if __name__ == "__main__":
    run_main(main)
