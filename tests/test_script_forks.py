"""The script's own fork under chkpt (issue 20): os.fork(), os.forkpty()
and multiprocessing's fork start method behave as under python (no
"multi-threaded ... fork()" DeprecationWarning from 3.12 on, no thread of
chkpt at the fork, in the at-fork callbacks or in the child), automatic
snapshots go on in the parent and never happen in the child, and the timer
thread, which exists between forks, takes no signal of the script's."""
import os
import shutil
import signal
import sys
import textwrap
from pathlib import Path

import pytest

import chkpt
from conftest import run_chkpt, run_python

SCRIPTS = Path(__file__).resolve().parent / "exact" / "scripts"

MODES = {
    "manual": ["-f", "-1", "-z", "-1"],
    "snapshot": ["-f", "1", "-z", "0"],
    "every_line": ["-f", "0", "-z", "0"],
    "default": [],
}

# (script arguments, python options): cases whose every variable pickles,
# so that no chkpt: line is expected either, in any mode
FULL = [
    (["fork_script.py", "introspect"], ()),
    (["fork_script.py", "fork"], ()),
    (["fork_script.py", "forkpty"], ()),
    (["fork_script.py", "callbacks"], ()),
    (["fork_script.py", "record"], ()),
    (["fork_script.py", "refused"], ()),
    (["fork_script.py", "fork"], ("-W", "error::DeprecationWarning")),
    (["fork_script.py", "callbacks"], ("-W", "always::DeprecationWarning")),
]
# multiprocessing's objects do not pickle (chkpt says so under -z 0): the
# modes that capture nothing
MP_FULL = [
    (["mp_fork_process.py"], ("-W", "error::DeprecationWarning")),
    (["mp_fork_process.py"], ("-W", "always::DeprecationWarning")),
]


def workdir(tmp_path):
    work = tmp_path / "work"
    if work.exists():
        shutil.rmtree(work)
    shutil.copytree(SCRIPTS, work,
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    return work


def case_id(argv, opts):
    return "-".join([*argv[-1:], *(o.split("::")[0] for o in opts[1:])])


@pytest.mark.parametrize("mode", list(MODES))
@pytest.mark.parametrize("argv,opts",
                         [pytest.param(a, o, id=case_id(a, o)) for a, o in FULL]
                         + [pytest.param(a, o, id="mp-" + case_id(a, o))
                            for a, o in MP_FULL])
def test_stderr_in_full(argv, opts, mode, tmp_path):
    """stdout, the whole of stderr (no line dropped, chkpt's own included)
    and the exit status are python's."""
    if argv[0].startswith("mp_") and mode in ("snapshot", "every_line"):
        pytest.skip("multiprocessing's objects do not pickle: chkpt says so "
                    "on stderr (the exact suite compares these modes)")
    plain = run_python([*opts, *argv], workdir(tmp_path), timeout=120)
    under = run_chkpt([*MODES[mode], "-o", tmp_path / "snaps", *argv],
                      workdir(tmp_path), python_opts=opts, timeout=120)
    assert (under.stdout, under.stderr, under.returncode) == \
        (plain.stdout, plain.stderr, plain.returncode)
    assert plain.returncode == 0 and plain.stdout.strip(), plain.stderr


FORKING = """
import os, sys, time

def busy(seconds):
    end = time.monotonic() + seconds
    n = 0
    while time.monotonic() < end:
        n += 1
    return n

def refuse(event, args):
    if event == "os.fork" and HOW == "refused":
        raise RuntimeError("refused")

HOW = sys.argv[1]
sys.addaudithook(refuse)
data = [0.5] * 1000
children = []
for i in range(3):
    busy(0.05)
    sys.stdout.flush()
    try:
        if HOW == "forkpty":
            pid, fd = os.forkpty()
        else:
            pid = os.fork()
    except RuntimeError:
        continue
    if pid == 0:
        busy(0.3)                   # lines a snapshot could be taken at
        os._exit(0)
    children.append(pid)
    if HOW == "forkpty":
        try:
            while os.read(fd, 1024):
                pass
        except OSError:
            pass
        os.close(fd)
    os.waitpid(pid, 0)
after = time.time()
print(after)
print(*children)
print(os.getpid())
# busy until 5 automatic snapshots taken after the forks are published
# (however slow the machine), at most a minute
import chkpt
end = time.monotonic() + 60
while time.monotonic() < end and sum(
        s.kind == "auto" and s.time > after
        for s in chkpt.snapshots(sys.argv[2])) < 5:
    busy(0.05)
data[0] = 1
"""


@pytest.mark.parametrize("how", ["fork", "forkpty", "refused"])
def test_snapshots_go_on_in_the_parent_and_never_in_the_child(how, tmp_path):
    script = tmp_path / "forking.py"
    script.write_text(FORKING)
    r = run_chkpt(["-f", "50", "-z", "0", "-o", tmp_path / "ck", script, how,
                   tmp_path / "ck"], tmp_path, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stderr == ""
    after, children, parent = r.stdout.splitlines()
    children = children.split()
    assert len(children) == (0 if how == "refused" else 3)
    snaps = chkpt.snapshots(str(tmp_path / "ck"))
    # meta["pid"]: the process whose variables were captured (a file's
    # name carries the pid of whoever wrote it, so says nothing here)
    pids = {s.meta["pid"] for s in snaps}
    assert pids == {int(parent)}, (parent, children, pids)
    later = [s for s in snaps if s.kind == "auto" and s.time > float(after)]
    # the script goes on until it sees 5 (a minute at most: at one per
    # 50 ms, some 250 ms on an idle machine)
    assert len(later) >= 5, len(later)


MANY = """
import os, sys, warnings
warnings.simplefilter("always")
def threads():
    fd = os.open("/proc/self/status", os.O_RDONLY)
    status = os.read(fd, 65536).decode()
    os.close(fd)
    return int(status.split("Threads:")[1].split()[0])
seen = []
def audit(event, args):
    if event == "os.fork":          # the earliest the script can look
        seen.append(threads())
sys.addaudithook(audit)
os.register_at_fork(after_in_parent=lambda: seen.append(threads()))
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    for i in range(60):
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:
            os.write(w, str(threads()).encode())
            os._exit(0)
        os.close(w)
        child = os.read(r, 16)
        os.close(r)
        os.waitpid(pid, 0)
        seen.append(int(child))
print(len(caught), sorted(set(seen)))
"""


@pytest.mark.parametrize("mode", ["snapshot", "every_line", "default"])
def test_many_forks_in_a_row(mode, tmp_path):
    """Forks one after the other while the timer fires every millisecond:
    the thread is gone (as the kernel counts) at each of them."""
    script = tmp_path / "many.py"
    script.write_text(MANY)
    opts = ["-f", "1", "-z", "-1"] if mode == "snapshot" else MODES[mode]
    r = run_chkpt([*opts, "-o", tmp_path / "ck", script], tmp_path,
                  python_opts=("-W", "error::DeprecationWarning"), timeout=120)
    assert (r.stdout, r.stderr, r.returncode) == ("0 [1]\n", "", 0)


THREADS = """
import json, os, threading, time
end = time.monotonic() + 0.1
while time.monotonic() < end:
    pass
status = open("/proc/self/status").read()
print(json.dumps({
    "os": int(status.split("Threads:")[1].split()[0]),
    "tasks": len(os.listdir("/proc/self/task")),
    "active": threading.active_count(),
    "names": [t.name for t in threading.enumerate()],
    "main": threading.main_thread() is threading.current_thread(),
}))
tids = sorted(int(t) for t in os.listdir("/proc/self/task"))
masks = {}
for tid in tids:
    if tid != os.getpid():
        for line in open(f"/proc/self/task/{tid}/status"):
            if line.startswith("SigBlk:"):
                masks[tid] = int(line.split()[1], 16)
print(json.dumps(sorted(masks.values())))
"""


def test_differences_the_timer_thread(tmp_path):
    """DIFFERENCES.md: between forks the OS counts one thread more than
    under python (/proc/self/status, /proc/self/task); threading does not
    see it. It blocks every signal, so a signal sent to the process goes
    to the script's thread as under python (the exact case
    signal_blocked_stays_pending shows it)."""
    import json
    script = tmp_path / "threads.py"
    script.write_text(THREADS)
    plain = run_python([script], tmp_path)
    under = run_chkpt(["-f", "1000", "-o", tmp_path / "ck", script], tmp_path)
    assert plain.returncode == under.returncode == 0, under.stderr
    p_view, p_masks = map(json.loads, plain.stdout.splitlines())
    u_view, u_masks = map(json.loads, under.stdout.splitlines())
    assert p_masks == []
    assert u_view == {**p_view, "os": p_view["os"] + 1,
                      "tasks": p_view["tasks"] + 1}
    assert len(u_masks) == 1
    # the standard and the real-time signals (32 and 33 are the C
    # library's own, SIGKILL and SIGSTOP cannot be blocked)
    blockable = [s for s in [*range(1, 32),
                             *range(signal.SIGRTMIN, signal.SIGRTMAX + 1)]
                 if s not in (signal.SIGKILL, signal.SIGSTOP)]
    for s in blockable:
        assert u_masks[0] >> (s - 1) & 1, s
    text = (Path(__file__).resolve().parent / "exact" / "DIFFERENCES.md"
            ).read_text()
    assert "/proc/self/status" in text and "fork" in text


HEAVY = """
import os, sys
def threads():
    fd = os.open("/proc/self/status", os.O_RDONLY)
    status = os.read(fd, 65536).decode()
    os.close(fd)
    return int(status.split("Threads:")[1].split()[0])
def work():
    total = 0
    for i in range(300000):
        total += i
    return threads()
seen = []
os.register_at_fork(before=lambda: seen.append(work()),
                    after_in_parent=lambda: seen.append(work()))
for _ in range(3):
    pid = os.fork()
    if pid == 0:
        os._exit(0)
    os.waitpid(pid, 0)
print(seen)
"""


@pytest.mark.parametrize("mode", ["manual", "default"])
def test_long_python_at_fork_callbacks(mode, tmp_path):
    """At-fork callbacks that run a lot of Python code see python's
    threads only, from their first line to their last, and are not slowed
    down (3.13.0 counts threads after them)."""
    import time
    script = tmp_path / "heavy.py"
    script.write_text(HEAVY)
    t = time.monotonic()
    plain = run_python(["-W", "always::DeprecationWarning", script], tmp_path)
    t_plain = time.monotonic() - t
    t = time.monotonic()
    under = run_chkpt([*MODES[mode], "-o", tmp_path / "ck", script], tmp_path,
                      python_opts=("-W", "always::DeprecationWarning"))
    t_under = time.monotonic() - t
    assert (under.stdout, under.stderr, under.returncode) == \
        (plain.stdout, plain.stderr, plain.returncode) == ("[1, 1, 1, 1, 1, 1]\n", "", 0)
    assert t_under < 3 * t_plain + 1, (t_under, t_plain)
