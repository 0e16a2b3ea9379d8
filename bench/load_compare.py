"""chkpt.load against pickle.load of the same variables, on an equal
footing; used by bench_forked.py and bench_snapshot.py.

Each load runs in a fresh python (numpy, pickle and chkpt imported before
the clock starts), as a user loads a snapshot in a new session: nothing of
the writing process (its live modules, its heap, its CPU caches) helps
either side. Before each load, the page cache is put in the same state for
both sides: "warm" reads every file of both sides (the snapshot's manifest
and chunks, the pickle file) so both are fully cached; "cold" writes them
back and evicts them (fsync + POSIX_FADV_DONTNEED), so both read from disk.
The two sides alternate which goes first, pair after pair. Each pair's
ratio is printed too, and the ratio of the CPU time the loads took (user +
system): on a machine shared with other work, it moves less than the wall
time does.

    python bench/load_compare.py chkpt|pickle PATH     (one timed load)
"""
import json
import os
import statistics
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)


def store_files(manifest):
    """Every file a load of manifest may read: the manifest and the chunks
    of its store (a bench store holds little else)."""
    store = os.path.dirname(os.path.dirname(manifest))
    files = [manifest]
    for root, _, names in os.walk(os.path.join(store, "chunks")):
        files += [os.path.join(root, n) for n in names]
    return files


def warm(files):
    for path in files:
        with open(path, "rb", buffering=0) as f:
            while f.read(1 << 20):
                pass


def evict(files):
    for path in files:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def timed_load(kind, path):
    env = dict(os.environ, PYTHONPATH=REPO)
    proc = subprocess.run([sys.executable, os.path.abspath(__file__), kind, path],
                          env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(f"{kind} load of {path} failed:\n{proc.stderr}")
    return json.loads(proc.stdout.splitlines()[-1])


def compare(pairs, repeats=2, cold=False):
    """pairs: (manifest, pickle file) of the same variables. Returns
    {"chkpt": [s], "pickle": [s], "ratio": [chkpt/pickle of each pair]}."""
    out = {"chkpt": [], "pickle": [], "ratio": [], "cpu_ratio": []}
    prepare = evict if cold else warm
    n = 0
    for manifest, pkl in pairs:
        files = {"chkpt": store_files(manifest), "pickle": [pkl]}
        paths = {"chkpt": manifest, "pickle": pkl}
        for _ in range(repeats):
            order = ("chkpt", "pickle") if n % 2 == 0 else ("pickle", "chkpt")
            n += 1
            got = {}
            for kind in order:
                prepare(files["chkpt"] + files["pickle"])
                got[kind] = timed_load(kind, paths[kind])
            if got["chkpt"]["names"] != got["pickle"]["names"]:
                sys.exit(f"not the same variables: {got}")
            if got["chkpt"]["writable"] != got["pickle"]["writable"]:
                sys.exit(f"writability differs: {got}")
            for kind in order:
                out[kind].append(got[kind]["seconds"])
            out["ratio"].append(got["chkpt"]["seconds"]
                                / got["pickle"]["seconds"])
            out["cpu_ratio"].append(got["chkpt"]["cpu"] / got["pickle"]["cpu"])
    return out


def rows(r, label, target=""):
    """Printable rows (name, samples, note) for bench output."""
    med = statistics.median
    return [
        (f"pickle.load ({label})", r["pickle"], ""),
        (f"chkpt.load ({label})", r["chkpt"],
         f"{med(r['chkpt']) / med(r['pickle']):.3f}x pickle.load "
         f"(pairs: median {med(r['ratio']):.3f}x, "
         f"[{min(r['ratio']):.3f} .. {max(r['ratio']):.3f}]; CPU time "
         f"{med(r['cpu_ratio']):.3f}x){target}"),
    ]


def main():
    kind, path = sys.argv[1], sys.argv[2]
    import pickle
    import time

    import numpy  # noqa: F401  (both sides need it; not on the clock)

    import chkpt
    c = time.process_time()
    t = time.perf_counter()
    if kind == "chkpt":
        loaded = chkpt.load(path)
    else:
        with open(path, "rb") as f:
            loaded = pickle.load(f)
    seconds = time.perf_counter() - t
    cpu = time.process_time() - c
    print(json.dumps({
        "seconds": seconds,
        "cpu": cpu,
        "names": sorted(loaded),
        "writable": sorted(n for n, v in loaded.items()
                           if getattr(v, "flags", None) is not None
                           and v.flags.writeable),
    }))


if __name__ == "__main__":
    main()
