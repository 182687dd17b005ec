"""Write the protocol run's params (studies/protocol/params.yaml), or check them.

    polychromic protocol            write studies/protocol/params.yaml
    polychromic protocol --check    is it params.yaml with protocol.yaml laid over?

The protocol run (docs/protocol.md, `dvc repro studies/protocol/dvc.yaml`) reads its own
params.yaml, as every DVC pipeline does: the repository's params.yaml with the few keys of
studies/protocol/protocol.yaml laid over (mappings merged key by key, anything else
replaced), so that a change to params.yaml reaches it only through this command.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import yaml

from polychromic.config import UserError, read_yaml_mapping
from polychromic.io import atomic_path
from polychromic.params_check import check_all
from polychromic.studies import laid_over

FOLDER = Path("studies/protocol")
HEADER = ("# Written by `polychromic protocol` from ../../params.yaml and protocol.yaml: do not "
          "edit\n# (docs/protocol.md). The protocol run's params: dvc repro "
          "studies/protocol/dvc.yaml\n")


def protocol_params(root: Path = Path()) -> str:
    params = laid_over(read_yaml_mapping(root / "params.yaml"),
                       read_yaml_mapping(root / FOLDER / "protocol.yaml"))
    check_all(params)
    return HEADER + yaml.safe_dump(params, sort_keys=False, allow_unicode=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true",
                        help="exit 1 if the written params differ from what they should be")
    args = parser.parse_args(argv)
    text, path = protocol_params(), FOLDER / "params.yaml"
    if args.check:
        current = path.read_text(encoding="utf-8") if path.is_file() else None
        if current != text:
            print(f"{path}: out of date (run: polychromic protocol)", file=sys.stderr)
            sys.exit(1)
        print(f"{path}: params.yaml with protocol.yaml laid over, as written")
        return
    if not (FOLDER / "protocol.yaml").is_file():
        raise UserError(f"{FOLDER / 'protocol.yaml'}: no such file")
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    print(f"{path}: written")


if __name__ == "__main__":
    from polychromic.config import run_main

    run_main(main)
