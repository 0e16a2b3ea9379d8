"""Snapshots written by a child process (issue 15's targets), measured side
by side in one run: ck.snapshot()'s pause against pickle.dump (and a bare
os.fork() of the same process, the floor of a fork's pause), ck.wait()
against this disk's write+fsync of the same bytes, bytes added by four
later snapshots, peak RSS and the children's copy-on-write memory,
chkpt.load against pickle.load (each in a fresh process, the page cache in
the same state for both, pairs alternating which goes first: see
load_compare.py). Medians and spread over interleaved rounds.

    python bench/bench_forked.py [--mib 512] [--rounds 3] [--load-repeats 2]
                                 [--cold]
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


def med(xs):
    return statistics.median(xs)


def spread(xs):
    return f"[{min(xs):.4f} .. {max(xs):.4f}]"


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--mib", type=int, default=512)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--load-repeats", type=int, default=2,
                        help="interleaved load pairs per round's snapshot")
    parser.add_argument("--cold", action="store_true",
                        help="also compare loads with both sides evicted "
                        "from the page cache")
    args = parser.parse_args()
    env = dict(os.environ, PYTHONPATH=REPO)
    with tempfile.TemporaryDirectory(dir=os.environ.get("BENCH_DIR", ".")) as out:
        proc = subprocess.run(
            [sys.executable, "-m", "chkpt", "-f", "-1", "-o", out,
             os.path.join(HERE, "forked_script.py"), str(args.mib),
             str(args.rounds), out],
            env=env, capture_output=True, text=True)
        if proc.returncode != 0:
            sys.exit(proc.stderr)
        r = json.loads(proc.stdout.splitlines()[-1])
        loads = {"warm": load_compare.compare(r["loads"], args.load_repeats)}
        if args.cold:
            loads["cold"] = load_compare.compare(r["loads"], args.load_repeats,
                                                 cold=True)
    dump, later, first = med(r["dump"]), med(r["later"]), med(r["first"])
    print(f"python {sys.version.split()[0]}, {r['mib']} MiB of numpy arrays, "
          f"{args.rounds} rounds (median [min .. max])")
    rows = [
        ("pickle.dump (protocol 5, to the same disk)", r["dump"], ""),
        ("ck.snapshot() first, blocking", r["first"],
         f"{first / dump:.4f}x pickle.dump (target <= 0.05)"),
        ("ck.snapshot() after 8 KiB changed, blocking", r["later"],
         f"{later / dump:.4f}x pickle.dump (target <= 0.01)"),
        ("os.fork() alone, same process and pace", r["fork"],
         f"{med(r['fork']) / dump:.4f}x pickle.dump (the floor for a fork)"),
        ("write+fsync of the same bytes (this disk)", r["disk"], ""),
        ("ck.wait() after the first", r["wait"],
         f"{med(r['wait']) / med(r['disk']):.2f}x disk (target <= 1.5)"),
    ]
    for label, lr in loads.items():
        rows += load_compare.rows(
            lr, f"fresh process, page cache {label}",
            " (target <= 0.25)" if label == "warm" else "")
    for name, xs, note in rows:
        print(f"  {name:45s} {med(xs):8.4f} s {spread(xs):22s} {note}")
    added = med(r["added"])
    print(f"  {'bytes added by 4 later snapshots':45s} {added / 2**20:8.2f} MiB "
          f"(target <= 16 MiB)")
    growth = r["rss_growth"] / r["rss_before"]
    print(f"  {'script peak RSS growth (round 0)':45s} "
          f"{r['rss_growth'] / 2**20:8.1f} MiB = {growth:.1%} of "
          f"{r['rss_before'] / 2**20:.0f} MiB (target <= 10%)")
    print(f"  {'children copy-on-write (peak Private_Dirty)':45s} "
          f"{r['children_cow_peak'] / 2**20:8.1f} MiB")


if __name__ == "__main__":
    main()
