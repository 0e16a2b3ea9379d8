"""Issue 9, "Open any snapshot anywhere": the script's own classes,
functions, enums, namedtuples and dataclasses (and those of the modules next
to it) resolve wherever a snapshot is opened, as they were when it was taken.
"""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from snapshot_util import (ROOT, chkpt, chkpt_lines, chunk_files, env_with,
                           manifests, py, run, write)

SCRIPT = '''
import enum
import sys
from collections import namedtuple
from dataclasses import dataclass, field
from typing import NamedTuple, TypeVar

from chkpt import Checkpoint
from helpers import Thing, SCALE
import extmod

VERSION = "v1"
T = TypeVar("T")
Vector = list[float]


class Point:
    def __init__(self, x, y):
        self.x, self.y = x, y

    def tag(self):
        return VERSION

    def __repr__(self):
        return f"Point({self.x}, {self.y})"


def double(x):
    return 2 * x


class Color(enum.Enum):
    RED = 1
    GREEN = 2


Shape = enum.Enum("Shape", "SQUARE CIRCLE")
Pair = namedtuple("Pair", "a b")


class Span(NamedTuple):
    lo: int
    hi: int


@dataclass
class State:
    items: list = field(default_factory=list)
    where: Point = None
    weights: Vector = None


print("TOP-LEVEL WORK", flush=True)
with open("side_effect.txt", "a") as f:
    f.write("ran\\n")
del f

p = Point(1, 2)
c = Color.GREEN
sh = Shape.CIRCLE
pr = Pair(3, 4)
sp = Span(1, 9)
st = State([1, 2], Point(5, 6), [0.5])
th = Thing("x")
w = extmod.Widget(7)
funcs = {"double": double}
numbers = list(range(10))
ck = Checkpoint.get_global_singleton()
info = ck.snapshot("first")
print("SNAP", info.path, flush=True)

if __name__ == "__main__":
    print("MAIN GUARD", flush=True)
'''

HELPERS = '''
SCALE = 10


class Thing:
    def __init__(self, v):
        self.v = v

    def scaled(self):
        return SCALE

    def __repr__(self):
        return f"Thing({self.v!r})"
'''

EXTMOD = '''
class Widget:
    def __init__(self, n):
        self.n = n
'''

CHECK = '''
import copy, pickle, sys
import chkpt
d = chkpt.load(sys.argv[1])
p, c, sh, pr, sp, st, th, w = (d[k] for k in "p c sh pr sp st th w".split())
# data, not definitions: T (TypeVar) and Vector (list[float]) are left out
assert sorted(d) == sorted("SCALE VERSION p c sh pr sp st th w funcs numbers".split()), sorted(d)
assert (p.x, p.y, p.tag()) == (1, 2, "v1"), p
assert type(p).__qualname__ == "Point"
assert type(c).__name__ == "Color" and c.name == "GREEN" and c.value == 2
assert c is type(c).GREEN and type(c)(2) is c
assert type(sh).__name__ == "Shape" and sh.name == "CIRCLE"
assert pr.a == 3 and pr._fields == ("a", "b") and type(pr).__name__ == "Pair"
assert sp.hi == 9 and sp._fields == ("lo", "hi")
assert st.items == [1, 2] and st.where.x == 5 and st.weights == [0.5]
assert type(st.where) is type(p)
assert th.v == "x" and th.scaled() == 10 and type(th).__name__ == "Thing"
assert w.n == 7
assert d["funcs"]["double"](4) == 8
assert d["numbers"] == list(range(10))
# rebuilt classes stay picklable and copyable: the copy has the same type
# and the same state (its pickle has the same bytes; the classes here
# compare by identity)
def same(a, b):
    return type(a) is type(b) and pickle.dumps(a) == pickle.dumps(b)
for obj in (p, c, pr, st, th):
    assert same(pickle.loads(pickle.dumps(obj)), obj), obj
    assert same(copy.deepcopy(obj), obj), obj
assert pickle.loads(pickle.dumps(c)) is c
print("CHECK OK")
'''


@pytest.fixture
def project(tmp_path):
    """The script, its sibling module, a module from an extra PYTHONPATH dir;
    run once under chkpt (-f -1 -z 0) with one manual snapshot."""
    proj = tmp_path / "proj"
    ext = tmp_path / "ext"
    write(proj / "script.py", SCRIPT)
    write(proj / "helpers.py", HELPERS)
    write(ext / "extmod.py", EXTMOD)
    r = chkpt(["-f", "-1", "-z", "0", "script.py"], proj, extra_paths=[ext], check=0)
    assert "TOP-LEVEL WORK" in r.stdout and "MAIN GUARD" in r.stdout
    assert chkpt_lines(r.stderr) == [], r.stderr
    (proj / "side_effect.txt").unlink()
    other = tmp_path / "elsewhere"
    other.mkdir()
    return {"proj": proj, "ext": ext, "store": proj / "checkpoints", "other": other,
            "tmp": tmp_path}


def check_elsewhere(project, store=None, extra_paths=None):
    other = project["other"]
    write(other / "check.py", CHECK)
    r = run(["check.py", str(store or project["store"])], other,
            extra_paths=[project["ext"]] if extra_paths is None else extra_paths,
            check=0)
    assert "CHECK OK" in r.stdout
    assert "TOP-LEVEL WORK" not in r.stdout and "MAIN GUARD" not in r.stdout
    assert not (other / "side_effect.txt").exists()
    assert not (project["proj"] / "side_effect.txt").exists()
    return r


def test_load_in_another_process_and_directory(project):
    r = check_elsewhere(project)
    assert chkpt_lines(r.stderr) == [], r.stderr


def test_load_gets_the_definitions_as_they_were(project):
    script = project["proj"] / "script.py"
    text = script.read_text()
    text = text.replace('VERSION = "v1"', 'VERSION = "v2"')
    text = text.replace("    GREEN = 2", "    GREEN = 2\n    BLUE = 3")
    text = text.replace("return VERSION", "return 'edited ' + VERSION")
    script.write_text(text)
    (project["proj"] / "helpers.py").write_text("SCALE = 99\n")   # Thing is gone
    check_elsewhere(project)
    r = run(["-c", "import sys, chkpt; d = chkpt.load(sys.argv[1]); "
             "assert not hasattr(type(d['c']), 'BLUE'); print(d['p'].tag(), d['th'].scaled())",
             str(project["store"])], project["other"], extra_paths=[project["ext"]], check=0)
    assert r.stdout.split() == ["v1", "10"]


def test_load_after_the_script_and_its_sibling_are_deleted(project):
    (project["proj"] / "script.py").unlink()
    (project["proj"] / "helpers.py").unlink()
    check_elsewhere(project)


def test_relocated_store(project):
    moved = project["tmp"] / "archive" / "copied-store"
    shutil.copytree(project["store"], moved)
    shutil.rmtree(project["store"])
    (project["proj"] / "script.py").unlink()
    check_elsewhere(project, store=moved)
    # a single manifest works too
    check_elsewhere(project, store=manifests(moved)[-1])


def test_missing_module_gives_a_stand_in_and_one_warning(project):
    shutil.rmtree(project["ext"])
    code = '''
import sys, chkpt
d = chkpt.load(sys.argv[1])
w = d["w"]
assert isinstance(w, chkpt.Unloadable), w
assert (w.name, w.module, w.qualname) == ("w", "extmod", "Widget"), (w.module, w.qualname)
assert "extmod" in w.error
print("REPR", repr(w))
assert d["p"].x == 1 and d["th"].v == "x" and d["c"].name == "GREEN"
try:
    chkpt.load(sys.argv[1], strict=True)
except chkpt.SnapshotError as e:
    print("STRICT", e)
    assert isinstance(e.__cause__, ImportError), repr(e.__cause__)
else:
    raise AssertionError("strict load did not raise")
'''
    r = run(["-c", code, str(project["store"])], project["other"], extra_paths=[],
            check=0)
    warnings = chkpt_lines(r.stderr)
    assert len(warnings) == 1, r.stderr
    assert "'w'" in warnings[0] and "extmod" in warnings[0]
    rep = [l for l in r.stdout.splitlines() if l.startswith("REPR")][0]
    assert "extmod.Widget" in rep and "No module named 'extmod'" in rep
    strict = [l for l in r.stdout.splitlines() if l.startswith("STRICT")][0]
    assert "'w'" in strict and "extmod" in strict
    # the script's own classes still come back in the same process
    s = chkpt(["show", project["store"]], project["other"], extra_paths=[], check=0)
    wline = [l for l in s.stdout.splitlines() if l.startswith("w ")][0]
    assert "extmod.Widget" in wline and "cannot load" in wline and "extmod" in wline
    pline = [l for l in s.stdout.splitlines() if l.startswith("p ")][0]
    assert "cannot load" not in pline


def test_a_failing_definition_does_not_stop_the_others(project):
    """The script imported a module that is gone when loading: only the
    definitions that need it are missing."""
    shutil.rmtree(project["ext"])
    r = run(["-c", "import sys, chkpt; d = chkpt.load(sys.argv[1], names=['st', 'c']);"
             "print(d['st'].where, d['c'])", str(project["store"])], project["other"],
            extra_paths=[], check=0)
    assert r.stdout.split() == ["Point(5,", "6)", "Color.GREEN"]
    assert chkpt_lines(r.stderr) == []


INSCRIPT = '''
import enum
import chkpt
from chkpt import Checkpoint


class Point:
    def __init__(self, x):
        self.x = x


class Color(enum.Enum):
    RED = 1


p = Point(3)
c = Color.RED
ck = Checkpoint.get_global_singleton()
info = ck.snapshot()
back = chkpt.load(info)
assert isinstance(back["p"], Point) and type(back["p"]) is Point
assert back["p"] is not p and back["p"].x == 3
assert back["c"] is Color.RED
# the newest snapshot of the store, by directory
assert chkpt.load(ck.output_dir)["c"] is Color.RED


def inner():
    local_point = Point(9)
    ck.snapshot("in-function")
    return chkpt.load(chkpt.snapshots()[-1])


got = inner()
assert type(got["local_point"]) is Point and got["local_point"].x == 9
assert got["c"] is Color.RED          # globals come with the locals
print("INSCRIPT OK")
'''


def test_in_script_load_gives_live_classes(tmp_path):
    write(tmp_path / "live.py", INSCRIPT)
    r = chkpt(["-f", "-1", "-z", "0", "live.py"], tmp_path, check=0)
    assert "INSCRIPT OK" in r.stdout, r.stderr


OTHER_SCRIPT = '''
import sys
import chkpt


class Point:                     # same name, different class
    def tag(self):
        return "impostor"


d = chkpt.load(sys.argv[1])
assert type(d["p"]) is not Point
assert d["p"].tag() == "v1", d["p"].tag()
print("OTHER OK")
'''


def test_a_different_script_gets_the_snapshots_own_classes(project):
    write(project["other"] / "other.py", OTHER_SCRIPT)
    r = chkpt(["-f", "-1", "other.py", project["store"]], project["other"],
              extra_paths=[project["ext"]], check=0)
    assert "OTHER OK" in r.stdout, r.stderr
    r = run(["other.py", str(project["store"])], project["other"],
            extra_paths=[project["ext"]], check=0)
    assert "OTHER OK" in r.stdout


NUMERIC = '''
import numpy as np
import pandas as pd
from chkpt import Checkpoint

rng = np.random.default_rng(0)
big = rng.standard_normal((512, 1024))            # 4 MiB
strided = np.arange(100.0)[::3]                     # non-contiguous
ints = np.arange(10, dtype=np.int32)
fortran = np.asfortranarray(rng.standard_normal((300, 200)))   # out of band too
frame = pd.DataFrame({"a": np.arange(1000), "b": [str(i) for i in range(1000)],
                      "c": rng.standard_normal(1000)})
series = pd.Series(np.linspace(0, 1, 50), name="s")
ck = Checkpoint.get_global_singleton()
ck.snapshot("numeric")
np.save("big.npy", big); np.save("strided.npy", strided); np.save("fortran.npy", fortran)
import json
print(json.dumps({v["name"]: len(v["buffers"]) for v in ck.snapshot("again").meta["variables"]}))
frame.to_pickle("frame.pkl"); series.to_pickle("series.pkl")
'''


def test_numpy_and_pandas_round_trip_writable(tmp_path):
    write(tmp_path / "num.py", NUMERIC)
    r = chkpt(["-f", "-1", "-z", "0", "num.py"], tmp_path, check=0)
    nbuf = json.loads(r.stdout.strip().splitlines()[-1])
    # contiguous data (C or Fortran order) goes out of band, strided stays in
    assert nbuf["big"] == 1 and nbuf["fortran"] == 1 and nbuf["strided"] == 0
    assert nbuf["frame"] >= 1
    other = tmp_path / "o"
    other.mkdir()
    code = '''
import sys, numpy as np, pandas as pd, chkpt
d = chkpt.load(sys.argv[1])
src = sys.argv[2]
big = d["big"]
assert np.array_equal(big, np.load(src + "/big.npy"))
assert big.flags.writeable and big.flags.c_contiguous
big[0, 0] = 42.0                            # writable, copy-on-write
assert np.array_equal(d["strided"], np.load(src + "/strided.npy"))
assert d["strided"].flags.writeable
assert d["ints"].dtype == np.int32 and d["ints"].flags.writeable
assert np.array_equal(d["fortran"], np.load(src + "/fortran.npy"))
assert d["fortran"].flags.f_contiguous and d["fortran"].flags.writeable
pd.testing.assert_frame_equal(d["frame"], pd.read_pickle(src + "/frame.pkl"))
pd.testing.assert_series_equal(d["series"], pd.read_pickle(src + "/series.pkl"))
d["frame"].loc[0, "c"] = 1.5
again = chkpt.load(sys.argv[1], names=["big"])["big"]
assert again[0, 0] != 42.0                   # the store was not written
print("NUMERIC OK")
'''
    r = run(["-c", code, str(tmp_path / "checkpoints"), str(tmp_path)], other, check=0)
    assert "NUMERIC OK" in r.stdout


NAMES = '''
import numpy as np
from chkpt import Checkpoint
ck = Checkpoint.get_global_singleton()
small = [1, 2, 3]
ck.snapshot("only-small")
huge = np.random.default_rng(1).standard_normal(2_000_000)   # 16 MiB, new chunks
ck.snapshot("both")
'''


def test_names_reads_only_the_named_variables(tmp_path):
    write(tmp_path / "names.py", NAMES)
    chkpt(["-f", "-1", "-z", "0", "names.py"], tmp_path, check=0)
    store = tmp_path / "checkpoints"
    first, second = manifests(store)
    # the chunks only the second snapshot uses hold `huge`'s data: destroy them
    ran = run(["-c", "import sys, chkpt; print(len(chkpt.load(sys.argv[1])['huge']))",
               str(second)], tmp_path, check=0)
    assert ran.stdout.strip() == "2000000"
    only_first = set(chunk_files(store))
    # snapshot 1 is older and holds no buffer; everything of `huge` is newer
    huge_chunks = [p for p in only_first if p.stat().st_size > 100_000]
    assert huge_chunks
    for p in huge_chunks:
        p.chmod(0o600)
        p.write_bytes(b"\0" * 16)
    r = run(["-c", "import sys, chkpt; d = chkpt.load(sys.argv[1], names=['small']);"
             "print(sorted(d), d['small'])", str(second)], tmp_path, check=0)
    assert r.stdout.strip() == "['small'] [1, 2, 3]"
    r = run(["-c", "import sys, chkpt\ntry:\n chkpt.load(sys.argv[1])\n"
             "except chkpt.SnapshotError as e:\n print('DAMAGED', e)",
             str(second)], tmp_path, check=0)
    assert r.stdout.startswith("DAMAGED"), r.stdout + r.stderr
    # an unknown name is an error
    r = run(["-c", "import sys, chkpt; chkpt.load(sys.argv[1], names=['nope'])",
             str(second)], tmp_path)
    assert r.returncode == 1 and "KeyError" in r.stderr and "nope" in r.stderr


def test_snapshots_skips_a_damaged_manifest(tmp_path):
    write(tmp_path / "three.py", '''
        from chkpt import Checkpoint
        ck = Checkpoint.get_global_singleton()
        for i in range(3):
            value = [i] * 10
            ck.snapshot(f"s{i}")
    ''')
    chkpt(["-f", "-1", "-z", "0", "three.py"], tmp_path, check=0)
    ms = manifests(tmp_path / "checkpoints")
    assert len(ms) == 3
    data = bytearray(ms[1].read_bytes())
    data[len(data) // 2] ^= 0xFF
    ms[1].chmod(0o600)
    ms[1].write_bytes(bytes(data))
    r = run(["-c", "import chkpt; s = chkpt.snapshots('checkpoints');"
             "print([i.name for i in s], [chkpt.load(i)['value'][0] for i in s])"],
            tmp_path, check=0)
    assert r.stdout.strip() == "['s0', 's2'] [0, 2]"
    assert len(chkpt_lines(r.stderr)) == 1 and "damaged" in r.stderr
    r = run(["-c", "import sys, chkpt; chkpt.load(sys.argv[1])", str(ms[1])], tmp_path)
    assert r.returncode == 1 and "SnapshotError" in r.stderr
    r = run(["-c", "import chkpt; chkpt.load('no/such/thing')"], tmp_path)
    assert "SnapshotError: no snapshot at no/such/thing" in r.stderr


def test_store_writable_by_others_is_refused(project):
    project["store"].chmod(0o777)
    r = run(["-c", "import sys, chkpt; chkpt.load(sys.argv[1])", str(project["store"])],
            project["other"], extra_paths=[project["ext"]])
    assert r.returncode == 1 and "SnapshotError" in r.stderr and "refusing" in r.stderr


SETSTATE = '''
import os
from chkpt import Checkpoint


class Fragile:
    def __init__(self):
        self.v = 1

    def __setstate__(self, state):
        if os.environ.get("CHKPT_TEST_BREAK"):
            raise ValueError("bad state")
        self.__dict__.update(state)


fragile = Fragile()
sturdy = {"k": 1}
Checkpoint.get_global_singleton().snapshot()
'''


def test_a_setstate_that_raises_gives_a_stand_in(tmp_path, monkeypatch):
    write(tmp_path / "f.py", SETSTATE)
    chkpt(["-f", "-1", "-z", "0", "f.py"], tmp_path, check=0)
    monkeypatch.setenv("CHKPT_TEST_BREAK", "1")
    r = run(["-c", "import chkpt; d = chkpt.load('checkpoints'); print(repr(d['fragile']), d['sturdy'])"],
            tmp_path, check=0)
    assert "<chkpt.Unloadable 'fragile': __main__.Fragile" in r.stdout
    assert "ValueError: bad state" in r.stdout and "{'k': 1}" in r.stdout
    assert len(chkpt_lines(r.stderr)) == 1


PKG_MOD = '''
import enum
import pkg.other
from . import other
from .other import Other
from chkpt import Checkpoint


class Sub(Other):
    pass


class Sub2(other.Other):
    pass


class Sub3(pkg.other.Other):
    pass


class Kind(enum.Enum):
    A = 1


values = [Other(1), Sub(2), Sub2(3), Sub3(4), Kind.A]
Checkpoint.get_global_singleton().snapshot()
'''


def test_module_run_with_relative_imports(tmp_path):
    """python -m chkpt -m pkg.mod: the package's modules are the script's,
    and relative imports resolve to the snapshot's own versions."""
    write(tmp_path / "pkg" / "__init__.py", "")
    write(tmp_path / "pkg" / "other.py", "class Other:\n    def __init__(self, v):\n"
          "        self.v = v\n")
    write(tmp_path / "pkg" / "mod.py", PKG_MOD)
    chkpt(["-f", "-1", "-z", "0", "-m", "pkg.mod"], tmp_path, check=0)
    shutil.rmtree(tmp_path / "pkg")
    other = tmp_path / "o"
    other.mkdir()
    r = run(["-c", "import sys, chkpt; v = chkpt.load(sys.argv[1])['values'];"
             "base = type(v[0]);"
             "print([x.v for x in v[:4]], all(isinstance(x, base) for x in v[:4]), v[4].name)",
             str(tmp_path / "checkpoints")], other, check=0)
    assert r.stdout.strip() == "[1, 2, 3, 4] True A"
    assert chkpt_lines(r.stderr) == []


GUARDED = '''
from chkpt import Checkpoint

if __name__ == "__main__":
    import collections

    class Job:
        def __init__(self, n):
            self.n = n

    print("WORK")
    jobs = [Job(1), Job(2)]
    counts = collections.Counter("aab")
    Checkpoint.get_global_singleton().snapshot()
'''


def test_definitions_inside_the_main_guard(tmp_path):
    write(tmp_path / "g.py", GUARDED)
    chkpt(["-f", "-1", "-z", "0", "g.py"], tmp_path, check=0)
    (tmp_path / "g.py").unlink()
    r = run(["-c", "import chkpt; d = chkpt.load('checkpoints');"
             "print([j.n for j in d['jobs']], d['counts']['a'])"], tmp_path, check=0)
    assert r.stdout.strip() == "[1, 2] 2"
    assert "WORK" not in r.stdout and chkpt_lines(r.stderr) == []


# ---- a snapshot taken under another supported Python ----

def other_pythons():
    """The project's other virtualenvs (make test creates one per supported
    Python, each with numpy and pandas, in $CHKPT_TEST_VENVS, default .venv)
    whose extension is built in place."""
    venvs = Path(os.environ.get("CHKPT_TEST_VENVS") or ROOT / ".venv")
    found = []
    for exe in sorted(venvs.glob("3.*/bin/python")):
        tag = exe.parent.parent.name            # "3.12"
        if tag == "%d.%d" % sys.version_info[:2]:
            continue
        if list((ROOT / "chkpt").glob(f"_chkpt.cpython-{tag.replace('.', '')}-*.so")):
            found.append(pytest.param(exe, id=tag))
    return found or [pytest.param(None, id="none", marks=pytest.mark.skip(
        reason=f"no other supported Python with a built chkpt in {venvs}/ "
               "(make test creates them; set CHKPT_TEST_VENVS to their "
               "directory)"))]


CROSS_EXTRA = '''
import numpy as np
import pandas as pd
arr = np.arange(300_000, dtype=np.float64).reshape(1000, 300)
frame = pd.DataFrame({"a": np.arange(50_000), "b": np.linspace(0, 1, 50_000)})
ck.snapshot("numeric")
'''


@pytest.mark.parametrize("other_python", other_pythons())
def test_snapshot_from_another_python_opens_here(tmp_path, other_python):
    proj, ext, other = tmp_path / "proj", tmp_path / "ext", tmp_path / "o"
    write(proj / "script.py", SCRIPT.replace(
        'if __name__ == "__main__":', CROSS_EXTRA + '\nif __name__ == "__main__":'))
    write(proj / "helpers.py", HELPERS)
    write(ext / "extmod.py", EXTMOD)
    env = env_with([ext])
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), str(ext)])  # its own build
    r = subprocess.run([str(other_python), "-m", "chkpt", "-f", "-1", "-z", "0",
                        "script.py"], cwd=proj, env=env, capture_output=True,
                       text=True, timeout=180)
    assert r.returncode == 0 and chkpt_lines(r.stderr) == [], r.stderr
    store = proj / "checkpoints"
    other.mkdir()
    write(other / "check.py", CHECK)
    r = run(["check.py", str(store / "snapshots" / manifests(store)[0].name)],
            other, extra_paths=[ext], check=0)
    assert "CHECK OK" in r.stdout and chkpt_lines(r.stderr) == [], r.stderr
    code = """
import sys, numpy as np, chkpt
info = chkpt.snapshots(sys.argv[1])[-1]
d = chkpt.load(info)
assert info.name == "numeric"
assert np.array_equal(d["arr"], np.arange(300_000.0).reshape(1000, 300))
assert d["arr"].flags.writeable
assert d["frame"]["b"].iloc[-1] == 1.0 and len(d["frame"]) == 50_000
print("NUMERIC OK")
"""
    r = run(["-c", code, str(store)], other, extra_paths=[ext], check=0)
    assert "NUMERIC OK" in r.stdout and chkpt_lines(r.stderr) == [], r.stderr


# ---- names bound to one object ----

ALIASES = '''
import numpy as np
from chkpt import Checkpoint
ck = Checkpoint.get_global_singleton()
arr = np.arange(1_000_000.0)
same = arr
shared = [1.5] * 1000
other = shared
table = {"x": shared}
def stage():
    view = arr
    ck.snapshot("in-stage")
stage()
ck.snapshot("top")
'''


def test_names_bound_to_one_object_load_as_one_object(tmp_path):
    write(tmp_path / "aliases.py", ALIASES)
    chkpt(["-f", "-1", "-z", "0", "aliases.py"], tmp_path, check=0)
    store = tmp_path / "checkpoints"
    code = '''
import sys, chkpt
inner, top = chkpt.snapshots(sys.argv[1])
d = chkpt.load(inner)
assert d["view"] is d["arr"] is d["same"]
d = chkpt.load(top)
assert d["same"] is d["arr"] and d["other"] is d["shared"]
d["same"][0] = 7.0
assert d["arr"][0] == 7.0
# only the alias asked for: loaded from the streams it shares
d = chkpt.load(top, names=["other"])
assert list(d) == ["other"] and d["other"] == [1.5] * 1000
print("ALIASES OK", top.size)
'''
    r = run(["-c", code, str(store)], tmp_path, check=0)
    assert "ALIASES OK" in r.stdout
    # pickled once: the snapshot is no bigger than its distinct objects
    assert int(r.stdout.split()[-1]) < 9_000_000
    r = chkpt(["show", store], tmp_path, check=0)
    rows = {l.split()[0]: l for l in r.stdout.splitlines() if l.strip()}
    assert rows["same"].endswith("(same object as arr)")
    assert rows["other"].endswith("(same object as shared)")
    assert "same object" not in rows["arr"] and "same object" not in rows["table"]
