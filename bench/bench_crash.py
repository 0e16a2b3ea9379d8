"""How long the crash and signal snapshots take (issue 16).

    python bench/bench_crash.py [--runs N] [--mib 512]

Runs a script under `python -m chkpt` with a large state of either kind:
  numpy   MIB MiB of float64 arrays (8 arrays), a few small values
  python  a pure-Python state: a dict of 200,000 records (str key ->
          [float, float, str, tuple]) and a list of 2,000,000 floats
and measures, inside the script, with time.perf_counter():
  signal  os.kill(own pid, SIGUSR1) until the next statement runs: chkpt's
          handler snapshots the state (SIGTERM runs the same code, then dies)
  crash   from the `raise` to sys.excepthook, which python calls after the
          crash snapshot and before printing the traceback
Each measurement is its own run with a fresh store (nothing deduplicated
against an earlier snapshot); medians of N runs are printed.
"""
import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile

STATE = {
    "numpy": '''
import numpy as np
parts = [np.random.rand({mib} * 131072 // 8) for _ in range(8)]
step = 17
''',
    "python": '''
records = {{f"key-{{i}}": [i * 0.5, i / 3, f"name {{i}}", (i, i + 1)] for i in range(200_000)}}
floats = [i * 1.000001 for i in range(2_000_000)]
step = 17
''',
}

SCRIPT = '''
import os, signal, sys, time
{state}
def hook(t, v, tb):
    print("crash", time.perf_counter() - t0, flush=True)
    sys.__excepthook__(t, v, tb)
sys.excepthook = hook

def work(n):
    local_copy = n
    global t0
    if sys.argv[1] == "signal":
        t0 = time.perf_counter()
        os.kill(os.getpid(), signal.SIGUSR1)
        print("signal", time.perf_counter() - t0, flush=True)
        return
    t0 = time.perf_counter()
    raise RuntimeError("the end")

work(step)
'''


def run_once(kind, mib, tmp, what):
    work = os.path.join(tmp, "work")
    os.makedirs(work, exist_ok=True)
    path = os.path.join(work, "job.py")
    with open(path, "w") as f:
        f.write(SCRIPT.format(state=STATE[kind].format(mib=mib)))
    store = os.path.join(tmp, "store")
    shutil.rmtree(store, ignore_errors=True)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    p = subprocess.run([sys.executable, "-m", "chkpt", "-o", store, "job.py", what],
                       cwd=work, env=env, capture_output=True, text=True)
    times = {}
    for line in p.stdout.splitlines():
        what, secs = line.split()
        times[what] = float(secs)
    if set(times) != {what} or p.returncode != (what == "crash"):
        raise SystemExit(f"unexpected run: {p.returncode}\n{p.stdout}\n{p.stderr}")
    size = sum(os.path.getsize(os.path.join(d, f))
               for d, _, fs in os.walk(store) for f in fs)
    return times, size


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--mib", type=int, default=512)
    args = ap.parse_args()
    print(f"python {sys.version.split()[0]}, {args.runs} runs, medians")
    for kind in ("numpy", "python"):
        sig, crash = [], []
        with tempfile.TemporaryDirectory() as tmp:
            for _ in range(args.runs):
                t, size = run_once(kind, args.mib, tmp, "signal")
                sig.append(t["signal"])
                t, size = run_once(kind, args.mib, tmp, "crash")
                crash.append(t["crash"])
        label = f"{args.mib} MiB numpy" if kind == "numpy" else "pure-Python state"
        print(f"{label:20s} signal snapshot {statistics.median(sig):7.3f} s   "
              f"crash snapshot {statistics.median(crash):7.3f} s   "
              f"store {size / 2**20:7.1f} MiB")


if __name__ == "__main__":
    main()
