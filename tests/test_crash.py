"""Crash snapshots (issue 16): an uncaught exception gets a 'crash' snapshot
before python prints its traceback; `chkpt.load(crash)` gives the failing
frame; `python -m chkpt debug` opens pdb post-mortem on the saved frames in
a fresh process, elsewhere, after the script is gone. Real scripts in
subprocesses; pdb driven through stdin."""
import json
import os
import shutil
import sys
import textwrap

import pytest

from conftest import run_chkpt, run_python

SCRIPT = '''\
import threading
import numpy as np

lock = threading.Lock()
big = np.arange(12.0)
total = 0
label = "run-7"


class Acc:
    def __init__(self, n):
        self.n = n

    def __repr__(self):
        return f"Acc({self.n})"


def inner(x, data):
    y = x * 2
    gen = (i for i in range(3))
    local_lock = threading.Lock()
    return data[y] / 0


def outer(n):
    acc = Acc(n)
    items = [n, n + 1, n + 2]
    return inner(n, items)


for i in range(4):
    total += i
print("before the crash", flush=True)
outer(1)
'''


def write(path, text):
    path.write_text(textwrap.dedent(text))
    return path


def load_in_fresh_process(tmp_path, code):
    """Runs code in a fresh python in an empty directory; returns stdout."""
    away = tmp_path / "away"
    away.mkdir(exist_ok=True)
    p = run_python(["-c", textwrap.dedent(code)], away)
    assert p.returncode == 0, p.stderr
    return p.stdout


def crash_run(tmp_path, script=SCRIPT, name="job.py", args=()):
    work = tmp_path / "work"
    work.mkdir(exist_ok=True)
    write(work / name, script)
    store = tmp_path / "store"
    under = run_chkpt(["-o", store, name, *args], work)
    plain = run_python([name, *args], work)
    return work, store, under, plain


def test_output_exactly_as_python_and_snapshot_written(tmp_path):
    work, store, under, plain = crash_run(tmp_path)
    assert under.returncode == plain.returncode == 1
    assert under.stdout == plain.stdout == "before the crash\n"
    # the whole stderr: the traceback as python prints it, nothing else
    assert under.stderr == plain.stderr
    assert "ZeroDivisionError: division by zero" in under.stderr
    snaps = sorted((store / "snapshots").glob("*.ckpt"))
    assert len(snaps) == 1


def test_crash_meta_traceback_and_every_local(tmp_path):
    work, store, under, _ = crash_run(tmp_path)
    out = load_in_fresh_process(tmp_path, f'''
        import json, chkpt
        s = chkpt.snapshots({str(store)!r})[-1]
        m = s.meta
        print(json.dumps({{"kind": s.kind, "line": s.line,
                          "function": m["function"], "exception": m["exception"],
                          "frame": m["frame"], "traceback": m["traceback"],
                          "text": m["exception_text"],
                          "vars": [[v["name"], v.get("frame"), v.get("globals"),
                                    v.get("standin") is not None]
                                   for v in m["variables"]]}}))
    ''')
    d = json.loads(out)
    assert d["kind"] == "crash"
    assert d["exception"] == "ZeroDivisionError: division by zero"
    assert d["function"] == "inner" and d["line"] == 22
    tb = d["traceback"]
    assert [(f["name"], f["lineno"], f["firstlineno"]) for f in tb] == [
        ("<module>", 34, 1), ("outer", 28, 25), ("inner", 22, 18)]
    assert all(f["filename"] == str(work / "job.py") for f in tb)
    assert d["frame"] == 2
    assert d["text"].startswith("Traceback (most recent call last):")
    assert d["text"].endswith("ZeroDivisionError: division by zero\n")
    vars_ = {(n, f, g): s for n, f, g, s in d["vars"]}
    # every local of every frame, no salience filter: small ints included
    for key in [("x", 2, None), ("y", 2, None), ("data", 2, None),
                ("n", 1, None), ("acc", 1, None), ("items", 1, None),
                ("total", None, "__main__"), ("label", None, "__main__"),
                ("big", None, "__main__"), ("i", None, "__main__")]:
        assert key in vars_, key
    # what cannot be pickled is a stand-in, the snapshot is not lost
    assert vars_[("gen", 2, None)] and vars_[("local_lock", 2, None)]
    assert vars_[("lock", None, "__main__")]
    assert not vars_[("x", 2, None)]


def test_load_gives_failing_frame_over_globals_and_other_frames(tmp_path):
    work, store, _, _ = crash_run(tmp_path)
    shutil.rmtree(work)             # the script is gone
    out = load_in_fresh_process(tmp_path, f'''
        import chkpt
        s = chkpt.snapshots({str(store)!r})[-1]
        d = chkpt.load(s)
        print(sorted(d))
        print(d["x"], d["y"], d["data"], d["total"], d["label"], d["big"].sum())
        print(type(d["gen"]).__name__, d["gen"].qualname, "generator" in d["gen"].error)
        f1 = chkpt.load(s, frame=1)
        print(sorted(f1), f1["acc"], type(f1["acc"]).__qualname__, f1["items"])
        f0 = chkpt.load(s, frame=0)
        print(sorted(f0))
        try:
            chkpt.load(s, frame=5)
        except ValueError as e:
            print("ValueError", "no saved variables" in str(e))
    ''').splitlines()
    assert out[0] == str(sorted(["lock", "big", "total", "label", "i", "x", "data",
                                 "y", "gen", "local_lock"]))
    assert out[1] == "1 2 [1, 2, 3] 6 run-7 66.0"
    assert out[2] == "Unloadable generator True"
    assert out[3] == (str(sorted(["lock", "big", "total", "label", "i", "n", "acc",
                                  "items"])) + " Acc(1) Acc [1, 2, 3]")
    assert out[4] == str(sorted(["lock", "big", "total", "label", "i"]))
    assert out[5] == "ValueError True"


def test_standin_keeps_type_and_repr_and_bad_objects_never_lose_it(tmp_path):
    script = '''\
    class Hostile:
        def __reduce__(self):
            raise RuntimeError("no pickling me")
        def __repr__(self):
            raise RuntimeError("no repr either")

    class Nice:
        def __reduce__(self):
            raise RuntimeError("refuses")
        def __repr__(self):
            return "Nice<42>"

    def f():
        h = Hostile()
        n = Nice()
        ok = [1, 2, 3]
        raise KeyError("boom")

    f()
    '''
    work, store, under, plain = crash_run(tmp_path, textwrap.dedent(script))
    assert under.stderr == plain.stderr and under.returncode == plain.returncode == 1
    out = load_in_fresh_process(tmp_path, f'''
        import chkpt
        d = chkpt.load({str(store)!r})
        print(d["ok"])
        print(d["h"].module, d["h"].qualname)
        print(d["n"].qualname, "Nice<42>" in d["n"].error, "refuses" in d["n"].error)
    ''').splitlines()
    assert out == ["[1, 2, 3]", "__main__ Hostile", "Nice True True"]


def test_no_snapshot_for_system_exit_or_success(tmp_path):
    for body, status in (("import sys\nx = 5\nsys.exit(3)\n", 3), ("x = 5\n", 0)):
        work, store, under, plain = crash_run(tmp_path, body)
        assert under.returncode == plain.returncode == status
        assert under.stderr == plain.stderr
        assert not list((store / "snapshots").glob("*.ckpt")) if (
            store / "snapshots").exists() else True


def test_exception_in_another_thread_takes_no_snapshot(tmp_path):
    script = '''\
    import threading
    def work():
        secret = 41
        raise ValueError("in a thread")
    t = threading.Thread(target=work)
    t.start(); t.join()
    print("main goes on")
    '''
    work, store, under, plain = crash_run(tmp_path, textwrap.dedent(script))
    assert under.returncode == plain.returncode == 0
    assert under.stdout == plain.stdout == "main goes on\n"
    assert under.stderr == plain.stderr
    assert "ValueError: in a thread" in under.stderr
    snaps = list((store / "snapshots").glob("*.ckpt")) if (store / "snapshots").exists() else []
    assert snaps == []


def test_crash_in_sibling_module_and_module_run(tmp_path):
    helper = '''\
    FACTOR = 3
    def scale(values):
        k = FACTOR * 2
        return [v / (k - 6) for v in values]
    '''
    script = '''\
    import helpers
    data = [1.0, 2.0]
    helpers.scale(data)
    '''
    work = tmp_path / "work"
    work.mkdir()
    write(work / "helpers.py", helper)
    work, store, under, plain = crash_run(tmp_path, textwrap.dedent(script))
    assert under.stderr == plain.stderr
    out = load_in_fresh_process(tmp_path, f'''
        import chkpt
        s = chkpt.snapshots({str(store)!r})[-1]
        print([f["name"] for f in s.meta["traceback"] if f.get("saved")])
        d = chkpt.load(s)
        print(d["k"], d["FACTOR"], "data" in d)
    ''').splitlines()
    assert out[0].startswith("['<module>', 'scale'")
    # the failing frame's module (helpers) gives the globals
    assert out[1] == "6 3 False"


PDB_SESSION = "where\np x, y, data\nup\np n, acc, items\nll\nup\np total, label\nlist\ndown\ndown\nll\npp sorted(locals())\np local_lock\nq\n"


def run_debug(tmp_path, store, commands, python=None):
    away = tmp_path / "elsewhere"
    away.mkdir(exist_ok=True)
    return run_chkpt(["debug", store], away, input=commands, python=python)


def test_debug_pdb_on_saved_frames_after_the_script_is_gone(tmp_path):
    work, store, _, _ = crash_run(tmp_path)
    script = work / "job.py"
    shutil.rmtree(work)
    # moved to another directory: the store, too
    moved = tmp_path / "moved-store"
    shutil.move(str(store), moved)
    p = run_debug(tmp_path, moved, PDB_SESSION)
    assert p.returncode == 0, p.stderr
    out = p.stdout
    # where: exactly the script's three frames, innermost current
    where = out.split("(Pdb) ")[1]
    assert where.splitlines() == [
        f"  {script}(34)<module>()", "-> outer(1)",
        f"  {script}(28)outer()", "-> return inner(n, items)",
        f"> {script}(22)inner()", "-> return data[y] / 0"]
    assert "(1, 2, [1, 2, 3])" in out
    assert "(1, Acc(1), [1, 2, 3])" in out
    assert "(6, 'run-7')" in out
    # ll of outer: its whole def from the saved source
    assert " 25  \tdef outer(n):" in out and " 28  ->\t    return inner(n, items)" in out
    # list at module level around line 34
    assert " 33  \tprint(\"before the crash\", flush=True)" in out
    assert " 34  ->\touter(1)" in out
    # ll of inner, its locals (no helper names leak in)
    assert " 18  \tdef inner(x, data):" in out
    assert "['data', 'gen', 'local_lock', 'x', 'y']" in out
    assert "chkpt.Unloadable 'local_lock'" in out
    assert "source code not available" not in out
    assert "***" not in out, out


def test_debug_uses_saved_source_after_the_script_changed(tmp_path):
    work, store, _, _ = crash_run(tmp_path)
    (work / "job.py").write_text("# rewritten\n" * 40)
    p = run_debug(tmp_path, store, "ll\nq\n")
    assert p.returncode == 0, p.stderr
    assert "-> return data[y] / 0" in p.stdout
    assert " 22  ->\t    return data[y] / 0" in p.stdout
    assert "rewritten" not in p.stdout


def test_debug_refuses_a_snapshot_without_traceback(tmp_path):
    work = tmp_path / "work"
    work.mkdir()
    write(work / "ok.py", '''\
    from chkpt import Checkpoint
    x = 1
    Checkpoint.get_global_singleton().snapshot("m")
    ''')
    store = tmp_path / "store"
    # -z 0: x is saved (a snapshot of nothing salient is not written)
    assert run_chkpt(["-z", "0", "-o", store, "ok.py"], work).returncode == 0
    p = run_debug(tmp_path, store, "q\n")
    assert p.returncode == 1
    assert p.stderr.startswith("chkpt: error: ")
    assert "debug needs a crash snapshot" in p.stderr
    assert len(p.stderr.splitlines()) == 1


def test_ls_marks_and_show_prints_traceback(tmp_path):
    work, store, _, plain = crash_run(tmp_path)
    ls = run_chkpt(["ls", store], tmp_path)
    assert ls.returncode == 0
    row = ls.stdout.splitlines()[1]
    assert " crash " in row and "! ZeroDivisionError: division by zero" in row
    show = run_chkpt(["show", store], tmp_path)
    assert show.returncode == 0
    # the traceback python printed, as it printed it
    assert plain.stderr in show.stdout
    assert "x (inner #2)" in show.stdout and "total (__main__)" in show.stdout
    assert "saved as a stand-in: could not be pickled" in show.stdout


def test_snapshot_is_written_before_python_prints_the_traceback(tmp_path):
    # sys.excepthook is what prints it: the snapshot exists by then
    script = '''\
    import os, sys
    def hook(t, v, tb):
        snaps = os.path.join(sys.argv[1], "snapshots")
        found = os.path.isdir(snaps) and any(n.endswith(".ckpt") for n in os.listdir(snaps))
        print("snapshot before the traceback:", found, flush=True)
        sys.__excepthook__(t, v, tb)
    sys.excepthook = hook
    x = 1
    raise ValueError(x)
    '''
    work, store, under, plain = crash_run(tmp_path, textwrap.dedent(script),
                                          args=(str(tmp_path / "store"),))
    assert under.stdout == "snapshot before the traceback: True\n"
    assert under.stderr == plain.stderr and under.returncode == 1
