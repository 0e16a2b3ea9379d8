"""python -m chkpt ls | show | explore | export | verify | gc."""
import pickle
import shutil

import pytest

from snapshot_util import chkpt, chkpt_lines, chunk_files, manifests, run, write

SCRIPT = '''
import enum
import numpy as np
from chkpt import Checkpoint
from helpers import Thing


class Point:
    def __init__(self, x, y):
        self.x, self.y = x, y

    def norm2(self):
        return self.x ** 2 + self.y ** 2

    def __repr__(self):
        return f"Point({self.x}, {self.y})"


class Color(enum.Enum):
    RED = 1


ck = Checkpoint.get_global_singleton()
p = Point(3, 4)
c = Color.RED
th = Thing(5)
arr = np.arange(1_000_000, dtype=np.float64)       # 7.6 MiB out of band
ck.snapshot("first")
arr[:10] = -1
ck.snapshot("second")
'''

HELPERS = '''
class Thing:
    def __init__(self, v):
        self.v = v
'''


@pytest.fixture
def store(tmp_path):
    proj = tmp_path / "proj"
    write(proj / "script.py", SCRIPT)
    write(proj / "helpers.py", HELPERS)
    chkpt(["-f", "-1", "-z", "0", "script.py"], proj, check=0)
    other = tmp_path / "other"
    other.mkdir()
    return {"store": proj / "checkpoints", "proj": proj, "other": other}


def test_ls(store):
    r = chkpt(["ls", store["store"]], store["other"], check=0)
    lines = r.stdout.splitlines()
    assert lines[0].split() == ["ID", "TIME", "KIND", "NAME", "WHERE", "SIZE", "VARIABLES"]
    rows = lines[1:3]
    assert "manual" in rows[0] and "first" in rows[0] and "script.py:28" in rows[0]
    assert "second" in rows[1] and "script.py:30" in rows[1] and "MiB" in rows[1]
    assert rows[1].endswith("4: p, c, th, arr")
    assert rows[0].split()[0] == manifests(store["store"])[0].stem
    assert lines[3].startswith("2 snapshot(s) in") and "on disk" in lines[3]
    # default store: ./checkpoints
    r = chkpt(["ls"], store["proj"], check=0)
    assert "first" in r.stdout
    r = chkpt(["ls", "nowhere"], store["other"])
    assert r.returncode == 1 and r.stderr.startswith("chkpt: error:")


def test_show_reads_metadata_only(store):
    # destroy every data chunk: show must not need them
    for p in chunk_files(store["store"]):
        if p.stat().st_size > 100_000:
            p.chmod(0o600)
            p.write_bytes(b"broken")
    r = chkpt(["show", store["store"]], store["other"], check=0)
    out = r.stdout
    assert "name      second" in out and "kind      manual" in out
    assert "script.py:30 in <module>" in out
    assert "sources   __main__, helpers" in out
    rows = {l.split()[0]: l for l in out.splitlines() if l[:2] in ("p ", "c ", "th", "ar")}
    assert "__main__.Point" in rows["p"] and "Point(3, 4)" in rows["p"]
    assert "__main__.Color" in rows["c"] and "<Color.RED: 1>" in rows["c"]
    assert "helpers.Thing" in rows["th"]
    assert "numpy.ndarray" in rows["arr"] and "7.6 MiB" in rows["arr"]
    assert "shape=(1000000,)" in rows["arr"]
    assert "cannot load" not in out
    # by id, with -o
    sid = manifests(store["store"])[0].stem
    r = chkpt(["show", "-o", store["store"], sid], store["other"], check=0)
    assert "name      first" in r.stdout
    # ... while loading it is a SnapshotError
    r = chkpt(["explore", store["store"]], store["other"], input="")
    assert r.returncode == 1 and "chkpt: error:" in r.stderr and "damaged" in r.stderr


def test_show_errors(store):
    r = chkpt(["show", "missing.ckpt"], store["other"])
    assert r.returncode == 1
    assert r.stderr.strip() == "chkpt: error: no snapshot at missing.ckpt"
    r = chkpt(["show"], store["other"])
    assert r.returncode == 2 and "chkpt: error:" in r.stderr


def test_explore_through_stdin(store):
    (store["proj"] / "script.py").unlink()
    (store["proj"] / "helpers.py").unlink()
    r = chkpt(["explore", store["store"]], store["other"],
              input="print('NORM', p.norm2(), c.name, th.v, arr[:2].tolist())\n"
                    "arr[0] = 7\nprint('SET', arr[0])\n")
    assert r.returncode == 0, r.stderr
    assert "NORM 25 RED 5 [-1.0, -1.0]" in r.stdout
    assert "SET 7.0" in r.stdout
    assert "variables: p, c, th, arr" in r.stderr


def test_export(store, tmp_path):
    out = tmp_path / "vars.pkl"
    r = chkpt(["export", store["store"], out], store["other"], check=0)
    assert "exported 4 variable(s)" in r.stdout
    notes = chkpt_lines(r.stderr)
    assert any("__main__.Point" in n for n in notes)
    # readable by pickle.load alone where the script's classes are defined:
    # here, a process whose __main__ defines Point and Color, next to helpers
    reader = store["proj"] / "reader.py"
    write(reader, SCRIPT.split("ck = Checkpoint")[0].replace(
        "from chkpt import Checkpoint", "") + '''
import pickle, sys
d = pickle.load(open(sys.argv[1], "rb"))
assert isinstance(d["p"], Point) and d["c"] is Color.RED and d["th"].v == 5
print("READ", sorted(d), d["arr"][:3].tolist())
''')
    r = run([reader.name, str(out)], store["proj"], check=0)
    assert "READ ['arr', 'c', 'p', 'th'] [-1.0, -1.0, -1.0]" in r.stdout


def test_export_of_plain_data_needs_nothing(tmp_path):
    write(tmp_path / "d.py", '''
        import numpy as np, pandas as pd, threading
        from chkpt import Checkpoint
        frame = pd.DataFrame({"a": [1, 2]})
        arr = np.ones(3)
        lock = threading.Lock()
        Checkpoint.get_global_singleton().snapshot()
    ''')
    chkpt(["-f", "-1", "-z", "0", "d.py"], tmp_path, check=0)
    other = tmp_path / "o"
    other.mkdir()
    r = chkpt(["export", tmp_path / "checkpoints", "x.pkl"], other, check=0)
    assert "exported 2 variable(s)" in r.stdout
    with open(other / "x.pkl", "rb") as f:
        d = pickle.load(f)
    assert sorted(d) == ["arr", "frame"] and d["arr"].tolist() == [1.0, 1.0, 1.0]


def test_export_says_what_could_not_be_exported(tmp_path):
    ext = tmp_path / "ext"
    write(ext / "gone.py", "class G:\n    pass\n")
    write(tmp_path / "g.py", '''
        import gone
        from chkpt import Checkpoint
        g = gone.G()
        n = [1]
        Checkpoint.get_global_singleton().snapshot()
    ''')
    chkpt(["-f", "-1", "-z", "0", "g.py"], tmp_path, extra_paths=[ext], check=0)
    shutil.rmtree(ext)
    r = chkpt(["export", "checkpoints", "x.pkl"], tmp_path, check=0)
    assert "exported 1 variable(s)" in r.stdout and "1 could not be exported" in r.stdout
    assert any("'g' not exported" in l and "gone.G" in l for l in chkpt_lines(r.stderr))


def test_verify_and_gc(store):
    r = chkpt(["verify", store["store"]], store["other"], check=0)
    assert r.stdout.strip() == "2 snapshot(s) intact"
    big = sorted(chunk_files(store["store"]), key=lambda p: p.stat().st_size)[-1]
    big.chmod(0o600)
    data = bytearray(big.read_bytes())
    data[100] ^= 0xFF
    big.write_bytes(bytes(data))
    r = chkpt(["verify", store["store"]], store["other"])
    assert r.returncode == 1
    damaged = [l for l in r.stdout.splitlines() if l.startswith("DAMAGED")]
    assert damaged and all(".ckpt" in l for l in damaged)
    r = chkpt(["gc", store["store"], "--keep", "1"], store["other"], check=0)
    assert "removed 1 snapshot(s)" in r.stdout
    assert len(manifests(store["store"])) == 1
    r = chkpt(["gc", store["store"]], store["other"])
    assert r.returncode == 2
