"""Run under chkpt by bench_snapshot.py: times ck.snapshot() (first, and
after small changes) and the disk it adds, against pickle.dump (default
protocol, the original prototype's way) of the same variables. Leaves the
first snapshot and the pickle file (in argv[2]) for bench_snapshot.py to
load."""
import json
import os
import pickle
import sys
import time

import numpy as np

from chkpt import Checkpoint


def disk_usage(path):
    total = 0
    for root, _, files in os.walk(path):
        for f in files:
            total += os.path.getsize(os.path.join(root, f))
    return total


def main():
    mib = int(sys.argv[1])
    ck = Checkpoint.get_global_singleton()
    rng = np.random.default_rng(0)
    n_arrays = 8
    per = mib * 2**20 // n_arrays // 8
    arrays = [rng.random(per) for _ in range(n_arrays)]
    a0, a1, a2, a3, a4, a5, a6, a7 = arrays
    del arrays

    def variables():
        # made when needed, not held: a dict of the arrays kept in a
        # variable would be snapshotted too, and chkpt.load would load
        # the arrays twice (that made chkpt.load look 0.77x pickle.load)
        return dict(a0=a0, a1=a1, a2=a2, a3=a3, a4=a4, a5=a5, a6=a6, a7=a7)

    out = {"mib": mib}
    path = os.path.join(sys.argv[2], "orig.pkl")
    t = time.perf_counter()
    with open(path, "wb") as f:
        pickle.dump(variables(), f)
    out["pickle_dump"] = time.perf_counter() - t
    with open(path, "rb") as f:     # written back now, not during snapshots
        os.fsync(f.fileno())

    t = time.perf_counter()
    info = ck.snapshot("first")
    out["snapshot_first"] = time.perf_counter() - t
    ck.wait()
    base = disk_usage(ck.output_dir)
    later = []
    for i in range(4):
        a3[i * 1024:(i + 1) * 1024] = i      # 8 KiB changed
        t = time.perf_counter()
        ck.snapshot("later-%d" % i)
        later.append(time.perf_counter() - t)
    ck.wait()
    out["snapshot_later"] = sorted(later)[len(later) // 2]
    out["disk_first"] = base
    out["disk_added_by_4_later"] = disk_usage(ck.output_dir) - base
    # loaded by bench_snapshot.py, each in a fresh process
    out["loads"] = [[info.path, path]]
    print(json.dumps(out))


main()
