"""Cost of chkpt's hooks on a CPU-bound pure-Python script: wall time under
chkpt against plain python, median of interleaved runs, and the spread of
the ratios round by round (this VM's speed drifts between runs).

    python bench/bench_hooks.py [--runs N] [--scale S]
"""
import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
SCRIPT = os.path.join(HERE, "cpu_script.py")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--scale", default="5.0")
    args = parser.parse_args()
    env = dict(os.environ, PYTHONPATH=REPO)
    with tempfile.TemporaryDirectory() as out:
        cases = {
            "plain python": [sys.executable, SCRIPT, args.scale],
            "chkpt default": [sys.executable, "-m", "chkpt", "-o", out,
                              SCRIPT, args.scale],
            "chkpt -f 1000": [sys.executable, "-m", "chkpt", "-o", out,
                              "-f", "1000", SCRIPT, args.scale],
            "chkpt -f -1 -z -1": [sys.executable, "-m", "chkpt", "-o", out,
                                  "-f", "-1", "-z", "-1", SCRIPT, args.scale],
        }
        times = {name: [] for name in cases}
        for _ in range(args.runs):
            for name, cmd in cases.items():          # interleaved
                t = time.perf_counter()
                subprocess.run(cmd, env=env, check=True,
                               stdout=subprocess.DEVNULL)
                times[name].append(time.perf_counter() - t)
    plain = times["plain python"]
    base = statistics.median(plain)
    print(f"python {sys.version.split()[0]}, {args.runs} interleaved runs, "
          f"median wall time; per round, the ratio to that round's plain run "
          f"(median [min .. max])")
    for name, ts in times.items():
        med = statistics.median(ts)
        rounds = [t / p for t, p in zip(ts, plain)]
        print(f"  {name:20s} {med:7.3f} s   {med / base:5.2f}x plain   "
              f"rounds {statistics.median(rounds):5.2f}x "
              f"[{min(rounds):.2f} .. {max(rounds):.2f}]")


if __name__ == "__main__":
    main()
