"""The sandbox against hostile programs: each attack is contained, scored a failure, leaves
the host unchanged and no process behind, and the evaluation goes on."""

import os
import shutil
import socket
import sys
import tempfile
import threading
import time
from dataclasses import replace
from pathlib import Path

import pytest

from polychromic.config import UserError
from polychromic.domains.code import sandbox
from polychromic.domains.code.sandbox import Program, Sandbox, SandboxSettings
from tests.helpers import REPO

# Not the pipeline's default (tests and a running pipeline do not meet), and a block of 32 per
# xdist worker: each worker has its own `box`, and a test counts the processes of its uids.
UID = 1_990_100_000 + 32 * int(os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw"))
SETTINGS = SandboxSettings(timeout_s=2.0, cpu_s=2.0, workers=2, uid=UID)
SOLVES = ("assert add(2, 3) == 5", "assert add(-1, 1) == 0")
GOOD = Program("def add(a, b):\n    return a + b\n", SOLVES)

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux") or os.geteuid() != 0,
    reason="the namespaced sandbox needs root on Linux (elsewhere it refuses, tested below)")


def sandbox_processes(settings: SandboxSettings = SETTINGS) -> list[int]:
    """PIDs of processes that run as one of `settings`' uids (none may outlive their job).
    Each sandbox in this module has its own uids, so another test's programs are never
    counted."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                uid = entry.stat().st_uid
            except FileNotFoundError:
                continue
            if settings.uid <= uid < settings.uid + settings.workers:
                found.append(int(entry.name))
    return found


@pytest.fixture(scope="module")
def box():
    with Sandbox(SETTINGS) as running:
        assert running.mode == "namespaces"
        yield running
    assert sandbox_processes() == []


@pytest.fixture
def canary():
    """A directory outside /tmp (which the sandbox hides) with a file in it; the test checks
    that no program changed either."""
    folder = Path(tempfile.mkdtemp(prefix=".sandbox-canary-", dir=REPO))
    (folder / "keep.txt").write_text("original")
    os.chmod(folder, 0o777)  # world-writable: only the read-only mount can protect it
    os.chmod(folder / "keep.txt", 0o666)
    yield folder
    shutil.rmtree(folder)


def host_tmp() -> set[str]:
    """The host's /tmp, less the unisolated mode's program folders (another xdist worker's
    test makes them, and removes them: checked there)."""
    return {name for name in os.listdir("/tmp") if not name.startswith("polychromic-program-")}


def attack(body: str) -> Program:
    return Program(body, SOLVES)


def test_a_correct_program_passes_and_a_wrong_one_fails(box):
    wrong = Program("def add(a, b):\n    return a - b\n", SOLVES)
    partly = Program("def add(a, b):\n    return a + b if a > 0 else 7\n", SOLVES)
    good, bad, half = box.run([GOOD, wrong, partly])
    assert good.all_passed and good.status == "finished" and good.passed == (True, True)
    assert not bad.all_passed and bad.passed == (False, False)
    assert half.passed == (True, False) and half.fraction_passed == 0.5
    assert "AssertionError" in bad.error


@pytest.mark.parametrize("name,body,status", [
    ("loops forever", "while True:\n    pass\n", "timeout"),
    ("ignores SIGTERM", "import signal\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
     "while True:\n    pass\n", "timeout"),
    ("fork bomb", "import os\nwhile True:\n    os.fork()\n", None),
    ("allocates tens of GB", "block = bytearray(40 * 2**30)\n", "error"),
    ("crashes the interpreter", "import ctypes\nctypes.string_at(0)\n", "crashed"),
    ("aborts", "import os\nos.abort()\n", "crashed"),
    ("exits 0 before its tests", "import os\ndef add(a, b):\n    return a + b\nos._exit(0)\n",
     "crashed"),
    ("sys.exit before its tests", "import sys\ndef add(a, b):\n    return a + b\nsys.exit(0)\n",
     "error"),
    ("floods stdout", "import sys\nwhile True:\n    sys.stdout.write('x' * 65536)\n", "timeout"),
    ("floods every descriptor", "import os\nfor _ in range(10000):\n    for fd in range(64):\n"
     "        try:\n            os.write(fd, b'x' * 65536)\n        except OSError:\n"
     "            pass\n", None),
    ("kills its parent and every process it can", "import os, signal\n"
     "for pid in (os.getppid(), 1, -1):\n    try:\n        os.kill(pid, signal.SIGKILL)\n"
     "    except OSError:\n        pass\n", None),
])
def test_attacks_are_contained_and_fail(box, name, body, status):
    before = host_tmp()
    started = time.monotonic()
    outcome, after_it = box.run([attack(body), GOOD])
    assert not outcome.all_passed, name
    if status is not None:
        assert outcome.status == status, (name, outcome)
    assert time.monotonic() - started < 20  # bounded by the timeout, whatever the program does
    assert after_it.all_passed  # the evaluation goes on
    assert sandbox_processes() == [], name
    assert host_tmp() == before


@pytest.mark.parametrize("body", [
    "while True:\n    pass\n",  # user time
    "import os\nwhile True:\n    os.write(1, b'x' * 65536)\n",  # mostly system time
    "import signal\nsignal.signal(signal.SIGXCPU, signal.SIG_IGN)\nwhile True:\n    pass\n",
])
def test_running_out_of_cpu_time_is_a_timeout(body):
    """The kernel ends a program at its CPU limit (SIGKILL to the namespace's PID 1, which
    ignores SIGXCPU): a timeout, not a crash, even when the CPU limit runs out before the
    wall clock (rusage alone misjudged the system-time loop under load, in CI and here)."""
    settings = SandboxSettings(timeout_s=10.0, cpu_s=1.0, workers=1, uid=UID + 8)
    with Sandbox(settings) as cpu_bound:
        outcome, after_it = cpu_bound.run([attack(body), GOOD])
    assert outcome.status == "timeout", outcome
    assert outcome.seconds < 5  # the CPU limit, not the wall clock, stopped it
    assert after_it.all_passed


def test_files_outside_its_directory_are_out_of_reach(box, canary):
    target = canary / "keep.txt"
    body = (f"import os, shutil\nfor step in (lambda: os.remove({str(target)!r}),\n"
            f"             lambda: open({str(target)!r}, 'w').write('changed'),\n"
            f"             lambda: open({str(canary / 'new.txt')!r}, 'w').write('x'),\n"
            f"             lambda: shutil.rmtree({str(canary)!r}),\n"
            f"             lambda: open({str(REPO / 'params.yaml')!r}, 'a').write('x'),\n"
            "             lambda: open('/etc/passwd', 'a').write('x')):\n"
            "    try:\n        step()\n    except OSError:\n        pass\n"
            "open('/tmp/dropped', 'w').write('x')  # a private tmpfs: gone with the job\n"
            "open('local.txt', 'w').write('x')  # its own directory: allowed\n")
    params = (REPO / "params.yaml").read_bytes()
    before = host_tmp()
    outcome, = box.run([attack(body)])
    assert not outcome.all_passed  # `add` was never defined
    assert target.read_text() == "original"
    assert sorted(p.name for p in canary.iterdir()) == ["keep.txt"]
    assert (REPO / "params.yaml").read_bytes() == params
    assert host_tmp() == before and not Path("/tmp/dropped").exists()


def test_no_network_even_to_the_hosts_loopback(box):
    server = socket.create_server(("127.0.0.1", 0))
    port, connections = server.getsockname()[1], []
    server.settimeout(0.2)

    def accept():
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            try:
                connections.append(server.accept())
            except TimeoutError:
                continue

    listener = threading.Thread(target=accept)
    listener.start()
    body = (f"import socket\ns = socket.create_connection(('127.0.0.1', {port}), timeout=1)\n"
            "s.sendall(b'leak')\n")
    probe = ("import socket\ndef add(a, b):\n    return a + b\n"
             "try:\n    socket.create_connection(('1.1.1.1', 53), timeout=1)\n"
             "except OSError:\n    pass\nelse:\n    raise SystemExit('network reachable')\n")
    try:
        outcome, offline = box.run([attack(body), Program(probe, SOLVES)])
    finally:
        listener.join()
        server.close()
    # no socket can be made at all (seccomp), so the connection never starts
    assert outcome.status == "error" and outcome.error.startswith("PermissionError"), outcome
    assert connections == []
    assert offline.all_passed  # the outside world is unreachable too, and quickly


@pytest.mark.parametrize("family", ["AF_UNIX", "AF_VSOCK", "AF_NETLINK", "socketpair"])
def test_no_socket_of_any_family_and_no_host_socket_file(box, family):
    """A world-writable unix socket under /run is out of reach (/run is a private tmpfs,
    and socket() itself fails for every family: seccomp), and so are vsock and netlink."""
    folder = Path(tempfile.mkdtemp(prefix="sandbox-", dir="/run"))
    os.chmod(folder, 0o777)
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(folder / "host.sock"))
    os.chmod(folder / "host.sock", 0o777)
    server.listen()
    server.settimeout(0.5)
    target = str(folder / "host.sock")
    make = {"AF_UNIX": f"s = socket.socket(socket.AF_UNIX)\ns.connect({target!r})\n"
                       "s.sendall(b'leak')",
            "AF_VSOCK": "socket.socket(socket.AF_VSOCK, socket.SOCK_STREAM)",
            "AF_NETLINK": "socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, 0)",
            "socketpair": "socket.socketpair()"}[family]
    private = ("import os\ndef add(a, b):\n    return a + b\n"
               f"assert not os.path.exists({str(folder)!r}), os.listdir('/run')\n")
    try:
        outcome, run_is_private = box.run([attack(f"import socket\n{make}\n"),
                                           Program(private, SOLVES)])
        with pytest.raises(TimeoutError):
            server.accept()
    finally:
        server.close()
        shutil.rmtree(folder)
    assert outcome.status == "error" and outcome.error.startswith("PermissionError"), outcome
    assert run_is_private.all_passed, run_is_private


def test_a_new_session_cannot_escape_the_job(box, canary):
    """A daemon (double fork, new session) that outlives the program is killed with it."""
    body = ("import os, time\nif os.fork() == 0:\n    os.setsid()\n    if os.fork() == 0:\n"
            "        time.sleep(1.5)\n"
            f"        open({str(canary / 'daemon.txt')!r}, 'w').write('alive')\n"
            "    os._exit(0)\n")
    outcome, = box.run([attack(body)])
    assert not outcome.all_passed
    assert sandbox_processes() == []
    time.sleep(2)
    assert not (canary / "daemon.txt").exists()
    assert sandbox_processes() == []


def test_no_secrets_no_root_and_a_fresh_directory(box, monkeypatch):
    """The host's API keys and cloud credentials never reach a program; it runs as an
    unprivileged user in an empty directory that the next program does not see."""
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-secret")  # set after the workers started...
    with Sandbox(replace(SETTINGS, uid=UID + 2)) as fresh:  # ...and before these did
        body = ("import os\ndef add(a, b):\n    return a + b\n"
                "assert not [k for k in os.environ if 'KEY' in k or k.startswith('AWS')]\n"
                "try:\n    assert b'sk-secret' not in open('/proc/self/environ', 'rb').read()\n"
                "except PermissionError:\n    pass  # not even readable\n"
                "assert os.getuid() != 0 and os.getgid() != 0 and os.getgroups() == []\n"
                "assert os.listdir('.') == []\nopen('mine.txt', 'w').write('x')\n")
        first, second = fresh.run([Program(body, SOLVES)] * 2)
    assert first.all_passed, first
    assert second.all_passed, second  # mine.txt from the first run is gone


def test_every_test_must_run_and_pass(box):
    """A pass needs every test's pass event: a program that ends during its tests, or whose
    test list is empty, has not passed."""
    ends = Program("import os\ndef add(a, b):\n    return a + b\n",
                   (SOLVES[0], "import os; os._exit(0)", SOLVES[1]))
    outcome, empty = box.run([ends, Program(GOOD.code, ())])
    assert outcome.passed == (True, False, False) and outcome.status == "crashed"
    assert not outcome.all_passed and not empty.all_passed


def test_missing_isolation_is_refused_unless_allowed(monkeypatch):
    gaps = {"network namespace": "unshare network namespace: Operation not permitted"}
    monkeypatch.setattr(sandbox, "isolation_gaps", lambda *args: gaps)
    with pytest.raises(UserError, match=r"'code.checker': this machine does not allow the "
                       r"sandbox's isolation: network namespace \(unshare network namespace: "
                       r"Operation not permitted\).*'code.checker.allow_unisolated: true'"):
        Sandbox(SETTINGS, "code.checker")
    allowed = SandboxSettings(timeout_s=1.0, cpu_s=1.0, workers=1, uid=UID + 4,
                              allow_unisolated=True)
    # unisolated, started as root: the program still runs as the uid, so it is not root, its
    # process limit (8) holds for its whole tree and it can signal no one else's process
    fork_count = ("import os, time\ndef add(a, b):\n    return a + b\nforks = 0\n"
                  "for _ in range(12):\n    try:\n        if os.fork() == 0:\n"
                  "            time.sleep(0.3)\n            os._exit(0)\n        forks += 1\n"
                  "    except OSError:\n        pass\nassert forks < 8, forks\n"
                  "assert os.getuid() != 0 and os.geteuid() != 0\n"
                  "try:\n    os.kill(1, 0)\nexcept PermissionError:\n    pass\n"
                  "else:\n    raise SystemExit('could signal init')\n")
    before = set(os.listdir("/tmp"))
    with Sandbox(allowed, "code.checker") as weak:
        assert weak.mode == "unisolated"
        good, loop, unprivileged = weak.run([GOOD, attack("while True:\n    pass\n"),
                                             Program(fork_count, SOLVES)])
    assert not {n for n in set(os.listdir("/tmp")) - before
                if n.startswith("polychromic-program-")}  # each program's folder removed
    assert good.all_passed and loop.status == "timeout"
    assert unprivileged.all_passed, unprivileged


def test_this_machine_allows_full_isolation():
    """Where the tests run (root, Linux), nothing is missing: CI exercises the real thing."""
    assert sandbox.isolation_gaps(UID + 12, SETTINGS.tmpfs_mb) == {}
    with Sandbox(replace(SETTINGS, uid=UID + 24, workers=1)) as box:
        assert box.bound == "program"  # memory and processes bounded per program (cgroups)


def test_two_sandboxes_at_once_never_share_a_uid():
    """Two pipelines on one machine: the second takes the next free ids, and the first's are
    free again once it closes."""
    settings = SandboxSettings(timeout_s=2.0, cpu_s=2.0, workers=2, uid=UID + 13)
    with Sandbox(settings) as first, Sandbox(settings) as second:
        assert first.uids == [UID + 13, UID + 14] and second.uids == [UID + 15, UID + 16]
        # a fork bomb in the first does not use up the second's process count
        bomb = attack("import os\nwhile True:\n    os.fork()\n")
        outcomes = []
        thread = threading.Thread(target=lambda: outcomes.extend(first.run([bomb, bomb])))
        thread.start()
        assert all(o.all_passed for o in second.run([GOOD, GOOD]))
        thread.join()
    with Sandbox(settings) as again:
        assert again.uids == [UID + 13, UID + 14]


def test_memory_is_bounded_for_the_whole_program_not_per_process():
    """Four children of 150 MB each stay under a 256 MiB address-space rlimit one by one, but
    not under the program's cgroup: some are killed, and the program fails."""
    settings = SandboxSettings(timeout_s=10.0, cpu_s=5.0, workers=1, uid=UID + 20,
                               memory_mb=256)
    body = ("import os, time\ndef add(a, b):\n    return a + b\nchildren = []\n"
            "for _ in range(4):\n    pid = os.fork()\n    if pid == 0:\n"
            "        block = b'x' * 150_000_000\n        time.sleep(1.5)\n        os._exit(0)\n"
            "    children.append(pid)\n"
            "held = sum(os.waitpid(pid, 0)[1] == 0 for pid in children)\n"
            "assert held == 4, held\n")
    with Sandbox(settings) as box:
        assert box.bound == "program"  # this machine lets the sandbox make cgroups
        outcome, after_it = box.run([Program(body, SOLVES), GOOD])
    assert not outcome.all_passed and outcome.status != "timeout", outcome
    assert after_it.all_passed


TRICKS = {  # each a program that passes no test honestly (its add answers 42)
    "an __eq__ that always answers True":
        "class Anything:\n    def __eq__(self, other):\n        return True\n"
        "def add(a, b):\n    return Anything()\n",
    "an int whose __eq__ always answers True":
        "class Yes(int):\n    def __eq__(self, other):\n        return True\n"
        "    __hash__ = int.__hash__\ndef add(a, b):\n    return Yes(42)\n",
    "exec, eval and compile replaced for what runs after it":
        "import builtins\ndef add(a, b):\n    return 42\n"
        "builtins.exec = builtins.eval = lambda *args, **kwargs: None\n"
        "builtins.compile = lambda *args, **kwargs: 'pass'\n",
    "the runner's test list emptied through the call stack":
        "import sys\ndef add(a, b):\n    return 42\nframe = sys._getframe(1)\n"
        "while frame is not None:\n    for value in list(frame.f_locals.values()):\n"
        "        if isinstance(value, dict) and 'tests' in value:\n"
        "            value['tests'].clear()\n    frame = frame.f_back\n",
    "pass events forged with the token found on the stack, then an early exit":
        "import os, sys\ndef add(a, b):\n    return 42\nframe = sys._getframe(1)\n"
        "while frame is not None:\n    names = frame.f_locals\n"
        "    if 'token' in names and 'report_fd' in names:\n"
        "        for i in range(2):\n"
        "            line = f\"{names['token']} test {i} pass\\n\"\n"
        "            os.write(names['report_fd'], line.encode())\n"
        "        os.write(names['report_fd'], f\"{names['token']} done\\n\".encode())\n"
        "        os._exit(0)\n    frame = frame.f_back\n",
    "the expected value searched for in the process's memory":
        "import gc\ndef add(a, b):\n    for item in gc.get_objects():\n"
        "        if isinstance(item, str) and '== 5' in item:\n"
        "            return 5\n    return 42\n",
}


@pytest.mark.parametrize("trick", list(TRICKS))
def test_a_program_cannot_decide_its_own_verdict(box, trick):
    """The tricks that passed every test before (issue 24): the values the program computes
    are judged outside its process, and the expected values never enter it."""
    outcome, honest = box.run([Program(TRICKS[trick], SOLVES, "add"),
                               Program(GOOD.code, SOLVES, "add")])
    assert not any(outcome.passed), (trick, outcome)
    assert honest.all_passed


def test_the_tricks_score_nothing_in_evaluation_and_as_a_training_reward():
    """Through CodeChecker, the path of evaluate's verdicts and of the objective's rewards."""
    from polychromic.domains.code import CodeChecker

    record = {"id": "t", "prompt": "add two numbers", "references": [GOOD.code],
              "task": {"style": "describe", "header": "", "entry_point": "add",
                       "tests": list(SOLVES), "shown_tests": [SOLVES[0]]}}
    samples = [f"{code}```" for code in [*TRICKS.values(), GOOD.code]]  # after the fence
    settings = SandboxSettings(timeout_s=3.0, cpu_s=3.0, workers=1, uid=UID + 26)
    checker = CodeChecker(settings, visible_tests=1, key="code.checker")
    try:
        verdicts, = checker.verdicts([(record, samples)])
        rewards, = checker.rewards([(record, samples)])
    finally:
        checker.close()
    assert [v.passed for v in verdicts] == [False] * len(TRICKS) + [True]
    assert rewards == [0.0] * len(TRICKS) + [1.0]


def test_behaviour_classes_tell_programs_apart_by_what_they_compute():
    """CodeChecker.classes: programs that agree on every test's inputs and on the extra
    inputs are one class, whatever their text; agreeing on the tests but not on the extra
    inputs makes two; programs that never run are one class."""
    from polychromic.domains.code import CodeChecker

    tests = ["assert add(2, 3) == 5", "assert add(-1, 1) == 0"]
    record = {"id": "t", "prompt": "add two numbers", "references": [GOOD.code],
              "task": {"style": "describe", "header": "", "entry_point": "add",
                       "tests": tests, "shown_tests": tests[:1]}}
    programs = [
        "def add(a, b):\n    return a + b\n",
        "def add(x, y):\n    total = x\n    total += y\n    return total\n",  # same behaviour
        # right on both tests (2+3, -1+1), wrong on the extra inputs (3, 4) and (4, 6)
        "def add(a, b):\n    return {(2, 3): 5, (-1, 1): 0}.get((a, b), 0)\n",
        "def add(a, b) return a + b\n",  # a syntax error
        "def plus(a, b):\n    return a + b\n",  # no `add`: never reaches a value
        "def add(a, b):\n    return a - b\n",  # wrong everywhere
    ]
    settings = SandboxSettings(timeout_s=3.0, cpu_s=3.0, workers=1, uid=UID + 27)
    checker = CodeChecker(settings, visible_tests=1, key="code.checker")
    try:
        labels, = checker.classes([(record, [f"{code}```" for code in programs])])
        verdicts, = checker.verdicts([(record, [f"{code}```" for code in programs])])
    finally:
        checker.close()
    assert [v.passed for v in verdicts] == [True, True, True, False, False, False]
    assert labels[0] == labels[1]
    assert len({labels[0], labels[2], labels[3], labels[5]}) == 4
    assert labels[3] == "error"
    from polychromic import metrics
    assert metrics.distinct_classes(labels) == 5
    assert metrics.correct_classes(labels, [v.passed for v in verdicts]) == 2
