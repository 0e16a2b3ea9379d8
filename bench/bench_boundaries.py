"""Cost of boundary snapshots (issue 17, --resume) on a script made of many
short top-level statements: wall time under chkpt's defaults against plain
python and against chkpt -f -1 (no boundary snapshots, the module run
whole), median of interleaved runs with the fastest and slowest; and how
many boundary snapshots the default run took. The CPU time (user + system
of the run and of the snapshot processes it reaped) is shown too: on a
shared, loaded machine it varies far less than the wall time.

    python bench/bench_boundaries.py [--runs N] [--statements N]
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)


def script(n):
    """n short statements (a few ms of work each), some globals growing."""
    lines = ["import math", "acc = 0.0", "rows = []"]
    for i in range(n):
        lines.append(
            f"acc += sum(math.sqrt(k) for k in range({20000 + i}))")
        if i % 10 == 0:
            lines.append(f"rows.append([acc] * {100 + i})")
    lines.append("print(round(acc, 3), len(rows))")
    return "\n".join(lines) + "\n"


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--statements", type=int, default=1000)
    args = parser.parse_args()
    env = dict(os.environ, PYTHONPATH=REPO)
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "short_statements.py")
        with open(path, "w") as f:
            f.write(script(args.statements))
        out = os.path.join(tmp, "checkpoints")
        cases = {
            "plain python": [sys.executable, path],
            "chkpt default": [sys.executable, "-m", "chkpt", "-o", out, path],
            "chkpt -f -1": [sys.executable, "-m", "chkpt", "-o", out,
                            "-f", "-1", path],
        }
        times = {name: [] for name in cases}
        cpu = {name: [] for name in cases}
        for _ in range(args.runs):
            for name, cmd in cases.items():          # interleaved
                t = time.perf_counter()
                p = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL)
                _, status, ru = os.wait4(p.pid, 0)
                p.returncode = os.waitstatus_to_exitcode(status)
                if p.returncode != 0:
                    sys.exit(f"{name} failed: {p.returncode}")
                times[name].append(time.perf_counter() - t)
                cpu[name].append(ru.ru_utime + ru.ru_stime)
        ls = subprocess.run(
            [sys.executable, "-c",
             "import chkpt, json, os, sys; print(json.dumps([s.meta.get("
             "'statement') for s in chkpt.snapshots(sys.argv[1])] "
             "if os.path.isdir(sys.argv[1]) else []))", out],
            env=env, check=True, capture_output=True, text=True)
        boundaries = sum(1 for s in json.loads(ls.stdout) if s is not None)
    base = statistics.median(times["plain python"])
    cbase = statistics.median(cpu["plain python"])
    print(f"python {sys.version.split()[0]}, {args.statements} short "
          f"statements, {args.runs} interleaved runs, median (min-max) "
          f"against plain python's median")
    for name, ts in times.items():
        med, cmed = statistics.median(ts), statistics.median(cpu[name])
        print(f"  {name:16s} wall {med:7.3f} s {med / base:5.2f}x "
              f"({min(ts) / base:4.2f}-{max(ts) / base:4.2f})   "
              f"cpu {cmed:7.3f} s {cmed / cbase:5.2f}x "
              f"({min(cpu[name]) / cbase:4.2f}-{max(cpu[name]) / cbase:4.2f})")
    print(f"  boundary snapshots over all chkpt default runs: {boundaries}")


if __name__ == "__main__":
    main()
