"""Property tests (hypothesis) of chkpt's Python surface.

(a) round trip: generated builtin data and numpy arrays, captured by a real
    script under `python -m chkpt`, load back equal (one chkpt run per
    example: the values travel to the script in a plain pickle, and the
    arrays' layouts are made inside the script (BUILD), since a pickle
    would turn views, negative strides, broadcasts and read-only arrays
    into plain contiguous ones before chkpt saw them);
(b) damage: bytes flipped, overwritten or cut in the manifest and chunk
    files of a real snapshot: chkpt.load raises chkpt.SnapshotError or gives
    data equal to the original; never another exception, never wrong data,
    never a crash (loads run in a subprocess, a segfault fails the test);
(c) chkpt.snapshots(dir) never raises because one manifest is damaged.

Equality is checked on a canonical form (CANON below): type names, floats by
their bits (nan, -0.0), sets and dict items in a stable order, arrays by
dtype, shape, contiguity and raw bytes.
"""
import json
import os
import pickle
import shutil
import sys
import tempfile
import textwrap
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st
from hypothesis.extra import numpy as hnp

from conftest import chkpt_lines, run_chkpt, run_python

SETTINGS = dict(deadline=None, derandomize=False,
                suppress_health_check=[HealthCheck.function_scoped_fixture,
                                       HealthCheck.too_slow,
                                       HealthCheck.data_too_large])

CANON = '''
import math
import struct

def canon(x, depth=0):
    """A hashable, order-stable description of x that differs whenever two
    values would not be interchangeable (types, float bits, array layout)."""
    t = type(x)
    if x is None or t is bool:
        return (t.__name__, x)
    if t is int:
        return ("int", x)
    if t is float:
        return ("float", struct.pack("<d", x).hex())
    if t is complex:
        return ("complex", struct.pack("<dd", x.real, x.imag).hex())
    if t in (str, bytes, bytearray):
        return (t.__name__, bytes(x, "utf-8", "surrogatepass") if t is str else bytes(x))
    if t in (list, tuple):
        return (t.__name__, tuple(canon(i, depth + 1) for i in x))
    if t in (set, frozenset):
        return (t.__name__, tuple(sorted((canon(i, depth + 1) for i in x), key=repr)))
    if t is dict:
        return ("dict", tuple((canon(k, depth + 1), canon(v, depth + 1))
                              for k, v in x.items()))
    import collections
    if t is collections.deque:
        return ("deque", x.maxlen, tuple(canon(i, depth + 1) for i in x))
    if t in (collections.OrderedDict, collections.Counter):
        return (t.__name__, tuple((canon(k, depth + 1), canon(v, depth + 1))
                                  for k, v in x.items()))
    if t is collections.defaultdict:
        return ("defaultdict", repr(x.default_factory),
                tuple((canon(k, depth + 1), canon(v, depth + 1))
                      for k, v in x.items()))
    try:
        import numpy as np
    except ImportError:
        np = None
    if np is not None and isinstance(x, np.ndarray):
        head = ("ndarray", t.__name__, x.dtype.str, repr(x.dtype), x.shape,
                bool(x.flags.c_contiguous), bool(x.flags.f_contiguous),
                bool(x.flags.writeable))
        if x.dtype.hasobject:
            return head + (canon(x.tolist(), depth + 1),)
        return head + (np.ascontiguousarray(x).tobytes().hex(),)
    if np is not None and isinstance(x, np.generic):
        return ("npscalar", x.dtype.str, x.tobytes().hex())
    return ("other", t.__module__, t.__qualname__, repr(x))
'''

# Makes an array's layout where the array is used: a value ("__array__",
# BASE, EXPR) becomes EXPR evaluated with `a` = BASE (a plain contiguous
# array, which a pickle keeps as it is).
BUILD = '''
def readonly(a):
    a = a.copy()
    a.flags.writeable = False
    return a


def big(a, strided):
    import numpy as np
    # several chunks (1 MiB) of the drawn dtype and order
    reps = max(1, (3 << 20) // max(a.nbytes, 1))
    b = np.tile(a.reshape(-1), min(reps, 4_000_000))
    return b[::3] if strided else b


def build(v):
    if type(v) is tuple and len(v) == 3 and v[0] == "__array__":
        import numpy as np
        return eval(v[2], {"np": np, "a": v[1], "readonly": readonly,
                           "big": big})
    return v
'''

# The script run under chkpt: loads the values, binds them to variables
# (arrays built to their layout here), snapshots once.
SCRIPT = BUILD + '''
import pickle, sys
from chkpt import Checkpoint
ck = Checkpoint.get_global_singleton()
with open(sys.argv[1], "rb") as f:
    values = pickle.load(f)
for _k, _v in values.items():
    _v = build(_v)
    globals()[_k] = _v
    if not isinstance(_v, (int, float, bool, type(None))):
        ck.track(_v)
del _k, _v, f
info = ck.snapshot("roundtrip")
print("saved", sorted(info.variables))
'''

# Loads the newest snapshot and compares it with the values (same pickle),
# and with what pickle itself gives for them; prints JSON.
CHECK_ROUNDTRIP = CANON + BUILD + '''
import json, pickle, sys
import chkpt
with open(sys.argv[1], "rb") as f:
    values = {k: build(v) for k, v in pickle.load(f).items()}
snaps = chkpt.snapshots(sys.argv[2])
loaded = chkpt.load(snaps[-1])
rep = {"missing": [], "differ": []}
for k, v in values.items():
    if k not in loaded:
        rep["missing"].append(k)
        continue
    ref = pickle.loads(pickle.dumps(v, protocol=5))   # layout as pickle gives it
    if canon(loaded[k]) != canon(ref) or canon(ref)[:1] != canon(v)[:1]:
        rep["differ"].append([k, repr(v)[:300], repr(loaded[k])[:300]])
# names= gives exactly the names asked for
first = sorted(values)[:1]
rep["names"] = sorted(chkpt.load(snaps[-1], names=first)) == first
print(json.dumps(rep))
'''

# ---------------------------------------------------------------------------
# strategies

floats = st.floats(allow_nan=True, allow_infinity=True) | st.sampled_from(
    [0.0, -0.0, float("nan"), -float("nan"), 5e-324, 1.7976931348623157e308])
ints = st.integers() | st.integers(min_value=-(2 ** 200), max_value=2 ** 200)
hashable_leaf = (st.none() | st.booleans() | ints | floats | st.text(max_size=20)
                 | st.binary(max_size=30))
hashable = st.recursive(hashable_leaf,
                        lambda c: st.tuples(c) | st.tuples(c, c) | st.frozensets(c, max_size=3),
                        max_leaves=8)
import collections  # noqa: E402
import datetime  # noqa: E402
import decimal  # noqa: E402
import fractions  # noqa: E402

stdlib_leaf = st.one_of(
    st.decimals(allow_nan=True, allow_infinity=True),
    st.fractions(),
    st.complex_numbers(allow_nan=True),
    st.datetimes(timezones=st.none() | st.just(datetime.timezone.utc)),
    st.timedeltas(),
    st.builds(range, st.integers(-50, 50), st.integers(-50, 50),
              st.integers(1, 5)),
    st.builds(slice, st.integers(), st.none() | st.integers()),
    st.binary(max_size=50).map(bytearray),
    st.just(Ellipsis),
)
leaf = (hashable_leaf | st.text(max_size=200) | st.binary(max_size=300)
        | stdlib_leaf)
builtin_data = st.recursive(
    leaf,
    lambda c: (st.lists(c, max_size=6)
               | st.tuples(c, c)
               | st.dictionaries(hashable, c, max_size=5)
               | st.sets(hashable, max_size=5)
               | st.frozensets(hashable, max_size=4)
               | st.lists(c, max_size=4).map(collections.deque)
               | st.dictionaries(hashable, c, max_size=4).map(collections.OrderedDict)
               | st.dictionaries(hashable, c, max_size=4).map(
                   lambda d: collections.defaultdict(list, d))
               | st.lists(st.text(max_size=3), max_size=8).map(collections.Counter)),
    max_leaves=40)

dtypes = st.sampled_from(
    ["bool", "int8", "uint8", "int16", ">i4", "<i8", "uint64", "float16",
     "float32", ">f8", "float64", "complex64", "complex128", "U3", "S5",
     "datetime64[ns]", "timedelta64[s]", "V4"]) | st.just([("a", "<i4"), ("b", "f8", (2,))])


# How the script lays out a drawn contiguous array `a` (BUILD): orders,
# views, negative and zero strides, read-only, several chunks.
LAYOUTS = {
    "c": "a",
    "f": "np.asfortranarray(a)",
    "step2": "a[::2]",
    "T": "a.T",
    "neg": "a[::-1]",
    "neg_last": "a[..., ::-1]",
    "step3": "a.reshape(-1)[::3]",
    "readonly": "readonly(a)",
    "readonly_view": "readonly(a)[::2]",
    "bcast": "np.broadcast_to(a, (3,) + a.shape)",
    "big": "big(np.asfortranarray(a), False)",
    "big_strided": "big(a, True)",
}


@st.composite
def arrays(draw):
    dt = np.dtype(draw(dtypes))
    shape = draw(hnp.array_shapes(min_dims=0, max_dims=4, min_side=0, max_side=7))
    if dt.kind in "biufc" and not dt.fields:
        a = draw(hnp.arrays(dt, shape))
    else:
        # bytes of any pattern for the other dtypes (datetimes incl. NaT)
        n = int(np.prod(shape)) * dt.itemsize
        raw = draw(st.binary(min_size=n, max_size=n))
        if dt.kind == "U":  # valid code points only
            a = np.frombuffer(np.frombuffer(raw, dtype="<u4") % 0xD800
                              if n else b"", dtype="<u4").view(dt)
            a = a.reshape(shape).copy()
        else:
            a = np.frombuffer(raw, dtype=dt).reshape(shape).copy()
    layout = draw(st.sampled_from(sorted(LAYOUTS)))
    if a.ndim == 0 and layout in ("step2", "neg", "neg_last", "readonly_view"):
        layout = "readonly"
    return ("__array__", a, LAYOUTS[layout])


@st.composite
def object_arrays(draw):
    """Object arrays of builtin data, laid out like the others."""
    items = draw(st.lists(builtin_data, min_size=0, max_size=6))
    a = np.empty(len(items), dtype=object)
    a[:] = items if items else a
    layout = draw(st.sampled_from(["c", "step2", "neg", "readonly", "bcast"]))
    return ("__array__", a, LAYOUTS[layout])


def value_batches():
    return st.dictionaries(
        st.from_regex(r"v_[a-z0-9]{1,6}", fullmatch=True),
        builtin_data | arrays() | object_arrays(), min_size=1, max_size=6)


def roundtrip(tmp_path, values, opts=()):
    d = Path(tempfile.mkdtemp(dir=tmp_path))
    (d / "s.py").write_text(SCRIPT)
    with open(d / "values.pkl", "wb") as f:
        pickle.dump(values, f, protocol=5)
    r = run_chkpt(["-f", "-1", "-z", "0", *opts, "s.py", "values.pkl"], d,
                  timeout=120)
    assert r.returncode == 0, r.stderr
    assert chkpt_lines(r.stderr) == [], r.stderr
    c = run_python(["-c", CHECK_ROUNDTRIP, "values.pkl", "checkpoints"], d,
                   timeout=120)
    assert c.returncode == 0, c.stderr
    rep = json.loads(c.stdout.splitlines()[-1])
    assert rep == {"missing": [], "differ": [], "names": True}, rep
    shutil.rmtree(d)


@settings(max_examples=20, **SETTINGS)
@given(values=value_batches())
def test_roundtrip_builtin_data_and_arrays(tmp_path, values):
    roundtrip(tmp_path, values)


@settings(max_examples=8, **SETTINGS)
@given(values=st.dictionaries(st.from_regex(r"a_[a-z]{1,4}", fullmatch=True),
                              arrays(), min_size=1, max_size=4),
       level=st.sampled_from(["1", "3", "19"]))
def test_roundtrip_arrays_compressed(tmp_path, values, level):
    roundtrip(tmp_path, values, opts=("--compress", level))


def test_roundtrip_known_edge_cases(tmp_path):
    """The examples hypothesis might not draw, checked every time; the
    layouts are made by the script itself."""
    base = np.arange(24, dtype=">f8").reshape(2, 3, 4)
    big = np.arange(600_000, dtype="f8").reshape(1000, 600)
    objs = np.empty(4, dtype=object)
    objs[:] = [1, "two", [3.0, None], {"k": b"v"}]
    struct = np.zeros(6, dtype=[("a", "<i4"), ("b", "f8", (2,))])
    struct["a"] = np.arange(6)

    def arr(a, expr):
        return ("__array__", a, expr)

    roundtrip(tmp_path, {
        "v_nan": [float("nan"), -0.0, float("inf")],
        "v_empty": [[], {}, (), set(), frozenset(), "", b""],
        "v_zero": arr(np.zeros((0, 5), dtype="int32"), "a"),
        "v_zero_f": arr(np.zeros((3, 0)), "np.asfortranarray(a)"),
        "v_zero_view": arr(np.zeros((4, 6)), "a[:, 6:]"),
        "v_scalar0d": arr(np.array(3.5), "a"),
        "v_fort": arr(base, "np.asfortranarray(a)"),
        "v_view": arr(base, "a[:, ::2, 1::2]"),
        "v_neg": arr(base, "a[::-1]"),
        "v_step3": arr(np.arange(30.0), "a[::3]"),
        "v_bcast": arr(np.arange(4.0), "np.broadcast_to(a, (1000, 4))"),
        "v_readonly": arr(base, "readonly(a)"),
        "v_readonly_view": arr(base, "readonly(a)[:, ::-1]"),
        "v_big_f": arr(big, "np.asfortranarray(a)"),
        "v_big_strided": arr(big, "a[::2, ::3]"),
        "v_objects": arr(objs, "a[::-1]"),
        "v_struct": arr(struct, "a[::2]"),
        "v_bigint": 2 ** 1000 - 1,
        "v_nested": {"a": [({1, 2}, frozenset({"x"}))], (1, "t"): b"\x00" * 5000},
    })
    # the layouts really reached the script
    r = run_python(["-c", BUILD + textwrap.dedent("""
        import numpy as np
        a = np.arange(24.0).reshape(2, 3, 4)
        v = [build(("__array__", a, e)) for e in
             ("a[:, ::2, 1::2]", "a[::-1]", "np.asfortranarray(a)",
              "readonly(a)", "np.broadcast_to(a, (2,) + a.shape)")]
        print([(x.flags.c_contiguous, x.flags.f_contiguous,
                x.flags.writeable, min(x.strides)) for x in v])
    """)], tmp_path)
    assert r.stdout.strip() == str([
        (False, False, True, 16), (False, False, True, -96),
        (False, True, True, 8), (True, False, False, 8),
        (False, False, False, 0)]), r.stdout + r.stderr


# ---------------------------------------------------------------------------
# (b) damage

STORE_SCRIPT = '''
import numpy as np
from chkpt import Checkpoint
ck = Checkpoint.get_global_singleton()
arr = np.arange(400_000, dtype="f8").reshape(800, 500)    # 3.2 MB: 4 chunks
text = "t" * 5000                                        # chunked pickle
small = {"k": [1, 2.5, None], "n": float("nan")}
ck.snapshot("one")
small["k"].append(3)
ck.snapshot("two")
arr[0, 0] = -1.0
ck.snapshot("three")
'''

# Loads every damaged copy given on the command line (each a store whose
# newest snapshot is compared with the expected canon in expected.json);
# prints one verdict per store: "equal", "SnapshotError" or what went wrong.
CHECK_DAMAGE = CANON + '''
import json, sys, glob, os
import chkpt
expected = json.load(open(sys.argv[1]))
out = []
for store in sys.argv[2:]:
    m = sorted(glob.glob(os.path.join(store, "snapshots", "*.ckpt")))
    verdicts = []
    for path in m:
        want = expected.get(os.path.basename(path))
        try:
            v = chkpt.load(path)
        except chkpt.SnapshotError as e:
            verdicts.append("SnapshotError")
            continue
        except BaseException as e:
            verdicts.append("other exception %s: %s" % (type(e).__name__, e))
            continue
        got = repr(sorted((k, canon(x)) for k, x in v.items()))
        verdicts.append("equal" if got == want else "WRONG DATA")
    out.append(verdicts)
print(json.dumps(out))
'''

EXPECTED = CANON + '''
import json, sys, glob, os
import chkpt
res = {}
for path in sorted(glob.glob(os.path.join(sys.argv[1], "snapshots", "*.ckpt"))):
    v = chkpt.load(path)
    res[os.path.basename(path)] = repr(sorted((k, canon(x)) for k, x in v.items()))
json.dump(res, open(sys.argv[2], "w"))
'''


@pytest.fixture(scope="module", params=["raw", "zstd"])
def pristine(request, tmp_path_factory):
    """A real store with three snapshots sharing chunks, and the canonical
    form of what each snapshot loads to."""
    d = tmp_path_factory.mktemp("pristine-" + request.param)
    (d / "s.py").write_text(STORE_SCRIPT)
    opts = ["--compress", "3"] if request.param == "zstd" else []
    r = run_chkpt(["-f", "-1", "-z", "0", *opts, "s.py"], d)
    assert r.returncode == 0 and chkpt_lines(r.stderr) == [], r.stderr
    store = d / "checkpoints"
    r = run_python(["-c", EXPECTED, str(store), str(d / "expected.json")], d)
    assert r.returncode == 0, r.stderr
    files = sorted(str(p.relative_to(store)) for p in store.rglob("*")
                   if p.is_file() and p.parent.name != "tmp"
                   and p.name not in ("lock", "FORMAT"))
    assert sum(f.startswith("snapshots/") for f in files) == 3
    return store, d / "expected.json", files


damage = st.tuples(
    st.integers(min_value=0),                       # which file (modulo)
    st.sampled_from(["flip", "set", "truncate", "append", "zero-run"]),
    st.floats(min_value=0, max_value=1, exclude_max=True),   # where
    st.integers(min_value=1, max_value=255),        # xor mask / value / length
)


def apply_damage(store, files, spec):
    which, how, where, val = spec
    rel = files[which % len(files)]
    p = store / rel
    data = bytearray(p.read_bytes())
    off = int(where * len(data)) if data else 0
    if how == "flip" and data:
        data[off] ^= val
    elif how == "set" and data:
        if data[off] == val:
            val ^= 0xFF
        data[off] = val
    elif how == "truncate":
        del data[off:]
    elif how == "append":
        data += bytes([val]) * val
    elif how == "zero-run" and data:
        end = min(len(data), off + val)
        if any(data[off:end]):
            data[off:end] = bytes(end - off)
        else:
            data[off:end] = b"\xff" * (end - off)
    else:
        data += b"\x00"
    os.chmod(p, 0o600)
    p.write_bytes(bytes(data))
    return rel


@settings(max_examples=15, **SETTINGS)
@given(specs=st.lists(st.lists(damage, min_size=1, max_size=3),
                      min_size=1, max_size=5))
def test_damaged_snapshot_loads_equal_or_raises_snapshot_error(
        tmp_path, pristine, specs):
    store, expected, files = pristine
    d = Path(tempfile.mkdtemp(dir=tmp_path))
    copies, what = [], []
    for i, spec_list in enumerate(specs):
        c = d / f"copy{i}"
        shutil.copytree(store, c)
        what.append([(apply_damage(c, files, s), s) for s in spec_list])
        copies.append(str(c))
    r = run_python(["-c", CHECK_DAMAGE, str(expected), *copies], d, timeout=120)
    assert r.returncode == 0, (what, r.returncode, r.stderr[-3000:])
    verdicts = json.loads(r.stdout.splitlines()[-1])
    for w, v in zip(what, verdicts):
        assert set(v) <= {"equal", "SnapshotError"}, (w, v)
    # every file of the pristine store is referenced by a snapshot: verify
    # notices any damage (exit 1, not a crash), and ls still works
    # (two damages can cancel out, e.g. the same flip twice: then the copy
    # is intact and verify must say so)
    for c, w in zip(copies, what):
        changed = any((Path(c) / f).read_bytes() != (store / f).read_bytes()
                      for f in files)
        r = run_chkpt(["verify", c], d, timeout=120)
        assert r.returncode == (1 if changed else 0), (
            w, r.returncode, r.stdout, r.stderr[-2000:])
        r = run_chkpt(["ls", c], d, timeout=120)
        assert r.returncode in (0, 1), (w, r.returncode, r.stderr[-2000:])
    shutil.rmtree(d)


def test_every_single_byte_of_a_manifest_is_covered(tmp_path, pristine):
    """Not hypothesis: flip each of a manifest's bytes in turn (one copy per
    byte would be slow, so only the manifest is copied)."""
    store, expected, files = pristine
    man = store / next(f for f in files if f.startswith("snapshots/"))
    data = man.read_bytes()
    code = textwrap.dedent('''
        import sys, chkpt
        bad = []
        path = sys.argv[1]
        data = open(path, "rb").read()
        for i in range(len(data)):
            b = bytearray(data); b[i] ^= 0x41
            open(path, "wb").write(bytes(b))
            try:
                chkpt.load(path)
                bad.append(i)
            except chkpt.SnapshotError:
                pass
        open(path, "wb").write(data)
        print(bad)
    ''')
    c = tmp_path / "store"
    shutil.copytree(store, c)
    r = run_python(["-c", code, str(c / man.relative_to(store))], tmp_path,
                   timeout=120)
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stdout.strip() == "[]", f"offsets loaded despite damage: {r.stdout}"
    assert len(data) > 50


# ---------------------------------------------------------------------------
# (c) listing survives a damaged manifest

LIST = '''
import json, sys, os
import chkpt
out = []
for store in sys.argv[1:]:
    try:
        infos = chkpt.snapshots(store)
    except BaseException as e:
        out.append({"raised": "%s: %s" % (type(e).__name__, e)})
        continue
    listed = [os.path.basename(i.path) for i in infos]
    loads = {}
    for i in infos:
        try:
            chkpt.load(i)
            loads[os.path.basename(i.path)] = "ok"
        except chkpt.SnapshotError:
            loads[os.path.basename(i.path)] = "SnapshotError"
        except BaseException as e:
            loads[os.path.basename(i.path)] = "%s: %s" % (type(e).__name__, e)
    out.append({"listed": listed, "loads": loads,
                "names": [i.name for i in infos]})
print(json.dumps(out))
'''

manifest_damage = st.one_of(
    damage,
    st.tuples(st.integers(min_value=0),
              st.sampled_from(["empty", "random", "directory", "unreadable",
                               "symlink-loop", "other-manifest"]),
              st.binary(max_size=200), st.just(0)),
)


def damage_manifest(store, rel, spec):
    p = store / rel
    how = spec[1]
    if how == "empty":
        p.write_bytes(b"")
    elif how == "random":
        p.write_bytes(spec[2])
    elif how == "directory":
        p.unlink()
        p.mkdir(mode=0o700)
    elif how == "unreadable":
        os.chmod(p, 0)
    elif how == "symlink-loop":
        p.unlink()
        p.symlink_to(p.name)
    elif how == "other-manifest":
        others = sorted(q for q in p.parent.iterdir() if q != p)
        p.write_bytes(others[0].read_bytes())    # a valid manifest, wrong name
    else:
        apply_damage(store, [rel], spec)


@settings(max_examples=20, **SETTINGS)
@given(specs=st.lists(manifest_damage, min_size=1, max_size=8))
def test_snapshots_never_raises_for_one_damaged_manifest(tmp_path, pristine, specs):
    store, expected, files = pristine
    mans = [f for f in files if f.startswith("snapshots/")]
    d = Path(tempfile.mkdtemp(dir=tmp_path))
    copies, what = [], []
    for i, spec in enumerate(specs):
        c = d / f"copy{i}"
        shutil.copytree(store, c)
        rel = mans[spec[0] % len(mans)]
        damage_manifest(c, rel, spec)
        what.append((rel, spec))
        copies.append(str(c))
    r = run_python(["-c", LIST, *copies], d, timeout=120)
    # restore permissions so tmp_path can be cleaned
    for c in copies:
        for m in Path(c, "snapshots").iterdir():
            if not m.is_symlink():
                os.chmod(m, 0o700 if m.is_dir() else 0o600)
    assert r.returncode == 0, (what, r.stderr[-3000:])
    out = json.loads(r.stdout.splitlines()[-1])
    all_names = [os.path.basename(m) for m in mans]
    for (rel, spec), o in zip(what, out):
        assert "raised" not in o, (rel, spec, o)
        damaged = os.path.basename(rel)
        intact = [n for n in all_names if n != damaged]
        # the intact snapshots are all listed, and load
        assert set(intact) <= set(o["listed"]), (rel, spec, o)
        for n in intact:
            assert o["loads"][n] == "ok", (rel, spec, o)
        # the damaged one, if listed, raises SnapshotError when loaded (or
        # loads: a copy of another valid manifest is a valid snapshot)
        if damaged in o["listed"]:
            ok = ("SnapshotError", "ok") if spec[1] in (
                "other-manifest", "unreadable") else ("SnapshotError",)
            assert o["loads"][damaged] in ok, (rel, spec, o)
        assert o["listed"] == sorted(o["listed"])
    shutil.rmtree(d, ignore_errors=True)
