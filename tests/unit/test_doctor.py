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
    monkeypatch.setattr("polychromic.hub.hub_reachable", lambda: False)
    monkeypatch.setattr("polychromic.hub.cached_on_disk", lambda repo, rev: False)
    hub = {"source": "Org/Model-1B", "revision": "f" * 40}
    finding = doctor.check_base_model(params_with(base_model=hub))
    assert not finding.ok
    assert finding.fix.startswith(f"hf download Org/Model-1B --revision {'f' * 40}")
    assert "out of reach" in finding.detail
    monkeypatch.setattr("polychromic.hub.cached_on_disk",
                        lambda repo, rev: rev == "f" * 40)
    assert doctor.check_base_model(params_with(base_model=hub)).ok
    # a hub id must be pinned
    finding = doctor.check_base_model(params_with(base_model={"source": "Org/Model-1B"}))
    assert not finding.ok and "without base_model.revision" in finding.detail
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
    finding = doctor.check_remote()  # credentials, but nothing answers at that endpoint
    assert not finding.ok and not finding.required
    assert "at http://127.0.0.1:9, credentials found, endpoint unreachable" in finding.detail


def test_remote_bucket_is_probed(tmp_path, monkeypatch, s3_endpoint):
    """Against an S3 server on 127.0.0.1 (moto): the bucket of .dvc/config is there, another
    is not."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / ".dvc").mkdir()
    config = (REPO / ".dvc" / "config").read_text()
    (tmp_path / ".dvc" / "config").write_text(config)
    (tmp_path / ".dvc" / "config.local").write_text(
        f"['remote \"storage\"']\n    endpointurl = {s3_endpoint}\n")
    finding = doctor.check_remote()
    assert finding.ok and finding.detail.endswith("credentials found, bucket reachable")
    (tmp_path / ".dvc" / "config").write_text(config.replace("s3://polychromic-lora/",
                                                             "s3://no-such-bucket/"))
    finding = doctor.check_remote()
    assert not finding.ok and "no bucket 'no-such-bucket' there" in finding.detail


def test_every_requirements_file_is_checked(tmp_path, monkeypatch):
    """A run's pins are required; the tests' and the bench's are warnings, by file."""
    for name in doctor.REQUIREMENTS:
        (tmp_path / name).write_text({"requirements.txt": "pytest==0.0.1\n",
                                      "requirements-bench.txt": "no-such-package==1.0\n"}
                                     .get(name, ""))
    (tmp_path / "scripts").mkdir()
    (tmp_path / "scripts" / "pip_check.py").write_text(
        (REPO / "scripts" / "pip_check.py").read_text())
    findings = {(f.check, f.ok, f.required): f.detail for f in doctor.check_packages(tmp_path)}
    assert findings[("packages", False, True)].startswith("pytest ")
    assert "requirements.txt pins ==0.0.1" in findings[("packages", False, True)]
    assert findings[("test packages", True, True)] == (
        "every pin of requirements-test.txt installed")
    assert findings[("bench packages", False, False)] == (
        "no-such-package not installed (requirements-bench.txt)")


def test_the_sandbox_isolation_is_reported_with_its_fix(monkeypatch):
    gaps = {"network namespace": "unshare network namespace: Operation not permitted"}
    monkeypatch.setattr("polychromic.domains.code.sandbox.isolation_gaps", lambda *a: gaps)
    finding, = doctor.check_sandbox(params_with())
    assert not finding.ok and finding.required
    assert finding.detail == ("missing network namespace (unshare network namespace: "
                              "Operation not permitted)")
    assert "CAP_SYS_ADMIN" in finding.fix
    finding, = doctor.check_sandbox(params_with(code={**params_with()["code"], "checker": {
        **params_with()["code"]["checker"], "allow_unisolated": True}}))
    assert not finding.ok and not finding.required and "UNISOLATED" in finding.detail
    assert doctor.check_sandbox(params_with(domains=["qa"])) == []
    monkeypatch.setattr("polychromic.domains.code.sandbox.isolation_gaps", lambda *a: {})
    finding, = doctor.check_sandbox(params_with())  # this machine: everything (as CI's)
    assert finding.ok and finding.detail.endswith("bounded per program (cgroups)")


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
