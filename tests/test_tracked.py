"""Issue 18: tracked means captured; modules from the directories the script
added to sys.path; an export that opens without chkpt.

Every test runs real scripts under `python -m chkpt` in subprocesses, then
opens what they left in a fresh process, in another directory, after the
script was deleted.
"""
import os
import shutil
import subprocess
import sys
import textwrap

import pytest

from conftest import REPO, chkpt_lines, run_chkpt, run_python


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


# ---------------------------------------------------------------------------
# 3. export --portable: opens with plain pickle.load, no chkpt, no script

EXPORT_JOB = """
    import enum
    from dataclasses import dataclass, field

    import numpy as np
    from chkpt import Checkpoint
    from helpers import Thing

    def triple(x):
        return 3 * x

    class Color(enum.Enum):
        RED = 1
        GREEN = 2

    @dataclass
    class State:
        items: list = field(default_factory=list)
        color: Color = Color.RED

        def total(self):
            return triple(sum(self.items))

    st = State([1, 2, 3], Color.GREEN)
    th = Thing("x")
    arr = np.arange(6.0)
    ck = Checkpoint.get_global_singleton()
    ck.track(triple)
    ck.snapshot("x")
    print("ok")
"""

HELPERS = """
    class Thing:
        def __init__(self, tag):
            self.tag = tag

        def shout(self):
            return self.tag.upper()
"""

OPEN_EXPORT = """
    import pickle
    import sys
    assert "chkpt" not in sys.modules
    with open("out.pkl", "rb") as f:
        d = pickle.load(f)
    try:
        import chkpt
    except ImportError:
        pass
    else:
        raise AssertionError("chkpt is importable here")
    print(sorted(d), d["st"].total(), d["st"].color.name, d["th"].shout(),
          d["triple"](5), d["arr"].sum())
"""


def make_export_store(tmp_path):
    work = tmp_path / "work"
    work.mkdir()
    write(work / "job.py", EXPORT_JOB)
    write(work / "helpers.py", HELPERS)
    r = run_chkpt(["-f", "-1", "-z", "0", "job.py"], work)
    assert r.returncode == 0, r.stderr
    assert r.stdout == "ok\n"
    return move_store(tmp_path, work)


def test_portable_export_opens_with_plain_python(tmp_path):
    away = make_export_store(tmp_path)
    r = run_chkpt(["export", "--portable", "store", "out.pkl"], away)
    assert r.returncode == 0, r.stderr
    assert r.stdout == "exported 4 variable(s) to out.pkl\n"
    assert chkpt_lines(r.stderr) == []
    reader = tmp_path / "reader"
    reader.mkdir()
    shutil.move(str(away / "out.pkl"), str(reader / "out.pkl"))
    write(reader / "open.py", OPEN_EXPORT)
    # plain python: chkpt not on PYTHONPATH (not installed in the venv)
    r = run_python(["open.py"], reader, env={"PYTHONPATH": None})
    assert r.returncode == 0, r.stderr
    assert r.stdout == "['arr', 'st', 'th', 'triple'] 18 GREEN X 15 15.0\n"


def other_python():
    """Another supported CPython minor version than the one under test: on
    PATH, or where the Makefile finds them (pyenv's versions)."""
    pyenv = os.environ.get("PYENV_ROOT", os.path.expanduser("~/.pyenv"))
    for minor in (11, 12, 13):
        if minor == sys.version_info[1]:
            continue
        found = [shutil.which(f"python3.{minor}")]
        versions = os.path.join(pyenv, "versions")
        if os.path.isdir(versions):
            found += [os.path.join(versions, v, "bin", f"python3.{minor}")
                      for v in sorted(os.listdir(versions))
                      if v.startswith(f"3.{minor}.")]
        for exe in filter(None, found):
            r = subprocess.run([exe, "-c", "import sys; print(sys.version_info[1])"],
                               capture_output=True, text=True)
            if r.returncode == 0 and r.stdout.strip() == str(minor):
                return exe, minor
    pytest.skip("no other Python 3.11-3.13 installed to open the export with")


def test_portable_export_refuses_another_python(tmp_path):
    # the functions it carries are bytecode of one version: another one
    # gets a clear error from pickle.load before any of them is built
    exe, minor = other_python()
    away = make_export_store(tmp_path)
    r = run_chkpt(["export", "--portable", "store", "out.pkl"], away)
    assert r.returncode == 0, r.stderr
    write(away / "open.py", OPEN_EXPORT)
    r = run_python(["open.py"], away, env={"PYTHONPATH": None}, python=exe)
    assert r.returncode == 1, (r.returncode, r.stderr)
    mine = "%d.%d" % sys.version_info[:2]
    assert r.stderr.splitlines()[-1] == (
        f"RuntimeError: this pickle was written by chkpt export --portable on "
        f"Python {mine}; its functions are bytecode of that version: open it "
        f"with Python {mine}, not 3.{minor}"), r.stderr


def test_plain_export_needs_the_script(tmp_path):
    # what --portable is for: the default export names __main__.State
    away = make_export_store(tmp_path)
    r = run_chkpt(["export", "store", "out.pkl"], away)
    assert r.returncode == 0, r.stderr
    write(away / "open.py", OPEN_EXPORT)
    r = run_python(["open.py"], away, env={"PYTHONPATH": None})
    assert r.returncode != 0
    assert "AttributeError" in r.stderr or "ModuleNotFoundError" in r.stderr


def test_portable_export_without_cloudpickle(tmp_path):
    away = make_export_store(tmp_path)
    fake = tmp_path / "fake"
    fake.mkdir()
    (fake / "cloudpickle.py").write_text("raise ImportError('not here')\n")
    chkpt_path = os.environ.get("CHKPT_TEST_PYTHONPATH", REPO)
    r = run_chkpt(["export", "--portable", "store", "out.pkl"], away,
                  env={"PYTHONPATH": os.pathsep.join([chkpt_path, str(fake)])})
    assert r.returncode == 1
    assert r.stdout == ""
    assert chkpt_lines(r.stderr) == [
        "chkpt: error: export --portable needs the cloudpickle package "
        "(pip install cloudpickle)"], r.stderr
    assert r.stderr.count("\n") == 1
    assert not (away / "out.pkl").exists()
    assert not (away / "out.pkl.tmp").exists()


def test_portable_is_an_export_option_only(tmp_path):
    for args in (["ls", "--portable"], ["--portable", "job.py"]):
        r = run_chkpt(args, tmp_path)
        assert r.returncode == 2
        assert chkpt_lines(r.stderr) == [
            "chkpt: error: unrecognized arguments: --portable"], r.stderr
