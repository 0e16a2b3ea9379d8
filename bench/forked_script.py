"""Run under chkpt by bench_forked.py: the issue's numpy case. 512 MiB of
arrays in globals, a second of computing between snapshots; per round, in
one process: ck.snapshot() blocking time (first into an empty store, then
after 8 KiB changed), ck.wait() after the first, the bytes four later
snapshots add, against pickle.dump of the same variables, a bare os.fork()
of this process at the same pace (the floor of a pause that forks) and the
time this disk takes to write and fsync the same bytes. The first snapshot and the
pickle file of each round are left for bench_forked.py to load. Also the
script's peak RSS growth and the children's copy-on-write memory (their
Private_Dirty, sampled while they run)."""
import glob
import json
import os
import pickle
import resource
import sys
import threading
import time

import numpy as np

from chkpt import Checkpoint


def disk_usage(path):
    total = 0
    for root, _, files in os.walk(path):
        for f in files:
            total += os.path.getsize(os.path.join(root, f))
    return total


def children_private_dirty():
    """Private_Dirty bytes of this process's children (the writers)."""
    total = 0
    for f in glob.glob("/proc/self/task/*/children"):
        try:
            pids = open(f).read().split()
        except OSError:
            continue
        for pid in pids:
            try:
                for line in open(f"/proc/{pid}/smaps_rollup"):
                    if line.startswith("Private_Dirty:"):
                        total += int(line.split()[1]) * 1024
            except OSError:
                pass
    return total


class Sampler(threading.Thread):
    def __init__(self):
        super().__init__(daemon=True)
        self.peak = 0
        self.stop = False

    def run(self):
        while not self.stop:
            self.peak = max(self.peak, children_private_dirty())
            time.sleep(0.01)


def compute(seconds, scratch):
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        np.sqrt(scratch, out=scratch)
        scratch += 1.0


def main():
    mib, rounds, base_dir = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
    ck = Checkpoint.get_global_singleton()
    rng = np.random.default_rng(0)
    n_arrays = 8
    per = mib * 2**20 // n_arrays // 8
    a0, a1, a2, a3, a4, a5, a6, a7 = [rng.random(per) for _ in range(n_arrays)]

    def state():
        return dict(a0=a0, a1=a1, a2=a2, a3=a3, a4=a4, a5=a5, a6=a6, a7=a7)
    scratch = np.ones(1 << 16)          # what the script computes on
    sampler = Sampler()
    sampler.start()
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    out = {"mib": mib, "first": [], "later": [], "wait": [], "added": [],
           "dump": [], "disk": [], "loads": [], "fork": []}
    for r in range(rounds):
        ck.output_dir = os.path.join(base_dir, f"store{r}")
        t = time.perf_counter()
        info = ck.snapshot("first")
        out["first"].append(time.perf_counter() - t)
        t = time.perf_counter()
        ck.wait()
        out["wait"].append(time.perf_counter() - t)
        base = disk_usage(ck.output_dir)
        for i in range(4):
            compute(1.0, scratch)
            a3[i * 1024:(i + 1) * 1024] = r + i      # 8 KiB changed
            t = time.perf_counter()
            ck.snapshot(f"later-{i}")
            out["later"].append(time.perf_counter() - t)
            # the floor of any capture by fork: a bare os.fork() of this
            # process in the same state (a second of work since the last)
            compute(1.0, scratch)
            a3[i * 1024:(i + 1) * 1024] = r + i + 1
            t = time.perf_counter()
            pid = os.fork()
            if pid == 0:
                os._exit(0)
            out["fork"].append(time.perf_counter() - t)
            os.waitpid(pid, 0)
        ck.wait()
        out["added"].append(disk_usage(ck.output_dir) - base)
        if r == 0:
            out["rss_growth"] = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
                                 * 1024 - rss_before)
            out["rss_before"] = rss_before
        # the same variables with pickle, and the same bytes to this disk
        pkl = os.path.join(base_dir, f"orig{r}.pkl")
        t = time.perf_counter()
        with open(pkl, "wb") as f:
            pickle.dump(state(), f, protocol=5)
        out["dump"].append(time.perf_counter() - t)
        # kept for the loads: written back now, not during what comes next
        with open(pkl, "rb") as f:
            os.fsync(f.fileno())
        raw = os.path.join(base_dir, f"raw{r}.bin")
        t = time.perf_counter()
        fd = os.open(raw, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        for a in (a0, a1, a2, a3, a4, a5, a6, a7):
            os.write(fd, memoryview(a).cast("B"))
        os.fsync(fd)
        os.close(fd)
        out["disk"].append(time.perf_counter() - t)
        del a   # else the next snapshots hold it too (as a7), pickle not
        os.unlink(raw)
        # loaded later by bench_forked.py, each in a fresh process
        out["loads"].append([info.path, pkl])
    sampler.stop = True
    out["children_cow_peak"] = sampler.peak
    print(json.dumps(out))


main()
