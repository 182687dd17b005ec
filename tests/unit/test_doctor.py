"""`doctor`: each check finds what is missing and names the fix; main exits 1 only when
something a run needs is missing."""

import pytest
import yaml

from polychromic.commands import doctor
from tests.helpers import REPO, params_with


def test_judge_needs_its_key_only_when_on(monkeypatch):
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    assert doctor.check_judge(params_with()).ok
    finding = doctor.check_judge(params_with(judge={"enabled": True}))
    assert not finding.ok and finding.required
    assert finding.line().splitlines() == [
        "MISSING  judge: anthropic claude-sonnet-4-5: ANTHROPIC_API_KEY not set",
        "         fix: export ANTHROPIC_API_KEY=...  (or judge.enabled: false)"]
    monkeypatch.setenv("ANTHROPIC_API_KEY", "test-key")
    assert doctor.check_judge(params_with(judge={"enabled": True})).ok


def test_a_device_the_machine_lacks_is_missing():
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a CUDA device: no device to find missing")
    finding = doctor.check_device(params_with(runtime={"device": "cuda"}))
    assert not finding.ok and "'runtime.device' cuda: no such device" in finding.detail
    finding = doctor.check_device(params_with())
    assert finding.ok and finding.detail.startswith("cpu, ")
    assert "computes in fp32 (native bf16: " in finding.detail
    finding = doctor.check_device(params_with(runtime={"precision": "fp16"}))
    assert not finding.ok and "'runtime.precision' fp16 needs a CUDA device" in finding.detail


def test_base_model_sources(tmp_path, monkeypatch):
    monkeypatch.setattr("polychromic.base_source.hub_reachable", lambda: False)
    monkeypatch.setattr("polychromic.base_source.cached_on_disk", lambda repo: False)
    finding = doctor.check_base_model(params_with(base_model={"source": "Org/Model-1B"}))
    assert not finding.ok and finding.fix.startswith("hf download Org/Model-1B")
    assert "out of reach" in finding.detail
    monkeypatch.setattr("polychromic.base_source.cached_on_disk", lambda repo: True)
    assert doctor.check_base_model(params_with(base_model={"source": "Org/Model-1B"})).ok
    finding = doctor.check_base_model(params_with(base_model={"source": str(tmp_path)}))
    assert not finding.ok and "no config.json" in finding.detail
    (tmp_path / "config.json").write_text("{}")
    assert doctor.check_base_model(params_with(base_model={"source": str(tmp_path)})).ok


def test_remote_credentials_from_environment_or_local_config(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for name in ("AWS_ACCESS_KEY_ID", "AWS_PROFILE", "AWS_ENDPOINT_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.aws/credentials
    (tmp_path / ".dvc").mkdir()
    assert not doctor.check_remote().ok  # no remote at all
    (tmp_path / ".dvc" / "config").write_text(
        (REPO / ".dvc" / "config").read_text())
    finding = doctor.check_remote()
    assert not finding.ok and not finding.required and "credentials not found" in finding.detail
    (tmp_path / ".dvc" / "config.local").write_text(
        "['remote \"storage\"']\n    access_key_id = test\n    secret_access_key = test\n"
        "    endpointurl = http://127.0.0.1:9\n")
    finding = doctor.check_remote()
    assert finding.ok and "at http://127.0.0.1:9" in finding.detail


def test_bad_params_are_one_line_naming_the_key(tmp_path, monkeypatch, capsys):
    """Nothing else is checked (in this process: the command line is tested in
    tests/integration/test_doctor.py)."""
    params = params_with(domains=["qa"])
    params["train"]["learning_rate"] = -1
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exit_:
        doctor.main([])
    assert exit_.value.code == 1
    assert capsys.readouterr().out.splitlines() == [
        "MISSING  params: params.yaml: 'train.learning_rate' must be > 0",
        "         fix: fix that key in params.yaml", "1 required thing(s) missing"]
