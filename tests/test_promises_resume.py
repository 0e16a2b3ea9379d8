"""README promises of --resume (Edit and resume) that no test caught
breaking (issue 25, point 1): what does not invalidate a boundary snapshot
(the files the script reads, the environment, installed modules), another
Python minor version's snapshot not used, a lambda global counted as not
saved, a script naming a tracing or debugging API run unsplit (split under
--resume), and -z -1 taking no boundary snapshots.

Real scripts in subprocesses. Their stages sleep (the machine running the
suite has other work) and note in ran.log that they ran, so a test sees
which stages a run skipped. -f 300 lets a boundary snapshot come 0.3 s
after the last one instead of 2 s (README: "two seconds (or -f ms, if
less)"), so stages of 0.8 s are worth one; with the default -z nothing
here is big enough for the timer's own snapshots.
"""
import os
import sys
from pathlib import Path

import pytest

import chkpt
from conftest import REPO, chkpt_env, chkpt_lines, run_chkpt, run_python

STAGE_S = 0.8     # worth a boundary: over 0.3 s and 10x a clone's cost
FAST = ["-f", "300"]

HEAD = f'''\
import os, sys, time

def note(what):
    with open("ran.log", "a") as f:
        f.write(what + "\\n")

def stage1():
    note("stage1")
    time.sleep({STAGE_S})
    return [i * i for i in range(1000)]

def stage2(xs):
    note("stage2")
    time.sleep({STAGE_S})
    return sum(xs)
'''


def write(path, text):
    Path(path).write_text(text)


def ran(d):
    """The stages the runs so far went through (and forget them)."""
    p = Path(d) / "ran.log"
    if not p.exists():
        return []
    lines = p.read_text().split()
    p.unlink()
    return lines


def resume_line(stderr):
    lines = [l for l in chkpt_lines(stderr) if "resum" in l]
    assert len(lines) == 1, stderr
    return lines[0]


def boundaries(store):
    """The boundary snapshots in STORE (they carry the next statement)."""
    if not (Path(store) / "snapshots").is_dir():
        return []
    return [s for s in chkpt.snapshots(str(store)) if "statement" in s.meta]


# ---- what does not invalidate a snapshot ----

EXTLIB = '''\
def tag():
    return "%s"
'''

READS = HEAD + '''
import extlib

def inputs():
    with open("data.txt") as f:
        return [f.read().strip(), os.environ["KNOB"], extlib.tag()]

def stage1_reads():
    note("stage1")
    time.sleep(%s)
    return inputs()

a = stage1_reads()
b = stage2(range(10))
note("stage3")
print(a, inputs(), b, BUG)
''' % STAGE_S


@pytest.mark.parametrize("change", ["data file", "environment",
                                    "installed module"])
def test_edits_outside_the_script_keep_the_snapshot_valid(tmp_path, change):
    """Stage 1 reads a data file, an environment variable and a function
    of a module outside the script's directory (an installed one): after
    one of them changed (and the script's last line was fixed) --resume
    still skips the stages; the resumed run has stage 1's saved values and
    reads the new ones where it runs."""
    d, lib = tmp_path / "job", tmp_path / "site"
    d.mkdir()
    lib.mkdir()
    write(d / "s.py", READS)
    write(d / "data.txt", "v1\n")
    write(lib / "extlib.py", EXTLIB % "m1")
    path = os.pathsep.join([chkpt_env()["PYTHONPATH"], str(lib)])
    env = {"PYTHONPATH": path, "KNOB": "k1"}
    r = run_chkpt([*FAST, "s.py"], d, env=env)
    assert r.returncode == 1 and "NameError" in r.stderr, r.stderr
    assert ran(d) == ["stage1", "stage2", "stage3"]
    assert boundaries(d / "checkpoints")
    write(d / "s.py", READS.replace(", BUG)", ")"))
    new = ["v1", "k1", "m1"]
    if change == "data file":
        write(d / "data.txt", "v2\n")
        new[0] = "v2"
    elif change == "environment":
        env["KNOB"] = new[1] = "k2"
    else:
        write(lib / "extlib.py", EXTLIB % "m2" + "\nEXTRA = 1\n")
        new[2] = "m2"
    r = run_chkpt([*FAST, "--resume", "s.py"], d, env=env)
    assert r.returncode == 0, r.stderr
    assert ran(d) == ["stage3"], r.stderr
    assert "statements 1-" in resume_line(r.stderr)
    assert r.stdout == f"['v1', 'k1', 'm1'] {new} 45\n"


# ---- another minor version's snapshot ----

def other_python():
    """Another supported Python (its venv in $CHKPT_TEST_VENVS, default
    .venv) with chkpt built for it in the checkout: 3.11 unless that is
    the Python under test."""
    venvs = Path(os.environ.get("CHKPT_TEST_VENVS") or Path(REPO) / ".venv")
    ours = "%d.%d" % sys.version_info[:2]
    for tag in ("3.11", "3.12", "3.13"):
        exe = venvs / tag / "bin" / "python"
        if tag != ours and exe.exists() and list(
                (Path(REPO) / "chkpt").glob(
                    f"_chkpt.cpython-{tag.replace('.', '')}-*.so")):
            return tag, str(exe)
    pytest.skip(f"no other supported Python with a built chkpt in {venvs}/ "
                "(make test creates them; set CHKPT_TEST_VENVS)")


THREE = HEAD + '''
a = stage1()
b = stage2(a)
note("stage3")
print("result", b, len(a), BUG)
'''


def test_a_boundary_snapshot_of_another_minor_version_is_not_used(tmp_path):
    """Written by another Python minor version, the boundary snapshots are
    not used: the resumed run under this one runs from the start and says
    why; the writer's version resumes from them (they were valid)."""
    tag, other = other_python()
    d = str(tmp_path)
    write(tmp_path / "s.py", THREE)
    r = run_chkpt([*FAST, "s.py"], d, python=other)
    assert r.returncode == 1 and "NameError" in r.stderr, r.stderr
    assert ran(d) == ["stage1", "stage2", "stage3"]
    theirs = boundaries(tmp_path / "checkpoints")
    assert theirs and all(s.meta["python"].startswith(tag + ".") for s in theirs)
    write(tmp_path / "s.py", THREE.replace(", BUG)", ")"))
    expected = run_python(["-c", "print('result', sum(i * i for i in "
                           "range(1000)), 1000)"], d).stdout
    r = run_chkpt([*FAST, "--resume", "s.py"], d)
    assert r.returncode == 0 and r.stdout == expected, r.stderr
    assert ran(d) == ["stage1", "stage2", "stage3"]
    line = resume_line(r.stderr)
    assert "from the start" in line and f"Python {tag}." in line, line
    # the control: the version that wrote them resumes from them
    r = run_chkpt([*FAST, "--resume", "s.py"], d, python=other)
    assert r.returncode == 0 and r.stdout == expected, r.stderr
    assert ran(d) == ["stage3"], r.stderr


# ---- a lambda global ----

LAMBDA = HEAD + '''
FACTOR = 3
a = stage1()
scale = lambda v: v * FACTOR
b = stage2(a)
note("stage3")
print("result", scale(b), BUG)
'''


def test_a_lambda_global_counts_as_not_saved(tmp_path):
    """`scale = lambda ...` after stage 1, used by the last statement: the
    boundary after stage 2 holds no `scale`, so the resumed run takes the
    one before the lambda (after stage 1) and reruns stage 2, saying why;
    it never runs on without the lambda."""
    d = str(tmp_path)
    write(tmp_path / "s.py", LAMBDA)
    r = run_chkpt([*FAST, "s.py"], d)
    assert r.returncode == 1 and "NameError" in r.stderr, r.stderr
    assert ran(d) == ["stage1", "stage2", "stage3"]
    after_stage2 = [s for s in boundaries(tmp_path / "checkpoints")
                    if "b" in s.variables]
    assert after_stage2, r.stderr       # there was one to be rejected
    write(tmp_path / "s.py", LAMBDA.replace(", BUG)", ")"))
    r = run_chkpt([*FAST, "--resume", "s.py"], d)
    assert r.returncode == 0, r.stderr
    assert r.stdout == "result %d\n" % (3 * sum(i * i for i in range(1000)))
    assert ran(d) == ["stage2", "stage3"], r.stderr
    line = resume_line(r.stderr)
    assert "scale" in line and "could not be saved" in line, line


# ---- a script that traces or debugs itself ----

TRACING = {
    "none": "",
    "sys.settrace": "def never():\n    sys.settrace(None)\n",
    "breakpoint": "def never():\n    breakpoint()\n",
    "import pdb": "import pdb\n",
}


@pytest.mark.parametrize("names", list(TRACING))
def test_a_script_naming_a_tracer_runs_unsplit_but_resumes_split(
        tmp_path, names):
    """A script whose source names sys.settrace or breakpoint (never
    called), or imports pdb, takes no boundary snapshot in a plain run
    (it runs as one module); under --resume it is split all the same: it
    takes boundary snapshots, and a later --resume skips its stages. The
    script without such a name ("none") takes them in a plain run too."""
    d = str(tmp_path)
    script = HEAD + TRACING[names] + '''
a = stage1()
b = stage2(a)
note("stage3")
print("result", b, len(a))
'''
    write(tmp_path / "s.py", script)
    r = run_chkpt([*FAST, "-o", "plain", "s.py"], d)
    assert r.returncode == 0, r.stderr
    expected = r.stdout
    assert ran(d) == ["stage1", "stage2", "stage3"]
    if names == "none":
        assert boundaries(tmp_path / "plain"), r.stderr
    else:
        assert boundaries(tmp_path / "plain") == [], r.stderr
    # --resume with nothing to resume from: from the start, but split
    r = run_chkpt([*FAST, "--resume", "-o", "res", "s.py"], d)
    assert r.returncode == 0 and r.stdout == expected, r.stderr
    assert ran(d) == ["stage1", "stage2", "stage3"]
    assert "from the start" in resume_line(r.stderr)
    assert boundaries(tmp_path / "res"), r.stderr
    write(tmp_path / "s.py", script.replace('"result", ', '"result:", '))
    r = run_chkpt([*FAST, "--resume", "-o", "res", "s.py"], d)
    assert r.returncode == 0, r.stderr
    assert r.stdout == expected.replace("result", "result:")
    assert ran(d) == ["stage3"], r.stderr


# ---- -z -1 ----

def test_z_minus_1_takes_no_boundary_snapshots(tmp_path):
    """-z -1 (tracked objects only) takes no boundary snapshot, which would
    hold every global: a later --resume runs from the start. -z 0 on the
    same script takes them (the control)."""
    d = str(tmp_path)
    write(tmp_path / "s.py", THREE)
    r = run_chkpt([*FAST, "-z", "0", "-o", "z0", "s.py"], d)
    assert r.returncode == 1 and "NameError" in r.stderr, r.stderr
    assert ran(d) == ["stage1", "stage2", "stage3"]
    assert boundaries(tmp_path / "z0")
    r = run_chkpt([*FAST, "-z", "-1", "-o", "zm1", "s.py"], d)
    assert r.returncode == 1 and "NameError" in r.stderr, r.stderr
    assert ran(d) == ["stage1", "stage2", "stage3"]
    assert boundaries(tmp_path / "zm1") == []
    write(tmp_path / "s.py", THREE.replace(", BUG)", ")"))
    r = run_chkpt([*FAST, "--resume", "-o", "zm1", "s.py"], d)
    assert r.returncode == 0, r.stderr
    assert ran(d) == ["stage1", "stage2", "stage3"]
    assert "from the start" in resume_line(r.stderr)
