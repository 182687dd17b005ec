"""`polychromic doctor` as a user runs it: one line per check, exit status 1 when something a
run needs is missing."""

import os
import subprocess
import sys

import yaml

from tests.helpers import params_with


def test_main_lists_every_check_and_fails_on_a_missing_requirement(tmp_path):
    params = params_with(domains=["qa"], judge={"enabled": True})
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    env = {k: v for k, v in os.environ.items() if k != "ANTHROPIC_API_KEY"}
    env |= {"MLFLOW_TRACKING_URI": "sqlite:///no/such/m.db"}
    result = subprocess.run([sys.executable, "-m", "polychromic.commands.doctor"], cwd=tmp_path,
                            env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 1, result.stdout + result.stderr
    status = {line[9:].split(":")[0]: line[:8].strip() for line in result.stdout.splitlines()
              if line[:1] != " " and ":" in line}
    assert status.pop("bench packages") in ("ok", "warn")  # optional: trl for bench --trl
    assert status == {"params": "ok", "packages": "ok", "test packages": "ok",
                      "pip check": "ok", "base model": "ok", "data qa": "ok", "device": "ok",
                      "dvc remote": "warn", "mlflow store": "MISSING", "judge": "MISSING"}
    assert result.stdout.splitlines()[-1] == "2 required thing(s) missing"
