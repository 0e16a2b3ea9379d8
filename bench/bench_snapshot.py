"""Pause, disk and load cost of snapshots of big numpy arrays, against
pickle.dump/pickle.load of the same variables, measured in one run. The
loads: each in a fresh process, the page cache in the same state for both
sides, pairs alternating which goes first (see load_compare.py).

    python bench/bench_snapshot.py [--mib 512] [--load-repeats 4] [--cold]
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile

import load_compare

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--mib", type=int, default=512)
    parser.add_argument("--load-repeats", type=int, default=4,
                        help="interleaved load pairs")
    parser.add_argument("--cold", action="store_true",
                        help="also compare loads with both sides evicted "
                        "from the page cache")
    args = parser.parse_args()
    env = dict(os.environ, PYTHONPATH=REPO)
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "store")
        proc = subprocess.run(
            [sys.executable, "-m", "chkpt", "-f", "-1", "-o", out,
             os.path.join(HERE, "snapshot_script.py"), str(args.mib), tmp],
            env=env, check=True, capture_output=True, text=True)
        r = json.loads(proc.stdout.splitlines()[-1])
        loads = {"warm": load_compare.compare(r["loads"], args.load_repeats)}
        if args.cold:
            loads["cold"] = load_compare.compare(r["loads"], args.load_repeats,
                                                 cold=True)
    print(f"python {sys.version.split()[0]}, {r['mib']} MiB of numpy arrays in globals")
    print(f"  pickle.dump (original's way)   {r['pickle_dump']:7.3f} s")
    print(f"  ck.snapshot() first            {r['snapshot_first']:7.3f} s   "
          f"{r['snapshot_first'] / r['pickle_dump']:6.1%} of pickle.dump")
    print(f"  ck.snapshot() after 8 KiB      {r['snapshot_later']:7.3f} s   "
          f"{r['snapshot_later'] / r['pickle_dump']:6.1%} of pickle.dump")
    print(f"  disk: first snapshot           {r['disk_first'] / 2**20:7.1f} MiB")
    print(f"  disk: 4 later snapshots add    {r['disk_added_by_4_later'] / 2**20:7.1f} MiB")
    print(f"  loads, {args.load_repeats} interleaved pairs (median [min .. max]):")
    med = statistics.median
    for label, lr in loads.items():
        for name, xs, note in load_compare.rows(lr, f"page cache {label}"):
            print(f"  {name:30s} {med(xs):7.3f} s [{min(xs):.3f} .. "
                  f"{max(xs):.3f}]  {note}")


if __name__ == "__main__":
    main()
