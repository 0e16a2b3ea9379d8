"""The line hook that takes automatic snapshots at the script's own lines:
armed, it reports the script's lines only, library code never (library
code that runs while armed, such as a long `import sklearn`, costs nothing),
yet script code that library code calls back or resumes is caught.
"""
import sys

import pytest

from snapshot_util import chkpt, run, write

LIB = '''
import sys
import time


def busy(seconds):
    """Pure-Python library work (the time is spent here, not in the script)."""
    end = time.monotonic() + seconds
    n = 0
    while time.monotonic() < end:
        n += 1
    return n


def snapshot_processes():
    """The processes the script's thread created (chkpt's snapshot
    processes: the kernel lists them, python never sees them)."""
    import threading
    with open("/proc/self/task/%d/children" % threading.get_native_id()) as f:
        return set(f.read().split())


def drive(step, count, cap=30.0):
    """Calls step back until COUNT snapshot processes were created while it
    ran (or CAP seconds went by: none is being taken)."""
    seen, end = set(), time.monotonic() + cap
    before = snapshot_processes()
    while len(seen) < count and time.monotonic() < end:
        busy(0.02)
        step()
        seen |= snapshot_processes() - before


def consume(gen, count, cap=30.0):
    seen, end = set(), time.monotonic() + cap
    before = snapshot_processes()
    while len(seen) < count and time.monotonic() < end:
        busy(0.02)
        next(gen)
        seen |= snapshot_processes() - before


def watch(seconds):
    """What chkpt's tool asks of sys.monitoring while library code runs."""
    seen = set()
    mon = getattr(sys, "monitoring", None)
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        busy(0.005)
        for tool in range(6):
            if mon is not None and mon.get_tool(tool) == "chkpt":
                seen.add(mon.get_events(tool))
    return seen
'''

SCRIPT = '''
import sys
sys.path.insert(0, "lib")
import mylib

data = list(range(1000))


def step():
    data.append(len(data))  # STEP


def gen():
    while True:  # GEN
        data.append(-1)  # GEN
        yield  # GEN


g = gen()
next(g)
mode = sys.argv[1]
if mode == "call":
    mylib.drive(step, 4)
elif mode == "resume":
    mylib.consume(g, 4)
else:
    seen = mylib.watch(1.5)
    mon = getattr(sys, "monitoring", None)
    line = mon.events.LINE if mon else 0
    print("global LINE events:", any(e & line for e in seen), len(data) > 0)
'''


LOOP = {"call": "drive", "resume": "consume"}


def marked_lines(text, mark):
    return {i for i, line in enumerate(text.splitlines(), 1) if mark in line}


def snapshot_lines(cwd):
    r = run(["-c", "import chkpt\nfor i in chkpt.snapshots(): print(i.line)"],
            cwd, check=0)
    return [int(l) for l in r.stdout.split()]


@pytest.mark.parametrize("mode,mark", [("call", "# STEP"), ("resume", "# GEN")])
def test_script_code_that_library_code_runs_is_snapshotted(tmp_path, mode, mark):
    """The script spends its time in a library's loop that calls back (or
    resumes) a function of the script: the snapshots are taken at the
    callback's lines, not only once the library returns. The loop runs
    until 4 snapshot processes were created in it (a loaded machine writes
    them slower: it runs longer), or 30 s when none comes there."""
    write(tmp_path / "lib" / "mylib.py", LIB)
    script = write(tmp_path / "s.py", SCRIPT)
    chkpt(["-f", "100", "-z", "0", "s.py", mode], tmp_path, check=0)
    lines = snapshot_lines(tmp_path)
    want = marked_lines(script.read_text(), mark)
    if sys.version_info < (3, 12):
        # 3.11 has no per-code line events: a snapshot due while library
        # code runs is taken at once, at the script's line that called it
        want |= marked_lines(script.read_text(), f"mylib.{LOOP[mode]}(")
    # the 4 created in the loop (each published its snapshot) were taken
    # at its lines
    assert sum(line in want for line in lines) >= 4, (lines, want)


@pytest.mark.skipif(sys.version_info < (3, 12), reason="sys.monitoring is 3.12+")
def test_armed_hook_sets_no_global_line_events(tmp_path):
    """While armed, library code runs without LINE events: they are set on
    the script's code objects only."""
    write(tmp_path / "lib" / "mylib.py", LIB)
    write(tmp_path / "s.py", SCRIPT)
    r = chkpt(["-f", "50", "-z", "0", "s.py", "watch"], tmp_path, check=0)
    assert r.stdout.strip() == "global LINE events: False True", r.stdout
    assert len(snapshot_lines(tmp_path)) >= 1
