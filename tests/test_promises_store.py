"""README promises about the store and how chkpt is installed that no other
test held (issue 25, point 1):

- `export --portable`: the script's classes (and its sibling modules')
  travel inside the file; modules from a directory the script put on
  `sys.path` itself are named, not carried;
- snapshot files are created 0600 and directories 0700, whatever the umask;
- a store not owned by the user, or writable by others, is refused: by
  every verb and by a run that would write into it (one `chkpt:` line, the
  script goes on, nothing written there);
- `pip install .` into a fresh virtualenv gives a chkpt that works from any
  directory, without the checkout.

Real scripts and verbs in subprocesses."""
import os
import shutil
import stat
import subprocess
import sys
import textwrap

import pytest

import chkpt
from conftest import REPO, chkpt_env, chkpt_lines, run_chkpt, run_python


def write(path, text):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))
    return path


def tree(root):
    """{relative path: (mode, uid, size, mtime_ns)} of everything under root."""
    out = {}
    for dirpath, dirs, files in os.walk(root):
        for n in dirs + files:
            p = os.path.join(dirpath, n)
            st = os.lstat(p)
            out[os.path.relpath(p, root)] = (st.st_mode, st.st_uid, st.st_size,
                                             st.st_mtime_ns)
    return out


# ---------------------------------------------------------------------------
# export --portable

LIBMOD = '''\
class LibThing:
    def __init__(self, v):
        self.v = v

    def tag(self):
        return "LIB-AS-SAVED"
'''

PORTABLE_SCRIPT = '''\
import os, sys
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "lib"))
from chkpt import Checkpoint
from libmod import LibThing
from helpers import Helper


class Mine:
    def __init__(self, v):
        self.v = v

    def tag(self):
        return "MINE-CARRIED-%d" % self.v


lib = LibThing(1)
helper = Helper(2)
mine = Mine(3)
Checkpoint.get_global_singleton().snapshot("portable")
'''

HELPERS = '''\
class Helper:
    def __init__(self, v):
        self.v = v

    def tag(self):
        return "HELPER-CARRIED-%d" % self.v
'''

READER = '''\
import pickle, sys
sys.path[:0] = sys.argv[2:]
try:
    d = pickle.load(open(sys.argv[1], "rb"))
except ModuleNotFoundError as e:
    print("MISSING", e.name)
    raise SystemExit(0)
print("LOADED", sorted(d))
print(d["mine"].tag(), d["helper"].tag(), d["lib"].tag())
print("LIB FROM", sys.modules[type(d["lib"]).__module__].__file__)
print("IMPORTED", sorted(m for m in ("chkpt", "helpers", "libmod") if m in sys.modules))
'''


def test_export_portable_carries_the_scripts_code_and_names_sys_path_modules(tmp_path):
    proj = tmp_path / "proj"
    write(proj / "job.py", PORTABLE_SCRIPT)
    write(proj / "helpers.py", HELPERS)
    lib = write(proj / "lib" / "libmod.py", LIBMOD)
    store = tmp_path / "store"
    r = run_chkpt(["-f", "-1", "-z", "0", "-o", store, "job.py"], proj)
    assert r.returncode == 0 and r.stderr == "", r.stderr
    away = tmp_path / "away"
    away.mkdir()
    out = away / "vars.pkl"
    r = run_chkpt(["export", "--portable", store, out], away)
    assert r.returncode == 0, r.stderr
    assert r.stdout == f"exported 3 variable(s) to {out}\n"
    assert chkpt_lines(r.stderr) == []
    data = out.read_bytes()
    # carried: the code of the script's class and its sibling module's
    assert b"MINE-CARRIED-" in data and b"HELPER-CARRIED-" in data
    # named: libmod by its name, none of its code
    assert b"libmod" in data and b"LIB-AS-SAVED" not in data
    # the script and its sibling are gone; libmod's code changed since
    (proj / "job.py").unlink()
    (proj / "helpers.py").unlink()
    lib.write_text(LIBMOD.replace("LIB-AS-SAVED", "LIB-EDITED-SINCE"))
    write(away / "reader.py", READER)
    # a process without chkpt (PYTHONPATH unset) and without the script
    no_chkpt = {"PYTHONPATH": None}
    r = run_python(["reader.py", out, proj / "lib"], away, env=no_chkpt)
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines() == [
        "LOADED ['helper', 'lib', 'mine']",
        "MINE-CARRIED-3 HELPER-CARRIED-2 LIB-EDITED-SINCE",
        f"LIB FROM {proj / 'lib' / 'libmod.py'}",
        "IMPORTED ['libmod']"]
    # without the directory on sys.path, libmod is missing: it is not inside
    r = run_python(["reader.py", out], away, env=no_chkpt)
    assert (r.returncode, r.stdout, r.stderr) == (0, "MISSING libmod\n", "")


# ---------------------------------------------------------------------------
# file modes

MODES_SCRIPT = '''\
from chkpt import Checkpoint
ck = Checkpoint.get_global_singleton()
blob = bytes(range(256)) * 8192          # 2 MiB: data chunks
names = ["a", "b"]
ck.snapshot("one")
blob = blob[::-1]
ck.snapshot("two")
1 / 0                                     # and a crash snapshot
'''


def test_store_files_are_0600_and_directories_0700_whatever_the_umask(tmp_path):
    write(tmp_path / "job.py", MODES_SCRIPT)
    store = tmp_path / "store"
    cmd = [sys.executable, "-m", "chkpt", "-f", "-1", "-z", "0", "-o", str(store), "job.py"]
    r = subprocess.run(cmd, cwd=tmp_path, env=chkpt_env(), capture_output=True, text=True,
                       preexec_fn=lambda: os.umask(0), timeout=120)
    assert r.returncode == 1 and "ZeroDivisionError" in r.stderr, r.stderr
    # ... and the verbs that write into it
    assert run_chkpt(["gc", store, "--keep", "2"], tmp_path).returncode == 0
    assert run_chkpt(["verify", store], tmp_path).returncode == 0
    entries = tree(store)
    assert len([p for p in entries if p.startswith("snapshots" + os.sep)]) == 2
    assert any(p.startswith("chunks" + os.sep) and stat.S_ISREG(m[0])
               for p, m in entries.items())
    assert stat.S_IMODE(store.stat().st_mode) == 0o700
    wrong = {p: oct(stat.S_IMODE(m[0])) for p, m in entries.items()
             if stat.S_IMODE(m[0]) != (0o700 if stat.S_ISDIR(m[0]) else 0o600)}
    assert wrong == {}


# ---------------------------------------------------------------------------
# a store that is not the user's

STORE_SCRIPT = '''\
from chkpt import Checkpoint
ck = Checkpoint.get_global_singleton()
data = list(range(1000))
label = "first run"
ck.snapshot("m")
ck.wait()


def fail(v):
    return v / 0


fail(label)
'''

WRITER_SCRIPT = '''\
from chkpt import Checkpoint
ck = Checkpoint.get_global_singleton()
data = list(range(2000))
print("snapshot", ck.snapshot("second"), flush=True)
print("went on", flush=True)
'''

# (how the store is made untrusted, what the refusal says)
UNTRUSTED = {
    "owned-by-another-user": "is owned by uid 65534",
    "writable-by-others": "is writable by others",
}


@pytest.fixture(params=sorted(UNTRUSTED))
def untrusted(request, tmp_path):
    """A real store (a manual and a crash snapshot), then made untrusted;
    yields (store, reason the refusal gives, the tree as it was)."""
    if request.param == "owned-by-another-user" and os.geteuid() != 0:
        pytest.skip("making a store owned by another user needs root")
    proj = tmp_path / "proj"
    write(proj / "job.py", STORE_SCRIPT)
    store = tmp_path / "store"
    r = run_chkpt(["-f", "-1", "-z", "0", "-o", store, "job.py"], proj)
    assert r.returncode == 1 and "TypeError" in r.stderr, r.stderr
    kinds = [s.kind for s in chkpt.snapshots(str(store))]
    assert kinds == ["manual", "crash"]
    if request.param == "owned-by-another-user":
        for dirpath, dirs, files in os.walk(store):
            for n in [dirpath] + [os.path.join(dirpath, f) for f in files]:
                os.chown(n, 65534, 65534)
    else:
        store.chmod(0o777)
    before = tree(store)
    yield store, UNTRUSTED[request.param], before
    # give it back, for tmp_path's cleanup
    for dirpath, dirs, files in os.walk(store):
        for n in [dirpath] + [os.path.join(dirpath, f) for f in files]:
            os.chown(n, os.getuid(), os.getgid())
    store.chmod(0o700)


def assert_refused(r, reason):
    assert r.returncode == 1, (r.stdout, r.stderr)
    assert r.stdout == ""
    lines = r.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("chkpt: error: "), r.stderr
    assert reason in lines[0]


def test_loading_verbs_refuse_an_untrusted_store(untrusted, tmp_path):
    store, reason, before = untrusted
    away = tmp_path / "away"
    away.mkdir()
    newest = sorted((store / "snapshots").glob("*.ckpt"))[-1]
    for args, stdin in [(["export", store, away / "out.pkl"], None),
                        (["export", "--portable", newest, away / "out.pkl"], None),
                        (["explore", store], "print('RAN')\n"),
                        (["debug", store], "p label\nq\n")]:
        r = run_chkpt(args, away, input=stdin)
        assert_refused(r, reason)
    assert list(away.iterdir()) == []
    r = run_python(["-c", f'''
import chkpt
for s in [{str(store)!r}, {str(newest)!r}]:
    try:
        chkpt.load(s)
    except chkpt.SnapshotError as e:
        print("REFUSED", "refusing to load" in str(e), {reason!r} in str(e))
'''], away)
    assert r.stdout == "REFUSED True True\n" * 2, r.stderr
    assert tree(store) == before


def test_gc_refuses_an_untrusted_store_and_reading_verbs_still_read_it(
        untrusted, tmp_path):
    """README: gc deletes nothing in a store that is not yours or that
    others can write; ls, show and verify, which never unpickle, still
    read it (a colleague's results are listed, not loaded)."""
    store, reason, before = untrusted
    away = tmp_path / "away"
    away.mkdir()
    assert_refused(run_chkpt(["gc", store, "--keep", "0"], away), reason)
    assert tree(store) == before            # gc removed nothing
    r = run_chkpt(["ls", store], away)
    assert r.returncode == 0 and r.stderr == "", r.stderr
    assert r.stdout.splitlines()[-1].startswith(f"2 snapshot(s) in {store}"), r.stdout
    r = run_chkpt(["show", store], away)
    assert r.returncode == 0 and r.stderr == "" and "label" in r.stdout, r
    r = run_chkpt(["verify", store], away)
    assert r.returncode == 0, (r.stdout, r.stderr)
    assert tree(store) == before


def test_a_run_does_not_write_into_an_untrusted_store(untrusted, tmp_path):
    store, reason, before = untrusted
    work = tmp_path / "work"
    write(work / "again.py", WRITER_SCRIPT)
    r = run_chkpt(["-f", "-1", "-z", "0", "-o", store, "again.py"], work)
    assert (r.returncode, r.stdout) == (0, "snapshot None\nwent on\n"), r.stderr
    lines = r.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("chkpt: "), r.stderr
    assert str(store) in lines[0] and reason in lines[0]
    assert tree(store) == before


# ---------------------------------------------------------------------------
# pip install .

INSTALLED_SCRIPT = '''\
from chkpt import Checkpoint
ck = Checkpoint.get_global_singleton()
table = {i: str(i) * 3 for i in range(5000)}
ck.snapshot("installed")
print("done", flush=True)
'''


def test_pip_install_into_a_fresh_venv_works_from_another_directory(tmp_path):
    # a copy of what `pip install .` reads (no in-place build in it: the
    # checkout's own .so must not be what gets installed)
    src = tmp_path / "src"
    src.mkdir()
    for f in ("pyproject.toml", "setup.py", "README.md"):
        shutil.copy(os.path.join(REPO, f), src / f)
    ignore = shutil.ignore_patterns("*.so", "__pycache__", "*.o")
    for d in ("chkpt", "src"):
        shutil.copytree(os.path.join(REPO, d), src / d, ignore=ignore)
    assert not list(src.rglob("*.so"))
    venv = tmp_path / "venv"
    r = subprocess.run([sys.executable, "-m", "venv", str(venv)],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    vpy = venv / "bin" / "python"
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "PYTHONHOME", "CHKPT_TEST_PYTHONPATH")}
    r = subprocess.run([str(vpy), "-m", "pip", "install", "-q", str(src)],
                       cwd=tmp_path, env=env, capture_output=True, text=True,
                       timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    # elsewhere: a script in its own directory, nothing of the checkout
    work = tmp_path / "elsewhere" / "job"
    write(work / "job.py", INSTALLED_SCRIPT)
    env["PYTHONHASHSEED"] = "0"

    def run(*args, cwd=work):
        return subprocess.run([str(vpy), *map(str, args)], cwd=cwd, env=env,
                              capture_output=True, text=True, timeout=120)

    r = run("-c", "import chkpt, chkpt._chkpt as c; print(chkpt.__file__); print(c.__file__)")
    site = str(venv / "lib")
    assert r.returncode == 0, r.stderr
    assert all(l.startswith(site) for l in r.stdout.splitlines()), r.stdout
    r = run("-m", "chkpt", "-f", "-1", "-z", "0", "job.py")
    assert (r.returncode, r.stdout, r.stderr) == (0, "done\n", "")
    r = run("-m", "chkpt", "ls", work / "checkpoints", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    rows = r.stdout.splitlines()
    assert len(rows) == 3 and " manual " in rows[1] and "installed" in rows[1]
    assert rows[1].endswith("1: table")
    r = run("-c", "import chkpt; d = chkpt.load('checkpoints'); "
            "print(len(d['table']), d['table'][4999])")
    assert (r.returncode, r.stdout) == (0, "5000 499949994999\n"), r.stderr
