"""Write the λ sweep's params (studies/sweep), or check them.

    polychromic sweep            write studies/sweep/params.yaml and arms/<arm>/params.yaml
    polychromic sweep --check    are they params.yaml with sweep.yaml laid over?
    dvc repro studies/sweep/dvc.yaml

The sweep (docs/experiments.md) trains and scores polychromic LoRA once per arm of
studies/sweep/sweep.yaml (`common`, laid over params.yaml for every arm, then the arm's own
keys), each arm in its own folder with its own params.yaml, and compares each arm with the
default run's LoRA and prompted systems; its `sweep` stage writes Table 2 and Figure 2
(studies/sweep/metrics/<domain>/, studies/sweep/plots/<domain>/). Every number it draws is
in git and reproducible from a clone: no experiment refs.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from polychromic.config import UserError
from polychromic.io import atomic_path
from polychromic.studies import STUDIES, sweep_files

NAME = "sweep"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true",
                        help="exit 1 if a written params file differs from what it should be, "
                        "or an arm's folder is left from an arm sweep.yaml no longer has")
    args = parser.parse_args(argv)
    if not (STUDIES / NAME / f"{NAME}.yaml").is_file():
        raise UserError(f"{STUDIES / NAME / f'{NAME}.yaml'}: no such file")
    files = sweep_files(Path(), NAME)
    arms = STUDIES / NAME / "arms"
    left = sorted(p for p in arms.glob("*/params.yaml") if p not in files)
    if args.check:
        stale = [p for p, text in files.items()
                 if not p.is_file() or p.read_text(encoding="utf-8") != text]
        for path in stale:
            print(f"{path}: out of date (run: polychromic sweep)", file=sys.stderr)
        for path in left:
            print(f"{path.parent}: an arm sweep.yaml no longer has (remove the folder)",
                  file=sys.stderr)
        if stale or left:
            sys.exit(1)
        print(f"{STUDIES / NAME}: {len(files) - 1} arms' params as written")
        return
    for path, text in files.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path) as tmp:
            tmp.write_text(text, encoding="utf-8")
    print(f"{STUDIES / NAME}: params.yaml and {len(files) - 1} arms' params.yaml written")
    for path in left:
        print(f"{path.parent}: an arm sweep.yaml no longer has (not removed)", file=sys.stderr)


if __name__ == "__main__":
    from polychromic.config import run_main

    run_main(main)
