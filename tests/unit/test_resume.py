"""What a resumed train run starts from: only a complete checkpoint of the same run (its
fingerprint), never a half-written one (the killed run: tests/integration/test_resume.py)."""

import os

from polychromic import checkpoints


def test_only_complete_checkpoints_of_the_same_run_are_resumed(tmp_path):
    folder = tmp_path / "ckpt"
    assert checkpoints.resumable(folder, "run-a") is None
    for step, complete in [(2, True), (4, True), (6, False)]:  # 6: killed while saving
        (folder / f"checkpoint-{step}").mkdir()
        if complete:
            (folder / f"checkpoint-{step}" / checkpoints.COMPLETE).write_text("")
    assert checkpoints.resumable(folder, "run-a") == folder / "checkpoint-4"
    assert not (folder / "checkpoint-6").exists()
    # another configuration (params, data, code): nothing of this run is resumed
    assert checkpoints.resumable(folder, "run-b") is None
    assert sorted(p.name for p in folder.iterdir()) == [checkpoints.FINGERPRINT]
    assert (folder / checkpoints.FINGERPRINT).read_text() == "run-b"


def test_fingerprint_follows_settings_file_bytes_and_stamps(tmp_path):
    data, weights = tmp_path / "train.jsonl", tmp_path / "model.bin"
    data.write_text("a")
    weights.write_bytes(b"w")
    base = checkpoints.fingerprint({"lr": 1}, [data], [weights])
    assert base == checkpoints.fingerprint({"lr": 1}, [data], [weights])
    assert base != checkpoints.fingerprint({"lr": 2}, [data], [weights])
    data.write_text("b")
    assert base != checkpoints.fingerprint({"lr": 1}, [data], [weights])
    data.write_text("a")
    os.utime(weights, ns=(0, 0))
    assert base != checkpoints.fingerprint({"lr": 1}, [data], [weights])

