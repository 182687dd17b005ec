"""Stage `prepare`: a domain's data -> {train,val,test,fewshot}.jsonl of prepared records.

The domain decides where its data come from and how they are split (params
`<domain>.data`); every domain writes the same record schema (`polychromic.domains`). The
stage checks that every split has records and that no test record's id is also in train or
fewshot, then writes all four files or none.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from polychromic.config import UserError, read_params, run_main
from polychromic.domains import SPLITS, load_domain
from polychromic.io import atomic_path, write_jsonl


def check_splits(splits: dict, domain: str) -> None:
    for name in SPLITS:
        if not splits.get(name):
            raise UserError(f"params.yaml: '{domain}.data' leaves the {name} split empty")
    test = {r["id"] for r in splits["test"]}
    for name in ("train", "fewshot"):
        shared = sorted(test & {r["id"] for r in splits[name]})
        if shared:
            raise UserError(f"domain {domain}: test records {shared[:3]} are also in {name}")


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
