"""Open anywhere: rebuilding the script's definitions from its saved source
(what chkpt does) versus storing the script's classes by value (cloudpickle).

    python bench/bench_open_anywhere.py          # needs cloudpickle for side B

For a script with a class, an enum, a namedtuple, a dataclass, a sibling
module, a module-level lock used by a method, and N variables holding
instances, it measures in fresh processes started in another directory:
bytes stored, time to load every variable, and what still works (isinstance
in the running script, definitions as they were, unpicklable globals).
"""
import json
import os
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
NVARS = 8
NPOINTS = 5000

SCRIPT = f'''
import enum, pickle, sys, threading, time
from collections import namedtuple
from dataclasses import dataclass, field
from helpers import Thing

LOCK = threading.Lock()


class Point:
    def __init__(self, x, y):
        self.x, self.y = x, y

    def locked_norm(self):
        with LOCK:
            return self.x ** 2 + self.y ** 2


class Color(enum.Enum):
    RED = 1
    GREEN = 2


Pair = namedtuple("Pair", "a b")


@dataclass
class State:
    items: list = field(default_factory=list)
    color: Color = Color.RED


for k in range({NVARS}):
    globals()[f"v{{k}}"] = State([Point(i, i) for i in range({NPOINTS})] + [Pair(k, k), Thing(k)],
                                 Color.GREEN)

mode = sys.argv[1]
if mode == "chkpt":
    from chkpt import Checkpoint
    Checkpoint.get_global_singleton().snapshot("bench")
else:
    import cloudpickle
    import helpers
    cloudpickle.register_pickle_by_value(helpers)   # else helpers.Thing is by reference
    out = {{}}
    t0 = time.perf_counter()
    for k in range({NVARS}):
        try:
            out[f"v{{k}}"] = cloudpickle.dumps(globals()[f"v{{k}}"], protocol=5)
        except Exception as e:
            out[f"v{{k}}"] = None
            err = f"{{type(e).__name__}}: {{e}}"
    t1 = time.perf_counter()
    with open("byvalue.pkl", "wb") as f:
        pickle.dump(out, f)
    import json
    print(json.dumps({{"dump_s": t1 - t0, "failed": [k for k, v in out.items() if v is None],
                       "error": globals().get("err")}}))
'''

HELPERS = '''
class Thing:
    def __init__(self, v):
        self.v = v
'''

LOAD_CHKPT = '''
import json, sys, time
t0 = time.perf_counter()
import chkpt
d = chkpt.load(sys.argv[1])
t1 = time.perf_counter()
ok = all(not isinstance(v, chkpt.Unloadable) for v in d.values())
print(json.dumps({"load_s": t1 - t0, "ok": ok}))
'''

LOAD_BYVALUE = '''
import json, pickle, sys, time
t0 = time.perf_counter()
with open(sys.argv[1], "rb") as f:
    blobs = pickle.load(f)
d = {k: pickle.loads(v) for k, v in blobs.items() if v is not None}
t1 = time.perf_counter()
print(json.dumps({"load_s": t1 - t0, "ok": len(d) == len(blobs),
                  "same_class": type(d["v0"]) is type(d["v1"]) if len(d) > 1 else None}))
'''


def run(args, cwd, env):
    r = subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True,
                       text=True)
    if r.returncode != 0:
        raise SystemExit(f"{args}: {r.stderr}")
    return r.stdout


def median_json(args, cwd, env, n=5):
    vals = [json.loads(run(args, cwd, env).strip().splitlines()[-1]) for _ in range(n)]
    vals.sort(key=lambda v: v["load_s"])
    return vals[len(vals) // 2]


def main():
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p))
    with tempfile.TemporaryDirectory() as tmp:
        proj = Path(tmp, "proj")
        other = Path(tmp, "other")
        proj.mkdir()
        other.mkdir()
        (proj / "script.py").write_text(textwrap.dedent(SCRIPT))
        (proj / "helpers.py").write_text(HELPERS)
        (other / "load_chkpt.py").write_text(LOAD_CHKPT)
        (other / "load_byvalue.py").write_text(LOAD_BYVALUE)

        run(["-m", "chkpt", "-f", "-1", "-z", "0", "script.py", "chkpt"], proj, env)
        store = proj / "checkpoints"
        data_bytes = sum(p.stat().st_size for p in store.rglob("*") if p.is_file())
        a = median_json(["load_chkpt.py", str(store)], other, env)
        print(f"rebuild from saved source (chkpt): store {data_bytes / 1024:.0f} KiB, "
              f"load {a['load_s'] * 1000:.1f} ms (median of 5), all variables: {a['ok']}")
        try:
            import cloudpickle  # noqa: F401
        except ImportError:
            print("by value (cloudpickle): not measured, cloudpickle is not installed")
            return
        out = json.loads(run(["script.py", "byvalue"], proj, env).strip().splitlines()[-1])
        size = (proj / "byvalue.pkl").stat().st_size
        print(f"by value (cloudpickle): failed to pickle {len(out['failed'])}/{NVARS} "
              f"variables ({out['error']})")
        # without the lock, to compare sizes and times on equal terms
        text = (proj / "script.py").read_text().replace("with LOCK:", "if True:")
        (proj / "script.py").write_text(text)
        out = json.loads(run(["script.py", "byvalue"], proj, env).strip().splitlines()[-1])
        size = (proj / "byvalue.pkl").stat().st_size
        b = median_json(["load_byvalue.py", str(proj / "byvalue.pkl")], other, env)
        print(f"by value (cloudpickle), lock removed: {size / 1024:.0f} KiB, "
              f"dump {out['dump_s'] * 1000:.1f} ms, load {b['load_s'] * 1000:.1f} ms, "
              f"v0 and v1 share one State class: {b['same_class']}")


if __name__ == "__main__":
    main()
