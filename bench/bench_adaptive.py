"""Does the default (-f auto) keep its budget? Two scripts, each run under
plain python and under chkpt without options, interleaved:

  rewrite  1 GiB of numpy state rewritten as fast as the machine goes
  little   256 MiB of numpy state, one chunk of it changed every 2 s

For each: the wall time plain vs chkpt (the script's slowdown), the
snapshot children's CPU time as a share of the wall time (os.wait4 of the
whole run minus the script's own CPU time, which it reports), the bytes the
run wrote per second against this disk's bandwidth (write + fsync of 512
MiB, measured before each chkpt run), the snapshots taken and kept, the
store's size at the end, and chkpt's own account (-v). The budget: both
shares at most about 5%.

    python bench/bench_adaptive.py [--runs N] [--rewrite-seconds S]
                                   [--little-seconds S] [--only CASE]
"""
import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
SCRIPT = os.path.join(HERE, "adaptive_script.py")


def disk_bandwidth(where, mib=512):
    """Bytes per second to write and fsync MIB MiB in WHERE."""
    buf = os.urandom(1 << 20)
    path = os.path.join(where, "bandwidth.tmp")
    t = time.monotonic()
    with open(path, "wb") as f:
        for _ in range(mib):
            f.write(buf)
        f.flush()
        os.fsync(f.fileno())
    took = time.monotonic() - t
    os.unlink(path)
    return (mib << 20) / took


def run(cmd, cwd, env):
    """Runs CMD; returns (wall, the script's report, stderr)."""
    t = time.monotonic()
    p = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)
    out, err = p.communicate()
    wall = time.monotonic() - t
    if p.returncode != 0:
        sys.exit(f"{cmd} failed:\n{err.decode()}")
    return wall, json.loads(out.decode().splitlines()[-1]), err.decode()


def measured(cmd, cwd, env):
    """run(CMD) with (wall, CPU time of it and of every child it reaped,
    bytes they wrote to the disk, report, stderr): the delta of our
    RUSAGE_CHILDREN, one run at a time."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    wall, rep, err = run(cmd, cwd, env)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    written = (after.ru_oublock - before.ru_oublock) * 512
    return wall, cpu, written, rep, err


def dir_size(path):
    total = 0
    for root, _, files in os.walk(path):
        for f in files:
            try:
                total += os.lstat(os.path.join(root, f)).st_size
            except OSError:
                pass
    return total


def passes_for(mode, mib, seconds):
    """Passes of the workload that take about SECONDS under plain python."""
    if mode == "little":
        return int(seconds / 0.1)
    import numpy as np
    state = [np.random.rand(1 << 17) for _ in range(mib)]
    t = time.monotonic()
    for _ in range(3):
        for a in state:
            a += 1.0
    return max(1, int(seconds / ((time.monotonic() - t) / 3)))


def bench_case(name, mode, mib, seconds, runs, env):
    passes = passes_for(mode, mib, seconds)
    args = [str(mib), str(passes), mode]
    plain, under = [], []
    with tempfile.TemporaryDirectory(dir=REPO) as work:
        for i in range(runs):
            wall, cpu, written, rep, _ = measured(
                [sys.executable, SCRIPT, *args], work, env)
            plain.append(wall)
            store = os.path.join(work, f"store{i}")
            bw = disk_bandwidth(work)
            wall, cpu, written, rep, err = measured(
                [sys.executable, "-m", "chkpt", "-v", "-o", store, SCRIPT,
                 *args], work, env)
            # the script's own process is the only other CPU user; its exit
            # after the report counts as the children's (stricter)
            children = max(0.0, cpu - rep["self_cpu"])
            lines = [l for l in err.splitlines() if l.startswith("chkpt:")]
            taken = sum(1 for l in lines if l.startswith("chkpt: auto snapshot"))
            kept = len(os.listdir(os.path.join(store, "snapshots"))) \
                if os.path.isdir(os.path.join(store, "snapshots")) else 0
            under.append(wall)
            print(f"  {name} run {i + 1}: plain {plain[-1]:6.1f} s  chkpt {wall:6.1f} s"
                  f"  ({wall / plain[-1]:.3f}x)  snapshots {taken} taken, {kept} kept,"
                  f" store {dir_size(store) / 2**20:6.0f} MiB")
            print(f"      children CPU {children:6.2f} s = {100 * children / wall:4.1f}%"
                  f" of wall;  written {written / 1e6:7.0f} MB = {written / wall / 1e6:6.1f}"
                  f" MB/s = {100 * written / wall / bw:4.1f}% of the disk's"
                  f" {bw / 1e6:.0f} MB/s")
            account = [l for l in lines if "snapshot process(es)" in l]
            if account:
                print("      " + account[-1])
            sys.stdout.flush()
    p, u = statistics.median(plain), statistics.median(under)
    print(f"{name}: {mib} MiB, {passes} passes, median wall plain {p:.1f} s"
          f" [{min(plain):.1f}-{max(plain):.1f}], chkpt {u:.1f} s"
          f" [{min(under):.1f}-{max(under):.1f}], {u / p:.3f}x\n")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--rewrite-seconds", type=float, default=150)
    parser.add_argument("--little-seconds", type=float, default=90)
    parser.add_argument("--only", choices=("rewrite", "little"))
    args = parser.parse_args()
    env = dict(os.environ, PYTHONPATH=REPO)
    print(f"python {sys.version.split()[0]}, {args.runs} interleaved runs per case")
    if args.only in (None, "rewrite"):
        bench_case("rewrite", "rewrite", 1024, args.rewrite_seconds, args.runs, env)
    if args.only in (None, "little"):
        bench_case("little", "little", 256, args.little_seconds, args.runs, env)


if __name__ == "__main__":
    main()
