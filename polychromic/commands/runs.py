"""Command (not a stage): the MLflow store as something a collaborator can pull.

The store (`mlflow.db` at the repository root, and `mlartifacts/`) is local to each clone:
every stage writes to it, so it cannot be a stage's output. `polychromic runs export`
copies it, consistently (sqlite's online backup), into `runs/` with its artifact paths made
relative to that folder, and tracks the folder with `dvc add`: commit `runs.dvc`, then
`dvc push`. A collaborator's `git pull && dvc pull` brings it, and

    cd runs && mlflow ui --backend-store-uri sqlite:///mlflow.db

shows every run, its params, metrics and artifacts. Export again to share newer runs.

    polychromic runs export [--store mlflow.db] [--out runs] [--no-dvc]
"""

from __future__ import annotations

import argparse
import shutil
import sqlite3
import subprocess
from pathlib import Path

from polychromic.config import UserError
from polychromic.io import atomic_path

ARTIFACTS = "mlartifacts"


def relative_artifacts(db: Path, root: Path) -> int:
    """Rewrite the absolute artifact locations under `root`/mlartifacts (as MLflow stores
    them: a path or a file:// URI) to `mlartifacts/...`, relative to the folder `mlflow ui`
    runs in. The rows changed."""
    prefixes = [str(root / ARTIFACTS), (root / ARTIFACTS).as_uri()]
    changed = 0
    with sqlite3.connect(db) as connection:
        for table, column in (("experiments", "artifact_location"), ("runs", "artifact_uri")):
            for prefix in sorted(prefixes, key=len, reverse=True):  # the URI first
                changed += connection.execute(
                    f"UPDATE {table} SET {column} = ? || substr({column}, ?) "  # noqa: S608
                    f"WHERE substr({column}, 1, ?) = ?",
                    (ARTIFACTS, len(prefix) + 1, len(prefix), prefix)).rowcount
    return changed


def export(store: Path, out: Path) -> int:
    """The store and its artifacts copied into `out` (written whole or not at all); the
    number of artifact locations made relative."""
    if not store.is_file():
        raise UserError(f"{store}: no MLflow store here (run a stage first, or --store)")
    root = store.resolve().parent
    with atomic_path(out) as folder:
        folder.mkdir()
        with sqlite3.connect(store) as source, sqlite3.connect(folder / store.name) as copy:
            source.backup(copy)  # consistent while stages may be writing
        changed = relative_artifacts(folder / store.name, root)
        if (root / ARTIFACTS).is_dir():
            shutil.copytree(root / ARTIFACTS, folder / ARTIFACTS)
    return changed


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="action", required=True)
    export_parser = sub.add_parser("export", help="copy the store into a DVC-tracked folder")
    export_parser.add_argument("--store", type=Path, default=Path("mlflow.db"))
    export_parser.add_argument("--out", type=Path, default=Path("runs"))
    export_parser.add_argument("--no-dvc", action="store_true",
                               help="copy only; do not `dvc add` the folder")
    args = parser.parse_args(argv)
    changed = export(args.store, args.out)
    print(f"{args.store} -> {args.out}/ ({changed} artifact locations made relative)")
    if args.no_dvc:
        return
    done = subprocess.run(["dvc", "add", str(args.out)], capture_output=True, text=True)
    if done.returncode != 0:
        lines = (done.stderr or done.stdout).strip().splitlines() or ["no message"]
        raise UserError(f"dvc add {args.out} failed: {lines[-1]}")
    print(f"tracked: git add {args.out}.dvc .gitignore && git commit, then dvc push; "
          f"elsewhere: dvc pull, then cd {args.out} && mlflow ui --backend-store-uri "
          "sqlite:///mlflow.db")


if __name__ == "__main__":
    from polychromic.config import run_main

    run_main(main)
