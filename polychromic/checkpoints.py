"""Resumable training: which checkpoint of a killed train run to resume from.

The Trainer writes checkpoint-<step>/ as several files, so a kill can leave one half written.
A checkpoint counts only once `CheckpointKeeper.on_save` has written the method's own state
into it (the polychromic sampler's generator and advantage scale, which the Trainer does not
know about) and then marked it complete. The checkpoint folder carries a fingerprint of what
decides the run (params, data, base model, code): checkpoints made for anything else are
removed, never resumed.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Iterable
from pathlib import Path

import torch
from transformers import TrainerCallback

COMPLETE = "complete"  # marker file: the checkpoint was written to the end
FINGERPRINT = "fingerprint.txt"
METHOD_STATE = "method_state-{process}.pt"  # one per process (DDP)


def barrier() -> None:
    """Wait for every process of a distributed run (nothing to wait for in one process)."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.barrier()


def fingerprint(settings: dict, files: Iterable[Path], stamped: Iterable[Path] = ()) -> str:
    """sha256 of `settings` (JSON), the bytes of `files` and the name, size and modification
    time of `stamped` (large files, such as model weights, not worth reading)."""
    digest = hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode())
    for path in files:
        digest.update(f"\0{path}\0".encode())
        digest.update(Path(path).read_bytes())
    for path in stamped:
        info = Path(path).stat()
        digest.update(f"\0{path}\0{info.st_size}\0{info.st_mtime_ns}".encode())
    return digest.hexdigest()


def step_of(checkpoint: Path) -> int:
    return int(checkpoint.name.rsplit("-", 1)[1])


def resumable(folder: Path, fingerprint_: str) -> Path | None:
    """Make `folder` this run's checkpoint folder and return its newest complete checkpoint,
    or None. A folder with another fingerprint is emptied; incomplete checkpoints (a kill
    during a save) are removed."""
    stamp = folder / FINGERPRINT
    if folder.exists() and (not stamp.is_file() or stamp.read_text() != fingerprint_):
        shutil.rmtree(folder)
    folder.mkdir(parents=True, exist_ok=True)
    stamp.write_text(fingerprint_)
    complete = []
    for checkpoint in folder.glob("checkpoint-*"):
        if (checkpoint / COMPLETE).is_file():
            complete.append(checkpoint)
        else:
            shutil.rmtree(checkpoint)
    return max(complete, key=step_of, default=None)


class CheckpointKeeper(TrainerCallback):
    """After the Trainer saves a checkpoint: writes the trainer's `method_state()` (if it has
    one) into it, marks it complete, and removes the other checkpoints except the best one
    (so that a kill at any moment leaves one complete checkpoint). Set `trainer` after the
    Trainer is made; run it with the Trainer's own rotation off (save_total_limit None)."""

    def __init__(self, folder: Path):
        self.folder = Path(folder)
        self.trainer = None

    def on_save(self, args, state, control, **kwargs):
        checkpoint = self.folder / f"checkpoint-{state.global_step}"
        method_state = getattr(self.trainer, "method_state", None)
        if method_state is not None:
            checkpoint.mkdir(parents=True, exist_ok=True)
            torch.save(method_state(), checkpoint / METHOD_STATE.format(
                process=args.process_index))
        barrier()  # every process has written its part of the checkpoint
        if not state.is_world_process_zero:
            return
        (checkpoint / COMPLETE).write_text(f"{state.global_step}\n")
        best = state.best_model_checkpoint
        for other in self.folder.glob("checkpoint-*"):
            if other != checkpoint and (best is None or other.resolve() != Path(best).resolve()):
                shutil.rmtree(other)


def load_method_state(trainer, checkpoint: Path) -> None:
    """Give the trainer back the state that `CheckpointKeeper` saved with `checkpoint`."""
    path = checkpoint / METHOD_STATE.format(process=trainer.args.process_index)
    if path.is_file() and hasattr(trainer, "load_method_state"):
        trainer.load_method_state(torch.load(path, weights_only=False))
