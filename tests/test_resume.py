"""--resume: a changed script continues from its last still-valid boundary
snapshot (issue 17). Real scripts in real subprocesses, chkpt's defaults.

Each script's stages note in ran.log that they ran, so a test sees which
stages a run skipped; they print nothing, so the stdout of a resumed run is
the stdout of a plain run of the same script.

A stage sleeps (a busy loop would starve the other pytest worker): the
boundary rule counts the script's wall time, not its CPU. The tests of the
default rule (two seconds between boundaries) and of the runs that take none
use stages longer than two seconds; the others run under `-f 200` (a
boundary once 200 ms went by) with short stages.
"""
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest

from conftest import chkpt_env, chkpt_lines, run_chkpt, run_python

# Long enough to be worth a boundary snapshot under chkpt's defaults (2 s).
LONG_S = 2.2
# Under -f 200, a boundary once 200 ms went by and 10 times what the last one
# cost the script (a fork: milliseconds, tens of them on a loaded machine);
# and the boundary before it must be written by then (a boundary snapshot
# still being written skips the next): under the sanitizer (tests/asan.sh)
# a child takes more than 0.8 s to write one (seen in CI: the boundary
# after stage 2 skipped, the resume ran stage 2 again).
STAGE_S = 2.0 if os.environ.get("CHKPT_TEST_SANITIZER_LOGS") else 0.8
FAST = ("-f", "200")

HEAD_T = '''\
import os, random, time

def spin(seconds):
    time.sleep(seconds)

def note(what):
    with open("ran.log", "a") as f:
        f.write(what + "\\n")

def stage1():
    note("stage1")
    spin(STAGE1_S)
    return [i * i for i in range(1000)]

def stage2(xs):
    note("stage2")
    spin(STAGE2_S)
    return sum(xs) * FACTOR
'''


def head(stage1_s, stage2_s):
    return HEAD_T.replace("STAGE1_S", repr(stage1_s)).replace(
        "STAGE2_S", repr(stage2_s))


HEAD = head(STAGE_S, STAGE_S)
LONG_HEAD = head(LONG_S, LONG_S)
# a boundary due after stage 1 under the defaults: a run that takes none
# shows it would not have taken any
FIRST_LONG_HEAD = head(LONG_S, STAGE_S)

STAGES = '''
FACTOR = 3
a = stage1()
b = stage2(a)
note("stage3")
print("result", b / DIVISOR, len(a))
'''
THREE_STAGES = HEAD + STAGES
LONG_STAGES = LONG_HEAD + STAGES
FIRST_LONG_STAGES = FIRST_LONG_HEAD + STAGES


def write(path, text):
    with open(path, "w") as f:
        f.write(text)


def ran(d):
    """The stages the runs so far went through (and forget them)."""
    p = os.path.join(d, "ran.log")
    if not os.path.exists(p):
        return []
    with open(p) as f:
        lines = f.read().split()
    os.remove(p)
    return lines


def plain(d, script="s.py", env=None):
    """stdout of `python script` in a copy of d (its ran.log untouched)."""
    ref = os.path.join(d, "plain")
    os.makedirs(ref, exist_ok=True)
    shutil.copy(os.path.join(d, script), ref)
    r = run_python([script], ref, env=env)
    assert r.returncode == 0, r.stderr
    return r.stdout


def resume_line(stderr):
    lines = [l for l in chkpt_lines(stderr) if "resum" in l]
    assert len(lines) == 1, stderr
    return lines[0]


def crash_fix_resume(d, broken, fixed):
    """Runs BROKEN in d (it goes through the three stages, then fails with a
    NameError), writes FIXED over it, and runs it with --resume: asserts the
    resumed run succeeds with the stdout of a plain run of FIXED, and returns
    that run."""
    write(os.path.join(d, "s.py"), broken)
    r = run_chkpt([*FAST, "s.py"], d)
    assert r.returncode == 1 and "NameError" in r.stderr, r.stderr
    assert ran(d) == ["stage1", "stage2", "stage3"]
    write(os.path.join(d, "s.py"), fixed)
    expected = plain(d)
    r = run_chkpt([*FAST, "--resume", "s.py"], d)
    assert r.returncode == 0, r.stderr
    assert r.stdout == expected
    return r


def test_a_fixed_last_stage_skips_the_expensive_ones(tmp_path, python):
    """chkpt's defaults: a boundary after each stage of more than 2 s."""
    d = str(tmp_path)
    write(os.path.join(d, "s.py"), LONG_STAGES)
    r = run_chkpt(["s.py"], d)
    assert r.returncode == 1 and "NameError" in r.stderr, r.stderr
    assert ran(d) == ["stage1", "stage2", "stage3"]
    write(os.path.join(d, "s.py"), LONG_STAGES.replace("DIVISOR", "7"))
    t = time.monotonic()
    expected = plain(d)
    t_plain = time.monotonic() - t
    t = time.monotonic()
    r = run_chkpt(["--resume", "s.py"], d)
    t_resume = time.monotonic() - t
    assert r.returncode == 0, r.stderr
    assert r.stdout == expected
    assert ran(d) == ["stage3"]
    assert "statements 1-" in resume_line(r.stderr)
    # the stages' time is saved (the margin leaves room for a loaded machine)
    assert t_resume < t_plain - LONG_S
    print(f"\n(a) plain run of the fixed script {t_plain:.2f} s, --resume "
          f"{t_resume:.2f} s: {t_plain - t_resume:.2f} s saved")


def test_b_edited_stage2_function_reruns_stage2_only(tmp_path, python):
    d = str(tmp_path)
    fixed = THREE_STAGES.replace("DIVISOR", "7")
    write(os.path.join(d, "s.py"), fixed)
    r = run_chkpt([*FAST, "s.py"], d)
    assert r.returncode == 0, r.stderr
    ran(d)
    # a comment and new formatting elsewhere change nothing
    edited = fixed.replace("return sum(xs) * FACTOR",
                           "return sum(xs) * FACTOR + 1")
    edited = edited.replace("a = stage1()", "a  =  stage1( )   # again")
    write(os.path.join(d, "s.py"), edited)
    expected = plain(d)
    r = run_chkpt([*FAST, "--resume", "s.py"], d)
    assert r.returncode == 0, r.stderr
    assert r.stdout == expected
    assert ran(d) == ["stage2", "stage3"]
    line = resume_line(r.stderr)
    assert "stage2, which ran before it, changed" in line, line


def test_c_edited_first_statement_runs_everything(tmp_path, python):
    d = str(tmp_path)
    script = "OFFSET = 0\n" + THREE_STAGES.replace("DIVISOR", "7")
    write(os.path.join(d, "s.py"), script)
    assert run_chkpt([*FAST, "s.py"], d).returncode == 0
    ran(d)
    script = script.replace("OFFSET = 0", "OFFSET = 1")
    script = script.replace("len(a))", "len(a) + OFFSET)")
    write(os.path.join(d, "s.py"), script)
    expected = plain(d)
    r = run_chkpt([*FAST, "--resume", "s.py"], d)
    assert r.returncode == 0, r.stderr
    assert r.stdout == expected
    assert ran(d) == ["stage1", "stage2", "stage3"]
    line = resume_line(r.stderr)
    assert "from the start" in line and "statement 1 (line 1) changed" in line


RANDOM = HEAD + '''
import numpy as np
random.seed(12)
np.random.seed(34)
FACTOR = random.random() + np.random.random()
a = stage1()
drawn = [random.random() for _ in range(5)] + list(np.random.random(5))
b = stage2(a)
note("stage3")
print(repr(b), [random.random() for _ in range(3)], np.random.random(3).tolist(),
      random.gauss(0, 1), np.random.normal(), BUG)
'''


def test_d_random_numbers_after_the_resume_point(tmp_path, python):
    d = str(tmp_path)
    crash_fix_resume(d, RANDOM, RANDOM.replace(", BUG)", ")"))
    assert ran(d) == ["stage3"]


KILLED = THREE_STAGES.replace("DIVISOR", "7").replace(
    'note("stage3")',
    'note("stage3")\nspin(float(os.environ.get("STAGE3_S", "0")))')


def test_e_resume_after_sigterm(tmp_path, python):
    d = str(tmp_path)
    write(os.path.join(d, "s.py"), KILLED)
    p = subprocess.Popen([python, "-m", "chkpt", *FAST, "s.py"], cwd=d,
                         env=chkpt_env({"STAGE3_S": "120"}),
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    log = os.path.join(d, "ran.log")
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if os.path.exists(log) and "stage3" in open(log).read():
            break
        time.sleep(0.05)
    time.sleep(0.2)
    p.send_signal(signal.SIGTERM)
    p.communicate(timeout=30)
    assert p.returncode == -signal.SIGTERM
    assert ran(d) == ["stage1", "stage2", "stage3"]
    expected = plain(d)
    r = run_chkpt([*FAST, "--resume", "s.py"], d)
    assert r.returncode == 0, r.stderr
    assert r.stdout == expected
    assert ran(d) == ["stage3"]


UNSAVED = HEAD + '''
FACTOR = 3
a = stage1()
out = open("out.txt", "w")
b = stage2(a)
out.write(f"{b}\\n")
out.close()
note("stage3")
print(open("out.txt").read(), BUG)
'''


def test_f_unsaved_variable_needed_later(tmp_path, python):
    d = str(tmp_path)
    r = crash_fix_resume(d, UNSAVED, UNSAVED.replace(", BUG)", ")"))
    # the open file is missing after stage 2: resumed after stage 1
    assert ran(d) == ["stage2", "stage3"]
    line = resume_line(r.stderr)
    assert "variable(s) out could not be saved" in line, line


MOVED = HEAD + '''
class Point:
    def __init__(self, x):
        self.x = x

FACTOR = 3
a = stage1()
p = Point(len(a))
b = stage2(a)
note("stage3")
print("result", b / DIVISOR, isinstance(p, Point), p.x)
'''


def test_g_store_and_script_moved(tmp_path, python):
    first = tmp_path / "node1" / "job"
    first.mkdir(parents=True)
    write(str(first / "s.py"), MOVED)
    r = run_chkpt([*FAST, "s.py"], str(first))
    assert r.returncode == 1 and "NameError" in r.stderr, r.stderr
    ran(str(first))
    other = tmp_path / "node2" / "elsewhere"
    shutil.copytree(str(first), str(other))
    shutil.rmtree(str(first))
    d = str(other)
    write(os.path.join(d, "s.py"), MOVED.replace("DIVISOR", "7"))
    expected = plain(d)
    r = run_chkpt([*FAST, "--resume", "s.py"], d)
    assert r.returncode == 0, r.stderr
    assert r.stdout == expected
    assert "True" in r.stdout
    assert ran(d) == ["stage3"]


def test_manual_only_takes_no_boundary_snapshots(tmp_path, python):
    """-f -1 takes none, though its first stage is long enough for the
    default rule (2 s); --resume then finds none and runs from the start."""
    d = str(tmp_path)
    write(os.path.join(d, "s.py"), FIRST_LONG_STAGES.replace("DIVISOR", "7"))
    r = run_chkpt(["-f", "-1", "s.py"], d)
    assert r.returncode == 0, r.stderr
    assert not os.path.exists(os.path.join(d, "checkpoints", "snapshots")) \
        or not os.listdir(os.path.join(d, "checkpoints", "snapshots"))
    assert ran(d) == ["stage1", "stage2", "stage3"]
    r = run_chkpt(["--resume", "s.py"], d)
    assert r.returncode == 0, r.stderr
    assert ran(d) == ["stage1", "stage2", "stage3"]
    assert "from the start" in resume_line(r.stderr)


PROFILED = FIRST_LONG_HEAD + """
import cProfile, io, pstats, re
prof = cProfile.Profile()
prof.enable()
FACTOR = 3
a = stage1()
b = stage2(a)
prof.disable()
out = io.StringIO()
pstats.Stats(prof, stream=out).sort_stats("ncalls", "filename", "line").print_stats()
print(sorted(l.split(maxsplit=5)[-1].rsplit("/", 1)[-1]
             for l in out.getvalue().splitlines()[3:]
             if re.match(r" *[0-9/]+ ", l)))
print(b)
"""


def snapshot_count(d):
    p = os.path.join(d, "checkpoints", "snapshots")
    return len(os.listdir(p)) if os.path.exists(p) else 0


def test_a_profiler_started_by_the_script_sees_what_python_shows(
        tmp_path, python):
    """A script that imports a profiler runs as one module: split, a
    profile enabled at its top level would list each later statement as a
    `<module>` call of its own. It takes no boundary snapshot; a script that
    only has a variable called `trace` is split as any other. (-f 600000:
    no timer snapshot in the run, whose reaping the profile would see; the
    first stage is longer than the 2 s a boundary then waits for.)"""
    d = str(tmp_path)
    write(os.path.join(d, "s.py"), PROFILED)
    expected = plain(d)
    assert "(<module>)" not in expected and "stage1" in expected
    r = run_chkpt(["-f", "600000", "s.py"], d)
    assert r.returncode == 0, r.stderr
    assert r.stdout == expected
    assert snapshot_count(d) == 0
    ran(d)
    d2 = os.path.join(d, "other")
    os.makedirs(d2)
    write(os.path.join(d2, "s.py"), THREE_STAGES.replace(
        "DIVISOR", "7").replace("FACTOR = 3", "FACTOR = 3\ntrace = []"))
    r = run_chkpt([*FAST, "s.py"], d2)
    assert r.returncode == 0, r.stderr
    assert snapshot_count(d2) > 0


def test_statements_run_as_python_runs_the_module(tmp_path, python):
    """Split into statements, the module still behaves as one: docstring,
    __future__ flags, annotations, tracebacks and line numbers."""
    d = str(tmp_path)
    write(os.path.join(d, "s.py"), '''"""the doc"""
from __future__ import annotations
import sys, traceback
x: undefined_name = 1
"""not a docstring"""
def f():
    return sys._getframe(1).f_back
print(__doc__, __annotations__, f() is None, sys._getframe().f_lineno)
print(1 / 0)
''')
    r = run_chkpt(["s.py"], d)
    p = run_python(["s.py"], d)
    assert r.stdout == p.stdout
    assert r.stderr == p.stderr and r.returncode == p.returncode == 1


def test_module_run_with_dash_m_resumes(tmp_path, python):
    """-m pkg.job: boundary snapshots and --resume as for a script file,
    under runpy's own frames (the traceback is python -m's)."""
    d = str(tmp_path)
    os.mkdir(os.path.join(d, "pkg"))
    write(os.path.join(d, "pkg", "__init__.py"), "")
    write(os.path.join(d, "pkg", "job.py"), THREE_STAGES)
    r = run_chkpt([*FAST, "-m", "pkg.job"], d)
    p = run_python(["-m", "pkg.job"], d)
    assert r.returncode == p.returncode == 1
    assert r.stderr == p.stderr and "<frozen runpy>" in r.stderr
    assert ran(d) == ["stage1", "stage2", "stage3"] * 2
    write(os.path.join(d, "pkg", "job.py"), THREE_STAGES.replace("DIVISOR", "7"))
    expected = run_python(["-m", "pkg.job"], d).stdout
    ran(d)
    r = run_chkpt([*FAST, "--resume", "-m", "pkg.job"], d)
    assert r.returncode == 0, r.stderr
    assert r.stdout == expected
    assert ran(d) == ["stage3"]
    assert "statements 1-" in resume_line(r.stderr)


HELPERS = '''\
import time

SCALE = 2

def spin(seconds):
    time.sleep(seconds)

def note(what):
    with open("ran.log", "a") as f:
        f.write(what + "\\n")

def stage2(xs):
    note("stage2")
    spin(%s)
    return sum(xs) * SCALE
''' % STAGE_S

WITH_HELPERS = f'''\
import helpers
from helpers import note, spin

def stage1():
    note("stage1")
    spin({STAGE_S})
    return list(range(100))

a = stage1()
b = helpers.stage2(a)
note("stage3")
print("result", a[-1], b)
'''


@pytest.mark.parametrize("edit", ["function", "top level"])
def test_sibling_module_counts_as_the_script(tmp_path, python, edit):
    """A module imported from the script's directory is the script's code:
    editing the function it runs in stage 2 reruns stage 2; editing its top
    level (which ran at the import) reruns everything."""
    d = str(tmp_path)
    write(os.path.join(d, "s.py"), WITH_HELPERS)
    write(os.path.join(d, "helpers.py"), HELPERS)
    r = run_chkpt([*FAST, "s.py"], d)
    assert r.returncode == 0, r.stderr
    ran(d)
    if edit == "function":
        changed = HELPERS.replace("* SCALE", "* SCALE + 1")
    else:
        changed = HELPERS.replace("SCALE = 2", "SCALE = 5")
    write(os.path.join(d, "helpers.py"), changed)
    ref = os.path.join(d, "plain")
    os.makedirs(ref)
    shutil.copy(os.path.join(d, "helpers.py"), ref)
    expected = plain(d)
    r = run_chkpt([*FAST, "--resume", "s.py"], d)
    assert r.returncode == 0, r.stderr
    assert r.stdout == expected
    if edit == "function":
        assert ran(d) == ["stage2", "stage3"]
        assert "helpers.py:stage2, which ran before it, changed" \
            in resume_line(r.stderr)
    else:
        assert ran(d) == ["stage1", "stage2", "stage3"]
        assert "helpers.py:<module>" in resume_line(r.stderr)


CLASS_NEEDS_A_RESULT = HEAD + '''
FACTOR = 3
a = stage1()

class Sized:
    size = len(a)

b = stage2(a[:Sized.size])
note("stage3")
print("result", b, Sized.size, BUG)
'''


def test_definition_that_needs_an_earlier_result(tmp_path, python):
    """A class body that reads a global computed by an earlier statement
    cannot run again before that global is back: the boundary after it is
    not used; the one before it is."""
    d = str(tmp_path)
    r = crash_fix_resume(d, CLASS_NEEDS_A_RESULT,
                         CLASS_NEEDS_A_RESULT.replace(", BUG)", ")"))
    assert ran(d) == ["stage2", "stage3"]
    assert "does not run on its own (NameError" in resume_line(r.stderr)


SHARED_LINE = HEAD + '''
FACTOR = 3
a = stage1(); b = stage2(a)
note("stage3"); print("result", b / DIVISOR, len(a))
'''


def test_statements_sharing_a_line_resume_as_one(tmp_path, python):
    """Statements on one line are one unit (python gives the line one line
    event): the resumed run skips the whole line, and reruns a whole line
    that failed."""
    d = str(tmp_path)
    crash_fix_resume(d, SHARED_LINE, SHARED_LINE.replace("DIVISOR", "7"))
    assert ran(d) == ["stage3"]
