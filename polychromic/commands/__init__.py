"""Commands a user runs by hand (not pipeline stages): `polychromic <command> [options]`.

    polychromic doctor                 is this machine ready for `dvc repro`?
    polychromic profile qwen3-8b       run a params profile as one DVC experiment
    polychromic bench                  the cost of the polychromic term vs the machine's limits
    polychromic signal                 the diversity gradient's signal and noise
    polychromic ablations              Table 2 and Figure 2 over the DVC experiments
    polychromic readme                 the README's results block, from metrics/
    polychromic precision              does bf16 move the answer? (validation prompts)
    polychromic seal                   check (or write) the sealed confirmation splits
    polychromic protocol               write the protocol run's params (studies/protocol)
    polychromic study sweep|selection  write an arms study's params (studies/<name>)
    polychromic runs export            the MLflow store into runs/, for dvc push

Each is also `python -m polychromic.commands.<command>`. Like stages, commands import
libraries only, never a stage or another command (tests/unit/test_stage_deps.py).
"""

from __future__ import annotations

import importlib
import sys

COMMANDS = {"doctor": "is this machine ready for `dvc repro`?",
            "profile": "run a params profile (profiles/<name>.yaml) as one DVC experiment",
            "bench": "the cost of the polychromic term against the machine's limits",
            "signal": "the diversity gradient's signal and noise next to the cross-entropy's",
            "ablations": "Table 2 and Figure 2 over the DVC experiments",
            "readme": "rewrite the README's results block from metrics/",
            "precision": "fp32 vs bf16 on validation prompts, several seeds (docs/precision.md)",
            "seal": "check (or write once) each domain's sealed confirmation split",
            "protocol": "write (or --check) the protocol run's params (docs/protocol.md)",
            "study": "write (or --check) an arms study's params: sweep, selection",
            "runs": "export the MLflow store into runs/ (DVC-tracked) for a collaborator"}


def cli(argv: list[str] | None = None) -> None:
    """The `polychromic` console entry point: the first argument names the command."""
    from polychromic.config import run_main

    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in COMMANDS:
        width = max(map(len, COMMANDS))
        lines = [f"  {name:<{width}}  {what}" for name, what in COMMANDS.items()]
        print("usage: polychromic COMMAND [options]   (polychromic COMMAND --help)\n\n"
              + "\n".join(lines))
        if argv and argv[0] not in ("-h", "--help"):
            print(f"\nerror: unknown command {argv[0]!r}", file=sys.stderr)
            sys.exit(2)
        sys.exit(0 if argv else 2)
    module = importlib.import_module(f"polychromic.commands.{argv[0]}")
    sys.argv = [f"polychromic {argv[0]}", *argv[1:]]
    run_main(module.main, argv[1:])
