"""README promises that had no test able to fail: library salience
(`track_library`, pandas at the default -z), the size options
(--max-pickle-size, --max-store-size, --compress), `snapshot()` giving None,
and what is refused (-c, a terminal as the script, a store owned by
someone else).  Each runs a real script under `python -m chkpt`; the
snapshots are read back in this process (the build under test)."""
import os
import pty
import subprocess
import sys

import pytest

import chkpt
from snapshot_util import chkpt as run_chkpt, chkpt_lines, env_with, write

MIB = 1 << 20


def stored_chunk_bytes(store):
    return sum(p.stat().st_size for p in (store / "chunks").rglob("*")
               if p.is_file())


# ---- what is salient ----

LIBRARY = '''
class Blob:
    """A library's object whose data chkpt cannot see by walking it (in a
    slot, as in an extension type): it says its size through nbytes, which
    chkpt asks the objects of tracked libraries."""
    __slots__ = ("payload",)

    def __init__(self, n):
        self.payload = bytes(n)

    @property
    def nbytes(self):
        return len(self.payload)
'''

TRACK_LIBRARY = '''
import sys
import mylib
from chkpt import Checkpoint
ck = Checkpoint.get_global_singleton()
big = mylib.Blob(3 << 20)
small = mylib.Blob(1000)
before = ck.snapshot("before")
ck.track_library("mylib")
after = ck.snapshot("after")
print(bool(before), before.path, before.variables, sorted(after.variables))
'''


def test_track_library_makes_its_big_objects_salient(tmp_path):
    """At -z 1M a library object is captured only once its library is
    tracked, and only when it holds at least 1M."""
    write(tmp_path / "mylib.py", LIBRARY)
    write(tmp_path / "s.py", TRACK_LIBRARY)
    r = run_chkpt(["-f", "-1", "-z", "1M", "-o", "out", "s.py"], tmp_path,
                  check=0)
    assert r.stdout.split("\n")[0] == "False None [] ['big']", \
        r.stdout + r.stderr
    assert chkpt_lines(r.stderr) == []
    data = chkpt.load(str(tmp_path / "out"))
    assert len(data["big"].payload) == 3 << 20


PANDAS = '''
import numpy as np
import pandas as pd
from chkpt import Checkpoint
ck = Checkpoint.get_global_singleton()
frame = pd.DataFrame({"a": np.arange(200_000), "b": np.linspace(0, 1, 200_000)})
series = pd.Series(np.arange(300_000, dtype="f8"))
small_frame = pd.DataFrame({"a": [1, 2, 3]})
info = ck.snapshot()
print(sorted(info.variables))
'''


def test_pandas_objects_are_salient_at_the_default_threshold(tmp_path):
    """No -z: frames and series holding 1M or more are captured, a small
    frame is not."""
    write(tmp_path / "s.py", PANDAS)
    r = run_chkpt(["-f", "-1", "s.py"], tmp_path, check=0)
    assert r.stdout.strip() == "['frame', 'series']", r.stdout + r.stderr
    data = chkpt.load(str(tmp_path / "checkpoints"))
    assert data["frame"]["b"].iloc[-1] == 1.0 and len(data["series"]) == 300_000


def test_snapshot_is_false_when_nothing_is_salient(tmp_path):
    """The README: the SnapshotInfo ck.snapshot() returns is false, with
    path None, when nothing was written; nothing salient is no failure (no
    chkpt: line), and nothing is written."""
    write(tmp_path / "s.py", '''
        from chkpt import Checkpoint
        ck = Checkpoint.get_global_singleton()
        x = [1, 2, 3]
        info = ck.snapshot("nothing")
        print(bool(info), info.path, info.variables)
    ''')
    r = run_chkpt(["-f", "-1", "-z", "-1", "s.py"], tmp_path, check=0)
    assert r.stdout == "False None []\n", r.stdout + r.stderr
    assert chkpt_lines(r.stderr) == []
    assert not list(tmp_path.glob("checkpoints/snapshots/*"))


# ---- the size options ----

PICKLE_SIZE = '''
import numpy as np
from chkpt import Checkpoint
ck = Checkpoint.get_global_singleton()
arr = np.arange(2_000_000, dtype="f8")        # 16 MB of array data
text = "x" * (3 << 20)                        # 3 MB pickled in band
info = ck.snapshot()
print(sorted(info.variables))
'''


def test_max_pickle_size_does_not_count_array_data(tmp_path):
    """--max-pickle-size 1M: a 16 MB array (its data saved out of band) is
    saved, a 3 MB string (pickled bytes) is skipped with one warning."""
    write(tmp_path / "s.py", PICKLE_SIZE)
    r = run_chkpt(["-f", "-1", "-z", "0", "--max-pickle-size", "1M", "s.py"],
                  tmp_path, check=0)
    assert r.stdout.strip() == "['arr']", r.stdout + r.stderr
    lines = chkpt_lines(r.stderr)
    assert len(lines) == 1 and "'text'" in lines[0], r.stderr
    assert chkpt.load(str(tmp_path / "checkpoints"))["arr"][-1] == 1_999_999


def test_max_store_size_keeps_the_newest_snapshot_over_budget(tmp_path):
    """Each snapshot (8 MB of new data) is over --max-store-size 1M: after
    each automatic one the older ones go, the newest always stays."""
    write(tmp_path / "s.py", '''
        import time
        import numpy as np
        for i in range(4):
            a = np.random.default_rng(i).random(1_000_000)
            a[0] = i
            t = time.monotonic() + 0.3
            while time.monotonic() < t:
                pass
        print("done")
    ''')
    r = run_chkpt(["-f", "100", "--max-store-size", "1M", "s.py"], tmp_path,
                  check=0)
    assert chkpt_lines(r.stderr) == [], r.stderr
    infos = chkpt.snapshots(str(tmp_path / "checkpoints"))
    assert len(infos) == 1, infos
    assert chkpt.load(infos[0])["a"][0] == 3        # the last loop's data


COMPRESSIBLE = '''
import numpy as np
from chkpt import Checkpoint
ck = Checkpoint.get_global_singleton()
arr = np.zeros(2_000_000)                     # 16 MB, compresses to little
arr[::1000] = np.arange(2000)
text = "abc" * 1_000_000
ck.snapshot()
'''


def test_compress_from_the_command_line_compresses_chunks(tmp_path):
    """--compress N: the chunks on disk are a small fraction of the data
    (without it, all of it), and they load back equal."""
    write(tmp_path / "s.py", COMPRESSIBLE)
    sizes = {}
    for opt in ([], ["--compress", "3"], ["--compress=19"]):
        out = tmp_path / ("out" + "".join(opt))
        r = run_chkpt(["-f", "-1", "-z", "0", *opt, "-o", out, "s.py"],
                      tmp_path, check=0)
        assert chkpt_lines(r.stderr) == [], r.stderr
        sizes[" ".join(opt)] = stored_chunk_bytes(out)
        d = chkpt.load(str(out))
        assert d["arr"].shape == (2_000_000,) and d["arr"][1000] == 1
        assert d["arr"].sum() == sum(range(2000)) and d["text"] == "abc" * 1_000_000
    assert sizes[""] >= 16_000_000, sizes
    assert sizes["--compress 3"] < sizes[""] / 20, sizes
    assert sizes["--compress=19"] < sizes[""] / 20, sizes


# ---- what is refused ----


def test_dash_c_is_refused_with_exit_2(tmp_path):
    r = run_chkpt(["-c", "open('ran', 'w')"], tmp_path)
    assert r.returncode == 2 and r.stdout == ""
    assert len(r.stderr.splitlines()) == 1 and r.stderr.startswith("chkpt:")
    assert "-c" in r.stderr, r.stderr
    assert not (tmp_path / "ran").exists()


@pytest.mark.parametrize("argv", [["-"], []], ids=["dash", "no-script"])
def test_a_terminal_as_the_script_is_refused_with_exit_2(tmp_path, argv):
    """`python -m chkpt -` with a terminal as stdin would be the
    interactive prompt (not supported): one chkpt: line, exit 2, and
    nothing read from the terminal."""
    master, slave = pty.openpty()
    try:
        os.write(master, b"open('ran', 'w')\n")
        p = subprocess.run([sys.executable, "-m", "chkpt", *argv],
                           cwd=tmp_path, env=env_with(), stdin=slave,
                           capture_output=True, text=True, timeout=30)
    finally:
        os.close(slave)
        os.close(master)
    assert p.returncode == 2, (p.stdout, p.stderr)
    assert p.stdout == "" and len(p.stderr.splitlines()) == 1, p.stderr
    assert p.stderr.startswith("chkpt:")
    assert not (tmp_path / "ran").exists()


@pytest.mark.skipif(os.geteuid() != 0,
                    reason="making a store owned by another user needs root")
def test_a_store_owned_by_another_user_is_refused_from_python(tmp_path):
    """chkpt.load refuses a store that is not the caller's (loading runs
    pickle): SnapshotError, saying why."""
    write(tmp_path / "s.py", '''
        from chkpt import Checkpoint
        data = [1, 2, 3]
        Checkpoint.get_global_singleton().snapshot()
    ''')
    run_chkpt(["-f", "-1", "-z", "0", "s.py"], tmp_path, check=0)
    store = tmp_path / "checkpoints"
    assert chkpt.load(str(store)) == {"data": [1, 2, 3]}
    os.chown(store, 4242, 4242)
    try:
        with pytest.raises(chkpt.SnapshotError, match="refusing"):
            chkpt.load(str(store))
        info = chkpt.snapshots(str(store))[-1]      # metadata only: listed
        with pytest.raises(chkpt.SnapshotError, match="refusing"):
            chkpt.load(info, names=["data"])
    finally:
        os.chown(store, os.getuid(), os.getgid())
