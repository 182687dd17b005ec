"""Stage `results`: docs/results-tables.md from every domain's comparison and Table 1.

The page a reader opens for the numbers: per domain (params.yaml's `domains`, in order) the
pre-registered primary hypotheses with the verdict, then the report stage's Table 1, its
primary analysis and verdict. Generated, never typed, so that it cannot drift from
`dvc.lock`; the README's short tables come from the same rendering (`polychromic readme`).
With --protocol-plots: the protocol run's page (studies/protocol/dvc.yaml), per domain the
matched temperature, the primary family, Figure 3's verdicts and the power plan. With
--confirmation-plots: the confirmation run's page (studies/confirmation/dvc.yaml), per domain
and reference the matched temperature, the primary family, Figure 3's verdicts and Table 1.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from polychromic.config import UserError, read_params, run_main
from polychromic.io import atomic_path
from polychromic.results import confirmation_page, protocol_page, tables_page
from polychromic.settings import listed


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--metrics", default="metrics", help="the metrics folder")
    parser.add_argument("--out", required=True, help="the Markdown page to write")
    parser.add_argument("--protocol-plots",
                        help="the protocol run's page instead (docs/protocol-results.md): its "
                        "plots folder as the page links it")
    parser.add_argument("--confirmation-plots",
                        help="the confirmation run's page instead (docs/confirmation-results.md; "
                        "--metrics: the study's folder): that folder as the page links it")
    args = parser.parse_args(argv)
    domains = listed(read_params(), "domains")
    if args.protocol_plots and args.confirmation_plots:
        raise UserError("--protocol-plots, --confirmation-plots: one page at a time")
    if args.confirmation_plots:
        page = confirmation_page(domains, Path(args.metrics), args.confirmation_plots)
    elif args.protocol_plots:
        page = protocol_page(domains, Path(args.metrics), args.protocol_plots)
    else:
        page = tables_page(domains, Path(args.metrics))
    with atomic_path(args.out) as tmp:
        Path(tmp).write_text(page, encoding="utf-8")
    print(f"results of {', '.join(domains)} -> {args.out}")


if __name__ == "__main__":
    run_main(main)
