"""The sandbox's worker process: runs generated programs against their tests, one at a time.

A standalone script (standard library only), started by `sandbox.py` as
`python -I -S -B sandbox_worker.py`: it reads one JSON settings line, then one JSON job per
line on stdin, and answers one JSON result per line on stdout. It never runs a program in
its own process. Per job, in mode `namespaces` (root, Linux):

    worker (host namespaces, root)
      └─ keeper: new mount, PID, network, IPC and UTS namespaces; every mount read-only and
         nosuid; private tmpfs on /tmp, /var/tmp, /dev/shm, /run/lock; the interpreter's
         prefix re-exposed read-only where its parents are closed (e.g. under /root)
           └─ runner = PID 1 of the new PID namespace: a fresh /proc, rlimits (address
              space, CPU seconds, processes, file size, open files), stdio on /dev/null, a
              clean environment, all groups dropped, an unprivileged uid of its own, no new
              privileges; runs the program, then each test, in its own namespace dict

The keeper waits with a wall-clock timeout and SIGKILLs the runner when it runs out. When a
PID namespace's init dies, the kernel kills every process left in it, so nothing a program
started (forks, new sessions, daemons) survives the job. The network namespace has only a
loopback device, and it is down. The tmpfs mounts vanish with the mount namespace.

Results travel on a pipe, one line per event, each prefixed with a random token the job
never printed anywhere: a test counts as passed only if its "pass" line arrived, and the
job is complete only with the final "done" line. A program that exits early (`os._exit(0)`,
`sys.exit()`), crashes the interpreter or is killed has not run its tests, whatever its exit
status. (This guards against programs that end before their tests, not against a program
written to find the token in its own process's memory.)

Mode `unisolated` (only when the user asks for it explicitly) keeps the rlimits, a new
session, a fresh temporary directory and the clean environment, but has no namespaces: no
network isolation, no read-only filesystem, same user id, and processes that leave the
session survive.
"""

from __future__ import annotations

import builtins
import contextlib
import ctypes
import json
import os
import resource
import secrets
import select
import shutil
import signal
import sys
import tempfile
import time

CLONE_NEWNS, CLONE_NEWUTS, CLONE_NEWIPC = 0x00020000, 0x04000000, 0x08000000
CLONE_NEWPID, CLONE_NEWNET = 0x20000000, 0x40000000
NAMESPACES = {"mount": CLONE_NEWNS, "pid": CLONE_NEWPID, "network": CLONE_NEWNET,
              "ipc": CLONE_NEWIPC, "uts": CLONE_NEWUTS}
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC = 1, 2, 4, 8
MS_REMOUNT, MS_BIND, MS_REC, MS_PRIVATE = 32, 4096, 16384, 1 << 18
PR_SET_PDEATHSIG, PR_SET_NO_NEW_PRIVS = 1, 38
SCRATCH = ("/tmp", "/var/tmp", "/dev/shm", "/run/lock")  # world-writable on most systems
CPU_HARD_EXTRA_S = 1  # unisolated: hard CPU limit beyond the soft one (after SIGXCPU)
CPU_SLACK_S = 0.2  # rusage against the kernel's tick-sampled CPU time (measured 0.1 s apart)
REPORT_LIMIT = 1 << 16  # bytes of events read per job; a flood beyond it is a failure
ENVIRONMENT = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "PYTHONDONTWRITEBYTECODE": "1"}

libc = ctypes.CDLL(None, use_errno=True)
libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong,
                       ctypes.c_char_p]


def check(result: int, what: str) -> None:
    if result != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"{what}: {os.strerror(errno)}")


def encoded(text: str | None) -> bytes | None:
    return None if text is None else text.encode()


def mount(source: str | None, target: str, fstype: str | None, flags: int,
          data: str | None = None) -> None:
    check(libc.mount(encoded(source), encoded(target), encoded(fstype), flags, encoded(data)),
          f"mount {target}")


def mount_points() -> list[tuple[str, set[str]]]:
    points = []
    with open("/proc/self/mountinfo", encoding="utf-8") as handle:
        for line in handle:
            fields = line.split()
            # mount points escape space, tab, newline and backslash as octal
            point = fields[4].encode().decode("unicode_escape").encode("latin-1").decode()
            points.append((point, set(fields[5].split(","))))
    return points


def closed_ancestor(path: str) -> str | None:
    """The topmost ancestor of `path` that others cannot traverse (e.g. /root), or None."""
    parts = os.path.abspath(path).split("/")[1:]
    for depth in range(1, len(parts) + 1):
        ancestor = "/" + "/".join(parts[:depth])
        if not os.stat(ancestor).st_mode & 0o001:
            return ancestor
    return None


def isolate_filesystem(settings: dict) -> None:
    """In a new mount namespace: everything read-only and nosuid, private scratch tmpfs, the
    interpreter reachable for an unprivileged user."""
    mount(None, "/", None, MS_REC | MS_PRIVATE)  # nothing propagates back to the host
    prefix = sys.base_prefix
    prefix_fd = os.open(prefix, os.O_PATH | os.O_DIRECTORY)
    for point, options in mount_points():
        flags = MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID
        flags |= MS_NODEV * ("nodev" in options) | MS_NOEXEC * ("noexec" in options)
        with contextlib.suppress(FileNotFoundError):  # a mount under one already covered
            mount(None, point, None, flags)
    closed = closed_ancestor(prefix)
    if closed is not None:  # e.g. pyenv under /root (mode 700): show the prefix, hide the rest
        mount("tmpfs", closed, "tmpfs", MS_NOSUID | MS_NODEV, "size=1m,mode=0755")
        os.makedirs(prefix)
        mount(f"/proc/self/fd/{prefix_fd}", prefix, None, MS_BIND | MS_REC)
        mount(None, prefix, None, MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID)
        mount(None, closed, None, MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV)
    os.close(prefix_fd)
    size = f"size={settings['tmpfs_mb']}m,mode=1777"
    for scratch in SCRATCH:
        if os.path.isdir(scratch):
            mount("tmpfs", scratch, "tmpfs", MS_NOSUID | MS_NODEV, size)


def set_limits(settings: dict) -> None:
    cpu = cpu_limit_s(settings)
    megabyte = 1 << 20
    # Unisolated, the kernel sends SIGXCPU at the soft CPU limit, whose default action ends
    # the program: a signal that names the cause; one that ignores it is SIGKILLed a second
    # later. In its own PID namespace the program is PID 1, which ignores SIGXCPU: the
    # kernel's SIGKILL at the limit itself ends it (see keeper).
    hard = cpu + CPU_HARD_EXTRA_S if settings["mode"] == "unisolated" else cpu
    resource.setrlimit(resource.RLIMIT_CPU, (cpu, hard))
    for limit, value in ((resource.RLIMIT_AS, settings["memory_mb"] * megabyte),
                         (resource.RLIMIT_NPROC, settings["max_processes"]),
                         (resource.RLIMIT_FSIZE, settings["max_file_mb"] * megabyte),
                         (resource.RLIMIT_NOFILE, settings["max_open_files"]),
                         (resource.RLIMIT_CORE, 0)):
        resource.setrlimit(limit, (value, value))


def describe(error: BaseException) -> str:
    """`Type: message`, defensively: the exception is the program's own object."""
    try:
        text = f"{type(error).__name__}: {error}"
    except BaseException:  # noqa: BLE001 - a hostile __str__ must not stop the report
        text = "unprintable exception"
    return text.replace("\n", " ")[:200]


def run_program(job: dict, token: str, report_fd: int) -> None:
    """In the runner: the program, then each test, all in one namespace; events on the pipe.
    Never returns."""
    write = os.write  # bound now: the program may replace os.write

    def event(text: str) -> None:
        write(report_fd, f"{token} {text}\n".encode("utf-8", "replace"))

    event("ready")
    namespace = {"__name__": "__solution__", "__builtins__": builtins}
    try:
        exec(compile(job["code"], "solution.py", "exec"), namespace)  # noqa: S102 - sandboxed
    except BaseException as error:  # noqa: BLE001 - any failure of the program is reported
        event("setup " + describe(error))
        os._exit(0)
    event("setup ok")
    for index, test in enumerate(job["tests"]):
        try:
            exec(compile(test, f"test_{index}.py", "exec"), namespace)  # noqa: S102
        except BaseException as error:  # noqa: BLE001
            event(f"test {index} fail {describe(error)}")
        else:
            event(f"test {index} pass")
    event("done")
    os._exit(0)


def die_with_parent() -> None:
    if hasattr(libc, "prctl"):  # Linux
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


def become_runner(job: dict, settings: dict, token: str, report_fd: int, workdir: str) -> None:
    """The runner's setup before it runs the program (as root, then dropping privileges)."""
    die_with_parent()
    if settings["mode"] == "namespaces":
        mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
    else:
        os.setsid()
    null = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(null, fd)
    os.closerange(3, report_fd)
    os.closerange(report_fd + 1, 1 << 16)
    os.chdir(workdir)
    os.environ.clear()
    os.environ.update(ENVIRONMENT, HOME=workdir, TMPDIR=workdir)
    set_limits(settings)
    if settings["mode"] == "namespaces":
        uid = settings["uid"]
        os.setgroups([])
        os.setgid(uid)
        os.setuid(uid)
        check(libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "no_new_privs")
    run_program(job, token, report_fd)


def wait_with_timeout(pid: int, seconds: float) -> tuple[int, bool, float]:
    """(wait status, timed out, CPU seconds the process used). SIGKILLs `pid` when the time
    runs out."""
    if hasattr(os, "pidfd_open"):  # Linux >= 5.3: wake up exactly when it ends
        pidfd = os.pidfd_open(pid)
        try:
            timed_out = not select.select([pidfd], [], [], seconds)[0]
        finally:
            os.close(pidfd)
    else:
        deadline = time.monotonic() + seconds
        while os.waitpid(pid, os.WNOHANG) == (0, 0) and time.monotonic() < deadline:
            time.sleep(0.002)
        timed_out = time.monotonic() >= deadline
    if timed_out:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    _, status, usage = os.wait4(pid, 0)
    return status, timed_out, usage.ru_utime + usage.ru_stime


def cpu_limit_s(settings: dict) -> int:
    """RLIMIT_CPU counts whole seconds."""
    return max(1, int(settings["cpu_s"] + 0.999))


def keeper(job: dict, settings: dict, token: str, report_fd: int) -> int:
    """In the keeper (forked from the worker): isolate, start the runner, wait for it.
    Returns the keeper's exit code: 0 finished, 1 nonzero exit, 2 timed out, 3 killed."""
    die_with_parent()
    if settings["mode"] == "namespaces":
        check(libc.unshare(sum(NAMESPACES.values())), "unshare")
        isolate_filesystem(settings)
        workdir = tempfile.mkdtemp(prefix="program-", dir="/tmp")  # on the private tmpfs
        os.chown(workdir, settings["uid"], settings["uid"])
    else:
        workdir = tempfile.mkdtemp(prefix="polychromic-program-")
    runner = os.fork()
    if runner == 0:
        try:
            become_runner(job, settings, token, report_fd, workdir)
        finally:
            os._exit(70)  # setup failed before the program ran
    os.close(report_fd)
    status, timed_out, cpu_s = wait_with_timeout(runner, settings["timeout_s"])
    if settings["mode"] == "unisolated":
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(runner, signal.SIGKILL)  # the session; escapees are not reachable
        shutil.rmtree(workdir, ignore_errors=True)
    # The kernel ends a process at its CPU limit: that is running out of time too, whichever of
    # the two clocks ran out first. SIGXCPU says so by itself (rusage alone lost the race under
    # load in CI); the SIGKILL at the hard limit is recognised by the CPU time used.
    killed_by = os.WTERMSIG(status) if os.WIFSIGNALED(status) else None
    if settings["mode"] == "namespaces":
        # PID 1 of its namespace: no process in it can signal it (the kernel drops those),
        # and nothing outside does but this keeper's timeout. A SIGKILL is the kernel's at
        # the CPU limit (rusage alone misjudged it: the limit counts tick-sampled time,
        # which under load ran 0.1 s ahead of the rusage sum).
        out_of_cpu = killed_by == signal.SIGKILL
    else:
        out_of_cpu = killed_by == signal.SIGXCPU or (
            killed_by == signal.SIGKILL
            and cpu_s >= cpu_limit_s(settings) + CPU_HARD_EXTRA_S - CPU_SLACK_S)
    if timed_out or out_of_cpu:
        return 2
    if os.WIFSIGNALED(status):
        return 3
    return 0 if os.WEXITSTATUS(status) == 0 else 1


def read_events(fd: int, seconds: float) -> tuple[bytes, bool]:
    """What arrives on the report pipe until every writer is gone (at most `seconds`: in mode
    unisolated an escaped process may hold it open), and whether it overflowed."""
    chunks, size, deadline = [], 0, time.monotonic() + seconds
    while True:
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([fd], [], [], left)[0]:
            return b"".join(chunks), False
        chunk = os.read(fd, 1 << 14)
        if not chunk:
            return b"".join(chunks), False
        size += len(chunk)
        if size > REPORT_LIMIT:
            return b"", True
        chunks.append(chunk)


def judge(events: bytes, token: str, n_tests: int, keeper_code: int, overflow: bool) -> dict:
    """The job's result from the events that carry the token (and nothing else)."""
    passed = [False] * n_tests
    ready, setup, done, error = False, None, False, None
    for line in events.decode("utf-8", "replace").splitlines():
        marker, _, text = line.partition(" ")
        if marker != token:
            continue
        kind, _, rest = text.partition(" ")
        if kind == "ready":
            ready = True
        elif kind == "setup":
            setup = rest
        elif kind == "test":
            index, _, outcome = rest.partition(" ")
            if index.isdigit() and int(index) < n_tests:
                passed[int(index)] = outcome == "pass"
                if outcome != "pass" and error is None:
                    error = outcome.removeprefix("fail ")
        elif kind == "done":
            done = True
    if overflow:  # first: a flood drowns the other events
        return {"status": "flooded", "passed": passed, "error": None}
    if not ready and keeper_code != 2:
        raise RuntimeError(f"the sandbox could not start a program (keeper exit {keeper_code})")
    if keeper_code == 2:
        status = "timeout"
    elif setup is not None and setup != "ok":
        status, error = "error", setup
    elif done and keeper_code == 0:
        status = "finished"
    else:  # ended without running every test: exited early, crashed, was killed
        status = "crashed"
    return {"status": status, "passed": passed, "error": error}


def run_job(job: dict, settings: dict) -> dict:
    started = time.perf_counter()
    token = secrets.token_hex(16)
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:
        code = 4
        try:
            os.close(read_fd)
            code = keeper(job, settings, token, write_fd)
        finally:
            os._exit(code)
    os.close(write_fd)
    events, overflow = read_events(read_fd, settings["timeout_s"] + 5)
    os.close(read_fd)
    _, status = os.waitpid(pid, 0)
    keeper_code = os.WEXITSTATUS(status) if os.WIFEXITED(status) else 4
    result = judge(events, token, len(job["tests"]), keeper_code, overflow)
    return {**result, "seconds": round(time.perf_counter() - started, 4)}


def attempt(step) -> str | None:
    """Run `step` in a forked child; None if it worked, else why it did not."""
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read_fd)
        message = ""
        try:
            step()
        except Exception as error:  # noqa: BLE001 - the reason is the probe's answer
            message = str(error) or type(error).__name__
        os.write(write_fd, message.encode()[:4000])
        os._exit(0)
    os.close(write_fd)
    message = os.read(read_fd, 4096).decode()
    os.close(read_fd)
    os.waitpid(pid, 0)
    return message or None


def probe(settings: dict) -> dict[str, str | None]:
    """Which isolation this machine allows: what -> None (works) or the reason it fails."""
    def filesystem() -> None:
        check(libc.unshare(CLONE_NEWNS), "unshare mount namespace")
        isolate_filesystem(settings)

    def user() -> None:
        os.setgroups([])
        os.setgid(settings["uid"])
        os.setuid(settings["uid"])

    found = {f"{name} namespace": attempt(lambda flag=flag, name=name: check(
        libc.unshare(flag), f"unshare {name} namespace")) for name, flag in NAMESPACES.items()}
    found["read-only filesystem"] = attempt(filesystem)
    found["separate user id"] = attempt(user)
    return found


def main() -> None:
    settings = json.loads(sys.stdin.readline())
    if settings.get("probe"):
        print(json.dumps(probe(settings)), flush=True)
        return
    for line in sys.stdin:
        try:
            result = run_job(json.loads(line), settings)
        except Exception as error:  # noqa: BLE001 - reported to the host, which stops
            result = {"status": "internal_error", "error": f"{type(error).__name__}: {error}"}
        sys.stdout.write(json.dumps(result) + "\n")
        sys.stdout.flush()


if __name__ == "__main__":
    main()
