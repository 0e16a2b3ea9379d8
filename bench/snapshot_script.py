"""Run under chkpt by bench_snapshot.py: times ck.snapshot() (first, and
after small changes), the disk it adds, and chkpt.load, against pickle
(default protocol, the original prototype's way) of the same variables."""
import json
import os
import pickle
import sys
import tempfile
import time

import numpy as np

import chkpt
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
    names = ["a%d" % i for i in range(n_arrays)]
    variables = {n: v for n, v in locals().items() if n in names}

    out = {"mib": mib}
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "orig.pkl")
        t = time.perf_counter()
        with open(path, "wb") as f:
            pickle.dump(variables, f)
        out["pickle_dump"] = time.perf_counter() - t
        t = time.perf_counter()
        with open(path, "rb") as f:
            pickle.load(f)
        out["pickle_load"] = time.perf_counter() - t

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
    t = time.perf_counter()
    chkpt.load(info)
    out["chkpt_load"] = time.perf_counter() - t
    print(json.dumps(out))


main()
