"""Stage `unseal` (studies/confirmation/dvc.yaml): a domain's sealed confirmation split, read
once, for the one confirmation run (docs/protocol.md): the first `--prompts` of them.

The records are drawn as every split is (`Domain.load_splits`, params `<domain>.data`) and
must be, byte for byte and in order, the ones sealed in protocol/sealed/<domain>.sha256. They
are written only when git holds every file named by `--frozen` committed and unchanged:
the frozen protocol, the power plan, the selection table and the confirmation run's own
settings, so that git's order shows each committed before any confirmation result.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from polychromic.config import UserError, read_params, run_main
from polychromic.domains import load_domain
from polychromic.io import write_jsonl
from polychromic.protocol import check_seal, uncommitted


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--domain", required=True)
    parser.add_argument("--root", type=Path, default=Path(),
                        help="the repository (where protocol/sealed is)")
    parser.add_argument("--frozen", type=Path, nargs="+", required=True,
                        help="files and folders that must be committed, unchanged, first")
    parser.add_argument("--prompts", type=int, default=0,
                        help="the first this many sealed records, in order (0: all; the "
                        "power plan's size, pre-registered in confirmation.yaml)")
    parser.add_argument("--out", required=True, type=Path, help="the records' JSONL to write")
    args = parser.parse_args(argv)
    problems = uncommitted(args.frozen)
    if problems:
        raise UserError("the confirmation split stays sealed until the protocol is "
                        "committed: " + "; ".join(problems))
    domain = load_domain(args.domain, read_params())
    confirmation = domain.load_splits().get("confirmation", [])
    problem = check_seal(domain, confirmation, args.root)
    if problem:
        raise UserError(problem)
    if not 0 <= args.prompts <= len(confirmation):
        raise UserError(f"--prompts {args.prompts}: the {args.domain} seal holds "
                        f"{len(confirmation)} records")
    records = confirmation[:args.prompts or None]
    write_jsonl(args.out, records)
    print(f"{args.domain}: {len(records)} of {len(confirmation)} confirmation records, as "
          f"sealed -> {args.out}")


if __name__ == "__main__":
    run_main(main)
