"""What goes into a snapshot: salience, tracked objects, -z, unpicklable
objects, the metadata, sources, and chkpt never breaking the script."""
import json
import sys

from snapshot_util import chkpt, chkpt_lines, manifests, run, write

SALIENCE = '''
import sys
import numpy as np
from chkpt import Checkpoint


class Holder:
    def __init__(self, data):
        self.data = data


small_list = list(range(100))
big_list = [float(i) for i in range(300_000)]     # ~9.6 MB held, 2.4 MB shallow
big_dict = {i: str(i) for i in range(20_000)}    # ~2.5 MB held
big_text = "x" * 2_000_000
small_arr = np.zeros(10)
big_arr = np.zeros(300_000)                          # 2.4 MB
holder = Holder([float(i) for i in range(100_000)])
tiny_holder = Holder(1)
ck = Checkpoint.get_global_singleton()
kept = ck.track([1, 2])                             # tracked: always saved
info = ck.snapshot()
print(sorted(info.variables))


def helper():
    local_big = bytes(3_000_000)
    local_small = 5
    return ck.snapshot("in-function")


print(sorted(helper().variables))
'''


def snapped(r):
    return [eval(line) for line in r.stdout.splitlines() if line.startswith("[")]


def test_default_threshold_is_what_objects_hold(tmp_path):
    write(tmp_path / "s.py", SALIENCE)
    r = chkpt(["-f", "-1", "s.py"], tmp_path, check=0)
    top, inner = snapped(r)
    assert top == sorted(["big_list", "big_dict", "big_text", "big_arr", "holder", "kept"])
    # locals first, then the module's globals
    assert inner == sorted(top + ["local_big"])


def test_explicit_threshold(tmp_path):
    write(tmp_path / "s.py", SALIENCE)
    r = chkpt(["-f", "-1", "-z", "5000000", "s.py"], tmp_path, check=0)
    top, _ = snapped(r)
    assert top == ["big_list", "kept"]


def test_tracked_only(tmp_path):
    write(tmp_path / "s.py", SALIENCE)
    r = chkpt(["-f", "-1", "-z", "-1", "s.py"], tmp_path, check=0)
    top, inner = snapped(r)
    assert top == ["kept"] and inner == ["kept"]


def test_zero_means_every_data_object_but_no_definitions(tmp_path):
    write(tmp_path / "s.py", SALIENCE)
    r = chkpt(["-f", "-1", "-z", "0", "s.py"], tmp_path, check=0)
    top, _ = snapped(r)
    assert top == sorted(["small_list", "big_list", "big_dict", "big_text", "small_arr",
                          "big_arr", "holder", "tiny_holder", "kept"])
    # never: modules (sys, np), classes (Holder), functions (helper), the
    # Checkpoint (ck), dunders (__name__, __file__ ...)


UNPICKLABLE = '''
import threading
try:
    from chkpt import Checkpoint
    ck = Checkpoint.get_global_singleton()
except (ImportError, AssertionError):
    ck = None


class Bad:
    def __reduce__(self):
        raise RuntimeError("no pickling for you")


lock = threading.Lock()
gen = (i for i in range(3))
bad = Bad()
handlers = [lambda x: x]
fine = {"a": 1}
for i in range(3):
    fine["a"] = i
    print("step", i)
    if ck is not None:
        info = ck.snapshot(f"s{i}")
        print("saved" if info is not None else "none")
    else:
        print("saved")
print("done", sorted(fine.items()))
'''


def test_unpicklable_objects_are_reported_once_and_the_script_goes_on(tmp_path):
    write(tmp_path / "u.py", UNPICKLABLE)
    plain = run(["u.py"], tmp_path, check=0)
    r = chkpt(["-f", "-1", "-z", "0", "u.py"], tmp_path, check=0)
    assert r.stdout == plain.stdout
    warnings = chkpt_lines(r.stderr)
    assert len(warnings) == 4, r.stderr
    for name in ("lock", "gen", "bad", "handlers"):
        assert sum(f"'{name}'" in w for w in warnings) == 1, warnings
    assert any("no pickling for you" in w for w in warnings)
    # reported at exit, after the script's own output, with the count
    assert all(w.endswith("(left out of 3 snapshots)") for w in warnings), warnings
    assert r.stderr.splitlines()[-4:] == warnings
    ms = manifests(tmp_path / "checkpoints")
    assert len(ms) == 3
    r = run(["-c", "import chkpt; s = chkpt.snapshots();"
             "print([i.variables for i in s], chkpt.load(s[-1])['fine'])"], tmp_path,
            check=0)
    assert r.stdout.strip() == "[['fine', 'i'], ['fine', 'i'], ['fine', 'i']] {'a': 2}"


META = '''
import json
from chkpt import Checkpoint
import sibling

ck = Checkpoint.get_global_singleton()
text = "y" * 1_000_000
obj = sibling.Thing()
info = ck.snapshot("meta-check")
print(json.dumps(info.meta))
'''


def test_meta_document(tmp_path):
    write(tmp_path / "m.py", META)
    write(tmp_path / "sibling.py", "class Thing:\n    pass\n")
    r = chkpt(["-f", "-1", "-z", "0", "m.py"], tmp_path, check=0)
    meta = json.loads(r.stdout.strip().splitlines()[-1])
    assert meta["format"] == 1
    assert meta["name"] == "meta-check" and meta["kind"] == "manual"
    assert meta["script"] == str(tmp_path / "m.py") and meta["line"] == 9
    assert meta["function"] == "<module>"
    assert meta["python"] == "%d.%d.%d" % sys.version_info[:3]
    assert meta["chkpt"] and isinstance(meta["time"], float)
    by_name = {v["name"]: v for v in meta["variables"]}
    assert set(by_name) == {"text", "obj"}
    t = by_name["text"]
    assert t["type"] == "builtins.str" and t["size"] >= 1_000_000
    assert len(t["repr"]) <= 160 and t["repr"].startswith("'yyy")
    assert isinstance(t["pickle"], int) and t["buffers"] == []
    o = by_name["obj"]
    assert o["type"] == "sibling.Thing" and ["sibling", "Thing"] in o["module_refs"]
    assert meta["size"] == sum(v["size"] for v in meta["variables"])
    assert set(meta["sources"]) == {"__main__", "sibling"}
    assert meta["sources"]["sibling"]["path"] == str(tmp_path / "sibling.py")
    assert meta["skipped"] == []


REENTRANT = '''
from chkpt import Checkpoint
ck = Checkpoint.get_global_singleton()


class Sneaky:
    def __reduce__(self):
        assert ck.snapshot("inner") is None      # ignored while snapshotting
        return (Sneaky, ())


s = Sneaky()
info = ck.snapshot("outer")
print(info.name, info.variables)
'''


def test_reentrant_snapshot_is_ignored(tmp_path):
    write(tmp_path / "r.py", REENTRANT)
    r = chkpt(["-f", "-1", "-z", "0", "r.py"], tmp_path, check=0)
    assert r.stdout.strip() == "outer ['s']"
    assert len(manifests(tmp_path / "checkpoints")) == 1


def test_unusable_store_warns_once(tmp_path):
    (tmp_path / "afile").write_text("not a directory")
    write(tmp_path / "s.py", '''
        from chkpt import Checkpoint
        ck = Checkpoint.get_global_singleton()
        data = [1, 2, 3]
        print(ck.snapshot(), ck.snapshot())
    ''')
    r = chkpt(["-f", "-1", "-z", "0", "-o", "afile/store", "s.py"], tmp_path, check=0)
    assert r.stdout.strip() == "None None"
    assert len(chkpt_lines(r.stderr)) == 1, r.stderr


AUTO = '''
import time
from chkpt import Checkpoint
ck = Checkpoint.get_global_singleton()
values = []
end = time.monotonic() + 1.0
while time.monotonic() < end:
    values.append(len(values))
    time.sleep(0.001)
print("ran")
'''


def test_automatic_snapshots(tmp_path):
    write(tmp_path / "a.py", AUTO)
    chkpt(["-f", "100", "-z", "0", "a.py"], tmp_path, check=0)
    ms = manifests(tmp_path / "checkpoints")
    assert ms, "no automatic snapshot was taken"
    r = run(["-c", "import chkpt; s = chkpt.snapshots(); "
             "print({i.kind for i in s}, 'values' in s[-1].variables)"], tmp_path, check=0)
    assert r.stdout.strip() == "{'auto'} True"


def test_automatic_snapshot_with_nothing_salient_writes_nothing(tmp_path):
    write(tmp_path / "a.py", AUTO)
    r = chkpt(["-f", "100", "-z", "-1", "a.py"], tmp_path, check=0)
    assert r.stdout.strip() == "ran"
    assert manifests(tmp_path / "checkpoints") == [] or not (tmp_path / "checkpoints").exists()


HOSTILE = '''
from chkpt import Checkpoint


class Forever:
    def __reduce__(self):
        while True:
            pass


stuck = Forever()
fine = [1, 2, 3]
info = Checkpoint.get_global_singleton().snapshot()
print("after", info.variables)
'''


def test_a_reduce_that_never_returns_is_skipped(tmp_path):
    write(tmp_path / "h.py", HOSTILE)
    r = chkpt(["-f", "-1", "-z", "0", "h.py"], tmp_path, check=0, timeout=60)
    assert r.stdout.strip() == "after ['fine']"
    warnings = chkpt_lines(r.stderr)
    assert len(warnings) == 1 and "'stuck'" in warnings[0] and "TimeoutError" in warnings[0]


def test_pickling_leaves_the_scripts_classes_as_they_were(tmp_path):
    write(tmp_path / "c.py", '''
        from chkpt import Checkpoint


        class Plain:
            def __init__(self):
                self.v = 1


        obj = Plain()
        before = sorted(vars(Plain))
        Checkpoint.get_global_singleton().snapshot()
        assert sorted(vars(Plain)) == before, set(vars(Plain)) - set(before)
        print("unchanged")
    ''')
    r = chkpt(["-f", "-1", "-z", "0", "c.py"], tmp_path, check=0)
    assert r.stdout.strip() == "unchanged"


THREADS = '''
import sys
import threading
import numpy as np
sys.setswitchinterval(1e-6)     # the meddling thread runs inside the capture
from chkpt import Checkpoint

ck = Checkpoint.get_global_singleton()
data = np.ones(8_000_000)               # 61 MiB: the store I/O takes a while
stop = False


def meddle():
    i = 0
    while not stop:
        ck.output_dir = f"store{i % 2}"
        i += 1


t = threading.Thread(target=meddle)
t.start()
infos = [ck.snapshot() for _ in range(5)]
stop = True
t.join()
print(sum(i is not None for i in infos))
'''


def test_output_dir_changed_by_another_thread_during_a_snapshot(tmp_path):
    write(tmp_path / "t.py", THREADS)
    r = chkpt(["-f", "-1", "t.py"], tmp_path, check=0)
    assert r.stdout.strip() == "5", r.stderr


def test_with_verbose_the_unsaved_variable_is_reported_at_once(tmp_path):
    write(tmp_path / "u.py", UNPICKLABLE)
    r = chkpt(["-v", "-f", "-1", "-z", "0", "u.py"], tmp_path, check=0)
    lock_lines = [l for l in chkpt_lines(r.stderr) if "'lock'" in l]
    assert len(lock_lines) == 1 and "left out of" not in lock_lines[0]
