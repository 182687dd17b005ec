"""Are two runs of the pipeline the same? Compares two checkouts that each ran `dvc repro`:
every file under metrics/ and plots/ byte for byte, and every DVC-cached output (adapters,
generations, scores) by the hash each dvc.lock records. Exit 0 when all agree.

    python scripts/same_results.py RUN_A RUN_B [--stages compare@qa report@qa ...]

`--stages` limits the cached outputs compared to those stages' (a run that has not
finished); metrics/ and plots/ files are compared where both runs have them, and a file
only one run has is listed.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import yaml


def files(root: Path) -> dict[str, bytes]:
    found = {}
    for top in ("metrics", "plots"):
        for path in sorted((root / top).rglob("*")):
            if path.is_file():
                found[path.relative_to(root).as_posix()] = path.read_bytes()
    return found


def cached_outputs(root: Path, stages: list[str] | None) -> dict[str, str]:
    lock = yaml.safe_load((root / "dvc.lock").read_text())["stages"]
    return {f"{name}: {out['path']}": out.get("md5", "")
            for name, stage in lock.items() if stages is None or name in stages
            for out in stage.get("outs", [])}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("a", type=Path)
    parser.add_argument("b", type=Path)
    parser.add_argument("--stages", nargs="*", help="compare only these stages' outputs")
    args = parser.parse_args()
    a, b = files(args.a), files(args.b)
    both = sorted(set(a) & set(b))
    differ = [name for name in both if a[name] != b[name]]
    only = sorted(set(a) ^ set(b))
    outs_a, outs_b = cached_outputs(args.a, args.stages), cached_outputs(args.b, args.stages)
    outs_differ = sorted(k for k in set(outs_a) & set(outs_b) if outs_a[k] != outs_b[k])
    outs_only = sorted(set(outs_a) ^ set(outs_b))
    print(f"metrics/ and plots/: {len(both)} files in both, {len(differ)} differ, "
          f"{len(only)} in one run only")
    print(f"DVC-cached outputs: {len(set(outs_a) & set(outs_b))} in both, {len(outs_differ)} "
          f"differ, {len(outs_only)} in one run only")
    for name in differ + [f"only in one run: {n}" for n in only] + outs_differ + [
            f"only in one run: {n}" for n in outs_only]:
        print(f"  {name}")
    return 1 if differ or outs_differ else 0


if __name__ == "__main__":
    sys.exit(main())
