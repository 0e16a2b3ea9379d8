"""Issue 18: tracked means captured; modules from the directories the script
added to sys.path; an export that opens without chkpt.

Every test runs real scripts under `python -m chkpt` in subprocesses, then
opens what they left in a fresh process, in another directory, after the
script was deleted.
"""
import os
import pickle
import shutil
import textwrap

import pytest

from conftest import chkpt_lines, run_chkpt, run_python


def write(path, text):
    path.write_text(textwrap.dedent(text).lstrip())
    return path


def move_store(tmp_path, workdir):
    """Deletes the script's directory, keeping only its store, moved."""
    away = tmp_path / "elsewhere"
    away.mkdir()
    shutil.move(str(workdir / "checkpoints"), str(away / "store"))
    shutil.rmtree(workdir)
    return away


# ---------------------------------------------------------------------------
# 1. ck.track(obj) captures functions and classes of the script

TRACKED_DEFS = """
    from chkpt import Checkpoint

    SCALE = 3

    def triple(x):
        return SCALE * x

    def untracked_helper(x):
        return x

    class Counter:
        def __init__(self, start):
            self.n = start

        def bump(self):
            self.n = triple(self.n)
            return self.n

    ck = Checkpoint.get_global_singleton()
    ck.track(triple)
    ck.track(Counter)
    ck.snapshot("defs")
    print("ok")
"""

LOAD_DEFS = """
    import chkpt
    d = chkpt.load("store")
    assert sorted(d) == ["Counter", "SCALE", "triple"], sorted(d)
    print(d["triple"](7), d["Counter"](2).bump(), d["Counter"].__name__)
    # the script added nothing to sys.path: nothing recorded
    assert "sys_path" not in chkpt.snapshots("store")[0].meta
"""


def test_tracked_function_and_class_load_after_script_deleted(tmp_path):
    work = tmp_path / "work"
    work.mkdir()
    write(work / "job.py", TRACKED_DEFS)
    # -z 0: every data object is salient, but the untracked function and
    # the module stay out (automatic salience never captures definitions)
    r = run_chkpt(["-f", "-1", "-z", "0", "job.py"], work)
    assert r.returncode == 0, r.stderr
    assert r.stdout == "ok\n"
    assert chkpt_lines(r.stderr) == []
    away = move_store(tmp_path, work)
    write(away / "load.py", LOAD_DEFS)
    r = run_python(["load.py"], away)
    assert r.returncode == 0, r.stderr
    assert r.stdout == "21 6 Counter\n"
    assert chkpt_lines(r.stderr) == []


UNPICKLABLE = """
    import importlib
    import threading
    from chkpt import Checkpoint

    ck = Checkpoint.get_global_singleton()
    thing = {what}
    ck.track(thing)
    total = 0
    for i in range(50):
        total += i
    ck.snapshot("end")
    print("ok")
"""


@pytest.mark.parametrize("what,kind", [("threading.Lock()", "_thread.lock"),
                                       ("importlib.import_module(\"json\")", "module")])
def test_tracked_unpicklable_warned_once(tmp_path, what, kind):
    write(tmp_path / "job.py", UNPICKLABLE.format(what=what))
    # -f 0: a snapshot at every line, the object fails in each of them
    r = run_chkpt(["-f", "0", "job.py"], tmp_path)
    assert r.returncode == 0, r.stderr
    assert r.stdout == "ok\n"
    lines = chkpt_lines(r.stderr)
    assert len(lines) == 1, r.stderr
    assert "'thing'" in lines[0] and kind in lines[0], lines
    assert "could not be saved" in lines[0]


# ---------------------------------------------------------------------------
# 2. modules from the directories the script added to sys.path

EXTRA_PATH_JOB = """
    import os
    import sys
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                    "lib"))
    import extramod
    from chkpt import Checkpoint

    w = extramod.Widget(5)
    Checkpoint.get_global_singleton().snapshot("w")
    print("ok")
"""

EXTRAMOD = """
    class Widget:
        def __init__(self, n):
            self.n = n

        def __repr__(self):
            return f"Widget({self.n})"
"""

LOAD_W = """
    import chkpt
    print(repr(chkpt.load("store")["w"]))
    print(chkpt.snapshots("store")[0].meta["sys_path"])
"""


def test_module_from_added_sys_path_entry(tmp_path):
    work = tmp_path / "work"
    lib = tmp_path / "lib"          # outside the work dir: it survives it
    (work).mkdir()
    lib.mkdir()
    write(work / "job.py", EXTRA_PATH_JOB.replace('"lib"', '"..", "lib"'))
    write(lib / "extramod.py", EXTRAMOD)
    r = run_chkpt(["-f", "-1", "-z", "0", "job.py"], work)
    assert r.returncode == 0, r.stderr
    assert r.stdout == "ok\n"
    away = move_store(tmp_path, work)
    write(away / "load.py", LOAD_W)

    # the directory is still there: found where the script found it
    r = run_python(["load.py"], away)
    assert r.returncode == 0, r.stderr
    assert r.stdout == f"Widget(5)\n{[str(lib)]}\n"
    assert chkpt_lines(r.stderr) == []
    r = run_chkpt(["show", "store"], away)
    assert r.returncode == 0, r.stderr
    assert "cannot load" not in r.stdout

    # gone: a stand-in, one warning, and show says why
    shutil.rmtree(lib)
    r = run_python(["load.py"], away)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("<chkpt.Unloadable 'w'"), r.stdout
    assert r.stdout.endswith(f"{[str(lib)]}\n"), r.stdout
    lines = chkpt_lines(r.stderr)
    assert len(lines) == 1 and "extramod" in lines[0], r.stderr
    r = run_chkpt(["show", "store"], away)
    assert r.returncode == 0, r.stderr
    assert ("module 'extramod' is not installed, and the directory the script "
            f"added to sys.path ({lib}) is gone") in r.stdout, r.stdout
