"""Profiles: a named set of params for another scale, run as one DVC experiment.

    polychromic profile qwen3-8b [--print] [-- dvc exp run options]

A profile (`profiles/<name>.yaml`) holds only the params that differ, in params.yaml's
shape. This command checks it (every key must already exist in params.yaml, and every
section it touches must still load with its dataclass's types and ranges), then runs
`dvc exp run -S key=value ...` with one `-S` per value, so that the experiment's params.yaml,
dvc.lock and `dvc exp show` carry the values that were run: nothing is merged behind DVC's
back, and no code is edited. `--print` shows the command instead of running it.
"""

from __future__ import annotations

import argparse
import copy
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

from polychromic.config import (
    PARAMS_FILE,
    UserError,
    read_params,
    read_yaml_mapping,
    run_main,
)
from polychromic.params_check import check_all

PROFILES = Path("profiles")


def leaves(overlay: dict, where: str, params: dict, prefix: str = "") -> dict[str, Any]:
    """The overlay's values by dotted key; a key params.yaml lacks is an error naming it.
    A mapping whose counterpart in params.yaml is not a mapping (a `dict` param) is a value."""
    flat: dict[str, Any] = {}
    for key, value in overlay.items():
        dotted = f"{prefix}{key}"
        if not isinstance(params, dict) or key not in params:
            raise UserError(f"{where}: '{dotted}' is not a key of {PARAMS_FILE}")
        if isinstance(value, dict) and isinstance(params[key], dict) and value:
            flat.update(leaves(value, where, params[key], f"{dotted}."))
        else:
            flat[dotted] = value
    return flat


def apply(params: dict, values: dict[str, Any]) -> dict:
    merged = copy.deepcopy(params)
    for dotted, value in values.items():
        *parents, last = dotted.split(".")
        section = merged
        for part in parents:
            section = section[part]
        section[last] = value
    return merged


def dvc_command(name: str, params: dict, extra: list[str]) -> list[str]:
    path = PROFILES / f"{name}.yaml"
    if not path.is_file():
        known = ", ".join(sorted(p.stem for p in PROFILES.glob("*.yaml"))) or "none"
        raise UserError(f"{path}: no such profile (known: {known})")
    overlay = read_yaml_mapping(path)
    values = leaves(overlay, str(path), params)
    try:
        check_all(apply(params, values))
    except UserError as err:
        raise UserError(f"{path}: {err}") from None
    sets = [f"{key}={yaml.safe_dump(value, default_flow_style=True, width=10**6).strip()}"
            .removesuffix("\n...") for key, value in values.items()]
    return ["dvc", "exp", "run", *[arg for s in sets for arg in ("-S", s)], *extra]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("name", help="a profile: profiles/<name>.yaml")
    parser.add_argument("--print", action="store_true",
                        help="print the dvc exp run command instead of running it")
    parser.epilog = "Options after -- go to dvc exp run (-n NAME, --queue, --temp)."
    argv = sys.argv[1:] if argv is None else argv
    ours, extra = (argv[:argv.index("--")], argv[argv.index("--") + 1:]) if "--" in argv \
        else (argv, [])
    args = parser.parse_args(ours)
    command = dvc_command(args.name, read_params(), extra)
    if args.print:
        print(shlex.join(command))
        return
    sys.exit(subprocess.run(command).returncode)


if __name__ == "__main__":
    run_main(main)
