"""Robustness of the snapshot store (issue 4), with real subprocesses:

- a snapshot-heavy script killed with SIGKILL at random moments, many times
  over one output dir: every snapshot listed loads, the store verifies;
- damaged chunks and manifests: chkpt.load raises chkpt.SnapshotError and
  `python -m chkpt verify DIR` exits non-zero naming the damaged snapshot;
- an unwritable output dir (read-only, or full): the script's output and exit
  status are those of plain python, with exactly one `chkpt:` warning;
- two scripts writing to one dir at once; gc while a script writes.

Loading happens in a subprocess too (CHECKER), so that a crash in the load
path shows up as a failed test rather than a dead pytest.
"""
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def env():
    e = {k: v for k, v in os.environ.items()
         if not k.startswith("PYTHON") or k == "PYTHONHASHSEED"}
    e["PYTHONPATH"] = os.environ.get("CHKPT_TEST_PYTHONPATH", str(REPO))
    e["PYTHONHASHSEED"] = "0"
    return e


def run(args, cwd, timeout=60):
    return subprocess.run([sys.executable, *map(str, args)], cwd=str(cwd),
                          env=env(), capture_output=True, text=True,
                          stdin=subprocess.DEVNULL, timeout=timeout)


def chkpt(args, cwd, timeout=60):
    return run(["-m", "chkpt", *args], cwd, timeout=timeout)


def spawn(args, cwd):
    return subprocess.Popen([sys.executable, *map(str, args)], cwd=str(cwd),
                            env=env(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
                            text=True)


def write(path, text):
    Path(path).write_text(textwrap.dedent(text))
    return Path(path)


def chkpt_lines(stderr):
    return [l for l in stderr.splitlines() if l.startswith("chkpt:")]


# Lists a store and loads every snapshot listed; prints a JSON report.
# Consistency of the content is checked by the caller's expression CHECK
# (evaluated with the loaded dict as `v`), beyond the store's checksums.
CHECKER = '''
import json, sys
import chkpt
out, check = sys.argv[1], sys.argv[2]
rep = {"listed": 0, "loaded": 0, "errors": [], "inconsistent": []}
infos = chkpt.snapshots(out)
rep["listed"] = len(infos)
for s in infos:
    try:
        v = chkpt.load(s)
    except chkpt.SnapshotError as e:
        rep["errors"].append("%s: %s" % (s.path, e))
        continue
    rep["loaded"] += 1
    if check and not eval(check):
        rep["inconsistent"].append(s.path)
print(json.dumps(rep))
'''

# Loads one snapshot by path: exit 0 when it loads, 3 on SnapshotError.
LOAD_ONE = '''
import sys
import chkpt
try:
    chkpt.load(sys.argv[1])
except chkpt.SnapshotError as e:
    print("SnapshotError:", e)
    sys.exit(3)
print("loaded")
'''


def check_store(tmp_path, out, check=""):
    r = run(["-c", CHECKER, out, check], tmp_path)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout.splitlines()[-1]), r.stderr


def manifests(out):
    return sorted((Path(out) / "snapshots").iterdir())


def chunk_files(out):
    return {p for p in (Path(out) / "chunks").rglob("*") if p.is_file()}


def flip(path, offset):
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x5A
    path.write_bytes(bytes(data))


# ---------------------------------------------------------------------------
# SIGKILL at random moments

MANUAL_LOOP = '''
import numpy as np
from chkpt import Checkpoint
ck = Checkpoint.get_global_singleton()
a = np.arange(300_000, dtype=np.float64)       # 2.4 MB: 3 chunks, 1 changes
i = 0
while True:
    i += 1
    a[0] = i % 5
    b = np.full(60_000, i, dtype=np.int64)      # 480 KB, new every time
    ck.snapshot()
'''

LINE_LOOP = '''
import numpy as np
a = np.arange(300_000, dtype=np.float64)
i = 0
while True:
    i += 1
    a[0] = i
    b = np.full(60_000, i, dtype=np.int64)
'''

# What a consistent snapshot of each loop holds.
MANUAL_CHECK = ("float(v['a'][0]) == v['b'][0] % 5 and (v['b'] == v['b'][0]).all()"
                " and (v['a'][1:] == __import__('numpy').arange(1, 300_000)).all()")
LINE_CHECK = ("('b' not in v or ((v['b'] == v['b'][0]).all()"
              " and float(v['a'][0]) - v['b'][0] in (0, 1)))"
              " and (v['a'][1:] == __import__('numpy').arange(1, 300_000)).all()")


@pytest.mark.parametrize("mode", ["manual", "every-line"])
def test_sigkill_at_random_moments_leaves_a_loadable_store(tmp_path, mode):
    if mode == "manual":
        script = write(tmp_path / "loop.py", MANUAL_LOOP)
        opts, check = ["-f", "-1", "-z", "100K"], MANUAL_CHECK
    else:
        script = write(tmp_path / "loop.py", LINE_LOOP)
        opts, check = ["-f", "0", "-z", "0"], LINE_CHECK
    out = tmp_path / "out"
    rng = random.Random(4)
    for _ in range(10):
        before = len(manifests(out)) if (out / "snapshots").is_dir() else 0
        p = spawn(["-m", "chkpt", "-o", out, *opts, script], tmp_path)
        # Kill while it snapshots: once its first snapshot is out (startup
        # takes longer on a loaded machine), at a random moment after.
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and p.poll() is None and (
                not (out / "snapshots").is_dir() or len(manifests(out)) <= before):
            time.sleep(0.01)
        time.sleep(rng.uniform(0.0, 0.4))
        p.send_signal(signal.SIGKILL)
        p.communicate(timeout=30)
        assert p.returncode == -signal.SIGKILL
    files = manifests(out)
    assert len(files) >= 5, "the script should have snapshotted before most kills"
    # Nothing half-written is visible under a final name.
    assert all(f.suffix == ".ckpt" for f in files)
    rep, err = check_store(tmp_path, out, check)
    assert rep["listed"] == len(files), err
    assert rep["errors"] == [] and rep["inconsistent"] == []
    assert rep["loaded"] == len(files)
    r = chkpt(["verify", out], tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    # gc clears what the kills left behind (temporary files, orphan chunks)
    # and keeps the newest snapshots loadable.
    r = chkpt(["gc", out, "--keep", "3"], tmp_path)
    assert r.returncode == 0, r.stderr
    assert list((out / "tmp").iterdir()) == []
    rep, err = check_store(tmp_path, out, check)
    assert rep["listed"] == rep["loaded"] == 3, err


# ---------------------------------------------------------------------------
# Damage

TWO_SNAPSHOTS = '''
import sys
import numpy as np
from chkpt import Checkpoint
ck = Checkpoint.get_global_singleton()
data = np.random.default_rng(int(sys.argv[1])).random(400_000)   # 3.2 MB
ck.snapshot()
'''


@pytest.fixture(scope="module")
def pristine_store(tmp_path_factory):
    """A store with two snapshots of different data, made by two runs, and
    the chunk files (relative) that only the first one uses."""
    base = tmp_path_factory.mktemp("pristine")
    script = write(base / "snap.py", TWO_SNAPSHOTS)
    out = base / "out"
    r = chkpt(["-o", out, "-f", "-1", "-z", "1M", script, "1"], base)
    assert r.returncode == 0 and not chkpt_lines(r.stderr), r.stderr
    first_chunks = chunk_files(out)
    r = chkpt(["-o", out, "-f", "-1", "-z", "1M", script, "2"], base)
    assert r.returncode == 0 and not chkpt_lines(r.stderr), r.stderr
    assert len(manifests(out)) == 2
    only_first = first_chunks - (chunk_files(out) - first_chunks)
    return out, {p.relative_to(out) for p in only_first}


def two_snapshot_store(tmp_path, pristine):
    """A private copy of the pristine store (a copied store must work)."""
    src, only_first = pristine
    out = tmp_path / "out"
    shutil.copytree(src, out)
    first, second = manifests(out)
    return out, first, second, {out / p for p in only_first}


def damage(kind, first, only_first):
    chunk = max(only_first, key=lambda p: p.stat().st_size)  # array data
    if kind == "chunk-byte":
        flip(chunk, 1000)
    elif kind == "chunk-trailer":
        flip(chunk, chunk.stat().st_size - 20)
    elif kind == "chunk-truncated":
        os.truncate(chunk, chunk.stat().st_size // 2)
    elif kind == "chunk-missing":
        chunk.unlink()
    elif kind == "manifest-byte":
        flip(first, first.stat().st_size // 2)
    elif kind == "manifest-truncated":
        os.truncate(first, first.stat().st_size - 1)
    else:
        raise AssertionError(kind)


@pytest.mark.parametrize("kind", ["chunk-byte", "chunk-trailer",
                                  "chunk-truncated", "chunk-missing",
                                  "manifest-byte", "manifest-truncated"])
def test_damage_is_detected_and_named(tmp_path, kind, pristine_store):
    out, first, second, only_first = two_snapshot_store(tmp_path,
                                                        pristine_store)
    damage(kind, first, only_first)

    r = run(["-c", LOAD_ONE, first], tmp_path)
    assert r.returncode == 3, r.stdout + r.stderr
    assert "SnapshotError" in r.stdout
    r = run(["-c", LOAD_ONE, second], tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr     # the other one is fine

    r = chkpt(["verify", out], tmp_path)
    assert r.returncode != 0
    text = r.stdout + r.stderr
    damaged_lines = [l for l in text.splitlines() if first.stem in l]
    assert damaged_lines, text
    assert not any(second.stem in l for l in text.splitlines()), text

    # Listing still works; whatever it lists either loads or raises
    # SnapshotError, never anything else.
    rep, err = check_store(tmp_path, out)
    assert rep["loaded"] >= 1
    assert rep["loaded"] + len(rep["errors"]) == rep["listed"]


# ---------------------------------------------------------------------------
# Unwritable output dir

# No chkpt import: the same script runs under plain python for comparison.
PLAIN = '''
import sys
import numpy as np
data = np.random.default_rng(0).random(1_000_000)      # 8 MB
for k in range(4):
    data[k] = k
    print("step", k, flush=True)
print("sum", round(float(data[:10].sum()), 6))
sys.stderr.write("script stderr line\\n")
sys.exit(3)
'''


def is_root():
    return os.geteuid() == 0


def mount_tmpfs(where, size):
    where.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700",
                        "tmpfs", str(where)], capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {r.stderr.strip()}")


def umount(where):
    subprocess.run(["umount", "-l", str(where)], capture_output=True)


@pytest.mark.parametrize("case", [
    "read-only", "read-only-existing",
    "full",
    "not-a-directory"])
def test_unwritable_output_dir_changes_nothing_but_one_warning(tmp_path, case):
    script = write(tmp_path / "plain.py", PLAIN)
    mnt = tmp_path / "mnt"
    out = mnt / "out"
    mounted = False
    try:
        if case in ("read-only", "read-only-existing"):
            if is_root():
                mount_tmpfs(mnt, "4m")
                mounted = True
                if case == "read-only-existing":
                    out.mkdir(mode=0o700)
                r = subprocess.run(["mount", "-o", "remount,ro", str(mnt)],
                                   capture_output=True, text=True)
                if r.returncode != 0:
                    pytest.skip(f"cannot remount read-only: {r.stderr.strip()}")
            else:
                mnt.mkdir()
                if case == "read-only-existing":
                    out.mkdir(mode=0o700)
                    out.chmod(0o500)
                mnt.chmod(0o500)
        elif case == "full":
            if not is_root():
                pytest.skip("a full file system needs a tmpfs mount (root)")
            mount_tmpfs(mnt, "1m")
            mounted = True
        else:
            mnt.mkdir()
            out = mnt / "file" / "out"
            (mnt / "file").write_text("not a directory")

        plain = run([script], tmp_path)
        under = chkpt(["-o", out, "-f", "0", "-z", "100K", script], tmp_path)
        assert under.returncode == plain.returncode == 3
        assert under.stdout == plain.stdout
        warnings = chkpt_lines(under.stderr)
        assert len(warnings) == 1, under.stderr
        rest = "".join(l for l in under.stderr.splitlines(keepends=True)
                       if not l.startswith("chkpt:"))
        assert rest == plain.stderr

    finally:
        if mounted:
            umount(mnt)
        elif mnt.exists() and not is_root():
            mnt.chmod(0o700)
            if out.exists():
                out.chmod(0o700)


def test_full_disk_leaves_nothing_partial(tmp_path):
    """ENOSPC in the middle of snapshots: the script runs on unchanged, no
    temporary file is left, and whatever manifest got published is whole."""
    if not is_root():
        pytest.skip("a full file system needs a tmpfs mount (root)")
    script = write(tmp_path / "plain.py", PLAIN)
    mnt = tmp_path / "mnt"
    mount_tmpfs(mnt, "3m")
    try:
        out = mnt / "out"
        plain = run([script], tmp_path)
        under = chkpt(["-o", out, "-f", "0", "-z", "100K", script], tmp_path)
        assert under.returncode == plain.returncode == 3
        assert under.stdout == plain.stdout
        warnings = chkpt_lines(under.stderr)
        assert warnings and all("no space left on device" in w
                                for w in warnings), under.stderr
        assert list((out / "tmp").iterdir()) == []
        snaps = list((out / "snapshots").iterdir())
        assert all(m.suffix == ".ckpt" for m in snaps)
        r = chkpt(["verify", out], tmp_path)
        assert r.returncode == 0, r.stdout + r.stderr
        rep, err = check_store(tmp_path, out)
        assert rep["listed"] == rep["loaded"] == len(snaps), err
    finally:
        umount(mnt)


# ---------------------------------------------------------------------------
# Concurrency

WRITER = '''
import sys, time
import numpy as np
from chkpt import Checkpoint
ck = Checkpoint.get_global_singleton()
who = int(sys.argv[1])
n = int(sys.argv[2])
pause = float(sys.argv[3])
shared = np.arange(200_000, dtype=np.float64)             # same in every run
for i in range(n):
    own = np.full(150_000, who * 1000 + i, dtype=np.int64)
    info = ck.snapshot()
    assert info is not None
    time.sleep(pause)
print("done", who)
'''

WRITER_CHECK = ("(v['own'] == v['own'][0]).all() and "
                "(v['shared'] == __import__('numpy').arange(200_000)).all()")


def test_two_scripts_write_to_one_dir_at_once(tmp_path):
    script = write(tmp_path / "writer.py", WRITER)
    out = tmp_path / "out"
    procs = [spawn(["-m", "chkpt", "-o", out, "-f", "-1", "-z", "1M", script,
                    str(who), "15", "0.005"], tmp_path) for who in (1, 2)]
    for who, p in zip((1, 2), procs):
        stdout, stderr = p.communicate(timeout=60)
        assert p.returncode == 0, stderr
        assert stdout == f"done {who}\n"
        assert chkpt_lines(stderr) == [], stderr
    assert len(manifests(out)) == 30
    rep, err = check_store(tmp_path, out, WRITER_CHECK)
    assert rep["listed"] == rep["loaded"] == 30, err
    assert rep["inconsistent"] == []
    r = chkpt(["verify", out], tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr


def test_gc_while_a_script_writes(tmp_path):
    script = write(tmp_path / "writer.py", WRITER)
    out = tmp_path / "out"
    p = spawn(["-m", "chkpt", "-o", out, "-f", "-1", "-z", "1M", script, "1",
               "60", "0.01"], tmp_path)
    gcs = []
    deadline = time.monotonic() + 30
    while p.poll() is None and time.monotonic() < deadline:
        if (out / "FORMAT").exists():
            gcs.append(chkpt(["gc", out, "--keep", "2"], tmp_path))
        else:
            time.sleep(0.05)
    stdout, stderr = p.communicate(timeout=60)
    assert p.returncode == 0, stderr
    assert stdout == "done 1\n"
    assert chkpt_lines(stderr) == [], stderr
    assert len(gcs) >= 2
    for r in gcs:
        assert r.returncode == 0, r.stderr
    rep, err = check_store(tmp_path, out, WRITER_CHECK)
    assert rep["listed"] == rep["loaded"] >= 2, err
    assert rep["errors"] == [] and rep["inconsistent"] == []
    r = chkpt(["verify", out], tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr


# ---------------------------------------------------------------------------
# a store written by a newer chkpt (docs/FORMAT.md, "Versioning")

def test_store_of_a_newer_format_is_refused_everywhere(tmp_path):
    script = write(tmp_path / "job.py", '''
        from chkpt import Checkpoint
        data = [1.0] * 100
        Checkpoint.get_global_singleton().snapshot("s")
        print("job done")
    ''')
    out = tmp_path / "out"
    r = chkpt(["-f", "-1", "-z", "0", "-o", out, script], tmp_path)
    assert r.returncode == 0, r.stderr
    (out / "FORMAT").write_text("chkpt-store 2\n")
    before = sorted((p.relative_to(out), p.read_bytes())
                    for p in out.rglob("*") if p.is_file())
    (manifest,) = (out / "snapshots").glob("*.ckpt")
    why = "store format 2 is newer than this chkpt supports (1): upgrade chkpt"
    for verb in (["ls", out], ["show", out], ["show", manifest], ["verify", out],
                 ["export", manifest, tmp_path / "x.pkl"], ["gc", out, "--keep", "0"]):
        r = chkpt(verb, tmp_path)
        assert r.returncode != 0, verb
        assert r.stdout == "" and len(r.stderr.splitlines()) == 1, (verb, r.stderr)
        assert r.stderr.startswith("chkpt: error: ") and why in r.stderr, (verb, r.stderr)
    for target in (out, manifest):
        r = run(["-c", "import sys, chkpt; chkpt.load(sys.argv[1])", target], tmp_path)
        assert r.stderr.splitlines()[-1].startswith("chkpt.SnapshotError: ")
        assert why in r.stderr, r.stderr
    r = run(["-c", "import sys, chkpt; chkpt.snapshots(sys.argv[1])", out], tmp_path)
    assert why in r.stderr.splitlines()[-1], r.stderr
    # a script pointed at it runs as usual, says so once, writes nothing
    r = chkpt(["-f", "-1", "-z", "0", "-o", out, script], tmp_path)
    assert r.returncode == 0 and r.stdout == "job done\n"
    (line,) = chkpt_lines(r.stderr)
    assert why in line and "no snapshots will be written" in line
    after = sorted((p.relative_to(out), p.read_bytes())
                   for p in out.rglob("*") if p.is_file())
    assert after == before
    assert not (tmp_path / "x.pkl").exists()


# ---------------------------------------------------------------------------
# A load that runs out of mappings

BIG_ARRAY = '''
import numpy as np
from chkpt import Checkpoint
ck = Checkpoint.get_global_singleton()
# 64 chunks of 1 MiB and a last one of one page (the only file of its size)
big = np.arange(8 * 2**20 + 512, dtype=np.float64)
ck.snapshot()
'''

# Loads argv[1] with only a few mappings left to the process (each mapped
# chunk is one: vm.max_map_count is reached at 64 GiB of chunks). Prints
# "equal", or "SnapshotError: ..." and exits 3.
LOAD_WITH_FEW_MAPPINGS = '''
import ctypes, mmap, sys
import numpy as np
import chkpt
try:
    chkpt.load(sys.argv[1])      # the allocator's arenas exist before
except chkpt.SnapshotError:
    pass
libc = ctypes.CDLL(None, use_errno=True)
libc.mmap.restype = ctypes.c_void_p
libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int,
                      ctypes.c_int, ctypes.c_int, ctypes.c_long]
libc.mprotect.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
PAGE = mmap.PAGESIZE
limit = int(open("/proc/sys/vm/max_map_count").read())
size = 2 * (limit + 10) * PAGE
base = libc.mmap(None, size, 3, 0x22 | 0x4000, -1, 0)   # anonymous, noreserve
assert base not in (None, ctypes.c_void_p(-1).value)
pages = [base + 2 * i * PAGE for i in range(limit + 10)]
n = 0
for p in pages:                 # every other page PROT_NONE: one more each
    if libc.mprotect(p, PAGE, 0) != 0:
        break
    n += 1
assert n < len(pages) and ctypes.get_errno() == 12, (n, ctypes.get_errno())
for p in pages[n - 20:n]:       # 40 mappings left: 64 chunks do not fit
    libc.mprotect(p, PAGE, 3)
try:
    v = chkpt.load(sys.argv[1])
except chkpt.SnapshotError as e:
    libc.munmap(base, size)
    print("SnapshotError:", e)
    sys.exit(3)
libc.munmap(base, size)
want = np.arange(8 * 2**20 + 512, dtype=np.float64)
assert v["big"].flags.writeable
v["big"][0] = 1.0               # copy-on-write, mapped or read
want[0] = 1.0
print("equal" if np.array_equal(v["big"], want) else "different")
'''


def max_map_count():
    try:
        return int(Path("/proc/sys/vm/max_map_count").read_text())
    except (OSError, ValueError):
        return None


@pytest.mark.skipif(max_map_count() is None,
                    reason="Linux's vm.max_map_count is what this runs into")
@pytest.mark.skipif((max_map_count() or 0) > 1_000_000,
                    reason="vm.max_map_count is raised on this machine: "
                    "using up that many mappings takes too long")
def test_load_past_the_limit_on_mappings_reads_and_still_checks(tmp_path):
    script = write(tmp_path / "big.py", BIG_ARRAY)
    out = tmp_path / "out"
    r = chkpt(["-f", "-1", "-o", out, script], tmp_path)
    assert r.returncode == 0 and not chkpt_lines(r.stderr), r.stderr
    (manifest,) = manifests(out)
    r = run(["-c", LOAD_WITH_FEW_MAPPINGS, manifest], tmp_path)
    assert r.returncode == 0 and r.stdout.strip() == "equal", r.stdout + r.stderr
    # the last chunk (one page) is read, not mapped: its damage is found too
    (last,) = [p for p in chunk_files(out) if p.stat().st_size == 4096 + 40]
    flip(last, 100)
    r = run(["-c", LOAD_WITH_FEW_MAPPINGS, manifest], tmp_path)
    assert r.returncode == 3, r.stdout + r.stderr
    assert "is damaged (checksum mismatch)" in r.stdout, r.stdout
