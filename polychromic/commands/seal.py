"""Seal each domain's confirmation split, or check it against its seal (docs/protocol.md).

    polychromic seal                   check every domain's confirmation split
    polychromic seal --write qa        seal qa's (once: an existing seal is never replaced)

A seal (protocol/sealed/<domain>.sha256) is the SHA-256 of each confirmation record and of
the data settings it was drawn with; it is committed before any result on the split exists.
"""

from __future__ import annotations

import argparse
import sys

from polychromic.config import UserError, read_params
from polychromic.domains import load_domain
from polychromic.io import atomic_path
from polychromic.protocol import SEALED, check_seal, seal_text
from polychromic.settings import listed


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--write", nargs="+", metavar="DOMAIN", default=[],
                        help="seal these domains' confirmation splits")
    args = parser.parse_args(argv)
    params = read_params()
    domains = listed(params, "domains")
    for name in args.write:
        if name not in domains:
            raise UserError(f"--write: {name!r} is not in params.yaml 'domains'")
    problems = []
    for name in args.write or domains:
        domain = load_domain(name, params)
        confirmation = domain.load_splits().get("confirmation", [])
        path = SEALED / f"{name}.sha256"
        if name in args.write:
            if path.exists():
                raise UserError(f"{path}: already sealed (a seal is written once; a new "
                                "split needs a new protocol, docs/protocol.md)")
            if not confirmation:
                raise UserError(f"params.yaml: '{name}.data' leaves the confirmation split "
                                "empty: nothing to seal")
            path.parent.mkdir(parents=True, exist_ok=True)
            with atomic_path(path) as tmp:
                tmp.write_text(seal_text(domain, confirmation), encoding="utf-8")
            print(f"{name}: {len(confirmation)} confirmation records sealed -> {path}")
            continue
        problem = check_seal(domain, confirmation)
        print(f"{name}: " + (problem or f"{len(confirmation)} confirmation records, as sealed"))
        problems += [problem] if problem else []
    if problems:
        sys.exit(1)


if __name__ == "__main__":
    from polychromic.config import run_main

    run_main(main)
