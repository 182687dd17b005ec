"""Stage `prepare`: a domain's data -> {train,val,dev,fewshot}.jsonl of prepared records.

The domain decides where its data come from and how they are split (params
`<domain>.data`); every domain writes the same record schema (`polychromic.domains`). The
stage checks that every split has records and that no held-out record (dev, confirmation)
shares an id with train, val or fewshot, then writes all four files or none. The
confirmation split is never written: it stays sealed (docs/protocol.md).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from polychromic.config import UserError, read_params, run_main
from polychromic.domains import HELD_OUT, SPLITS, load_domain
from polychromic.io import atomic_path, write_jsonl


def check_splits(splits: dict, domain: str) -> None:
    for name in SPLITS:
        if not splits.get(name):
            raise UserError(f"params.yaml: '{domain}.data' leaves the {name} split empty")
    for held_out in HELD_OUT:
        ids = {r["id"] for r in splits.get(held_out, [])}
        for name in ("train", "val", "fewshot"):
            shared = sorted(ids & {r["id"] for r in splits[name]})
            if shared:
                raise UserError(f"domain {domain}: {held_out} records {shared[:3]} are also "
                                f"in {name}")
    shared = sorted({r["id"] for r in splits["dev"]}
                    & {r["id"] for r in splits.get("confirmation", [])})
    if shared:
        raise UserError(f"domain {domain}: dev records {shared[:3]} are also in confirmation")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--domain", required=True)
    parser.add_argument("--out", required=True, help="directory for the split files")
    args = parser.parse_args(argv)
    domain = load_domain(args.domain, read_params())

    splits = domain.load_splits()
    check_splits(splits, args.domain)
    with atomic_path(args.out) as tmp:
        tmp.mkdir()
        for name in SPLITS:
            write_jsonl(Path(tmp) / f"{name}.jsonl", splits[name])
    sizes = ", ".join(f"{name} {len(splits[name])}" for name in SPLITS)
    print(f"{args.domain}: {sizes} records -> {args.out}")


if __name__ == "__main__":
    run_main(main)
