"""Command: rewrite the README's results block (between `<!-- results:start -->` and
`<!-- results:end -->`) from metrics/, the way the `results` stage renders it.

    polychromic readme [--check]

Run it after a default run that moved the numbers, and commit README.md with dvc.lock and
metrics/. `--check` changes nothing and exits 1 when the block differs (what the test does).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from polychromic.config import read_params, run_main
from polychromic.results import block_of, headline, replace_block
from polychromic.settings import listed


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--readme", default="README.md")
    parser.add_argument("--metrics", default="metrics")
    parser.add_argument("--check", action="store_true", help="only say whether it is current")
    args = parser.parse_args(argv)
    readme = Path(args.readme)
    text = readme.read_text(encoding="utf-8")
    block = headline(listed(read_params(), "domains"), Path(args.metrics))
    if args.check:
        current = block_of(text) == block
        print(f"{readme}: results block {'current' if current else 'differs from metrics/'}")
        sys.exit(0 if current else 1)
    readme.write_text(replace_block(text, block, str(readme)), encoding="utf-8")
    print(f"{readme}: results block rewritten from {args.metrics}/")


if __name__ == "__main__":
    run_main(main)
