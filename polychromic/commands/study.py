"""Write a study's params (studies/<name>), or check them.

    polychromic study sweep            studies/sweep/params.yaml and arms/<arm>/params.yaml
    polychromic study selection        the same for the objectives' selection on val
    polychromic study confirmation     studies/confirmation/params.yaml, <domain>/params.yaml
    polychromic study NAME --check     are they params.yaml with <name>.yaml laid over?
    dvc repro studies/<name>/dvc.yaml

An arms study trains and scores once per arm of studies/<name>/<name>.yaml (`common`, laid
over params.yaml for every arm, then the arm's own keys), each arm in its own folder with
its own params.yaml. `sweep` (docs/experiments.md): polychromic at each arm's settings on
dev against the default run's LoRA and prompted systems, Table 2 and Figure 2. `selection`
(docs/objectives.md): each arm names its method (and domains); scored on val, and the rule
chooses each domain's objective. `confirmation` (docs/protocol.md): the one run on the
sealed split, per domain the protocol's systems and the objective the selection chose.
Every number they draw is in git and reproducible from a clone: no experiment refs.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from polychromic.config import UserError
from polychromic.io import atomic_path
from polychromic.studies import ARMS_STUDIES, STUDIES


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("name", choices=sorted(ARMS_STUDIES), help="the study")
    parser.add_argument("--check", action="store_true",
                        help="exit 1 if a written params file differs from what it should be, "
                        "or an arm's folder is left from an arm the spec no longer has")
    args = parser.parse_args(argv)
    spec = STUDIES / args.name / f"{args.name}.yaml"
    if not spec.is_file():
        raise UserError(f"{spec}: no such file")
    files = ARMS_STUDIES[args.name](Path(), args.name)
    arms = STUDIES / args.name / "arms"
    left = sorted(p for p in arms.glob("*/params.yaml") if p not in files)
    if args.check:
        stale = [p for p, text in files.items()
                 if not p.is_file() or p.read_text(encoding="utf-8") != text]
        for path in stale:
            print(f"{path}: out of date (run: polychromic study {args.name})", file=sys.stderr)
        for path in left:
            print(f"{path.parent}: an arm {spec.name} no longer has (remove the folder)",
                  file=sys.stderr)
        if stale or left:
            sys.exit(1)
        print(f"{STUDIES / args.name}: {len(files)} params files as written")
        return
    for path, text in files.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path) as tmp:
            tmp.write_text(text, encoding="utf-8")
    print(f"{STUDIES / args.name}: {len(files)} params files written")
    for path in left:
        print(f"{path.parent}: an arm {spec.name} no longer has (not removed)", file=sys.stderr)


if __name__ == "__main__":
    from polychromic.config import run_main

    run_main(main)
