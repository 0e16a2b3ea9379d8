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
