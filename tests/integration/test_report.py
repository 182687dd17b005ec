"""The report stage as dvc runs it: a missing input is one line, exit status 2, nothing
written (what it writes: tests/unit/test_report.py)."""

import subprocess
import sys

from tests.helpers import REPORT_ARGS, report_project


def test_missing_file_exits_2_naming_it_and_writes_nothing(tmp_path):
    project = report_project(tmp_path)
    (project / "scores" / "polychromic" / "seed2.jsonl").unlink()
    done = subprocess.run([sys.executable, "-m", "polychromic.stages.report", *REPORT_ARGS],
                          cwd=project, capture_output=True, text=True,
                          env={"PATH": "/usr/bin:/bin"})
    assert done.returncode == 2 and len(done.stderr.strip().splitlines()) == 1
    assert done.stderr.startswith("error: scores/polychromic/seed2.jsonl: no such file")
    assert not (project / "out").exists()
