"""The adaptive default (-f auto, issue 15): automatic snapshots as often as
the budget allows (the children's CPU time and disk time at most about 5% of
the run's wall time), the store kept bounded (--keep-auto), and the exit of
the run (it waits for a snapshot in flight, and for nothing else).

Every test runs real scripts as subprocesses. The children's CPU time is
measured from outside chkpt: os.wait4 on the whole run (the script's process
and the children it reaped) minus what the script's own process used, as the
script reports it on its last line.
"""
import json
import os
import re
import statistics
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from conftest import chkpt_env, chkpt_lines, run_chkpt

import chkpt

# a state of STATE_MB that a loop rewrites for SECONDS, then the script's own
# CPU time and wall time as the last line (JSON), and when each process its
# thread created was created (chkpt's snapshot processes: the kernel lists
# them as the thread's children, though python never sees them, and keeps
# their creation time, in clock ticks of 10 ms), in seconds from the
# script's process start: not the time the child stamps its snapshot with,
# which is when a loaded machine let it start, nor when the script saw it
REWRITER = '''
import time; t0 = time.monotonic()
import json, os, resource, sys, threading
import numpy as np
kids = "/proc/self/task/%d/children" % threading.get_native_id()
hz = os.sysconf("SC_CLK_TCK")
mb, seconds, mode = int(sys.argv[1]), float(sys.argv[2]), sys.argv[3]
def started(pid):
    """when the kernel created the process, in clock ticks"""
    with open("/proc/%s/stat" % pid) as f:
        return int(f.read().rsplit(")", 1)[1].split()[19])
me = started("self")
def poll(into):
    with open(kids) as f:
        for pid in f.read().split():
            if pid not in into:
                try:
                    into[pid] = (started(pid) - me) / hz
                except OSError:       # reaped meanwhile
                    pass
every = {}                            # every snapshot process seen
state = []
for _ in range(mb):
    state.append(np.random.rand(1 << 17))   # mb MiB, no two alike
    poll(every)
poll(every)
before = set(every)                   # a boundary snapshot's, still running
forks = {}                            # the ones created in the loop
i = 0
while time.monotonic() - t0 < seconds:
    if mode == "all":
        for a in state:
            a += 1.0                                # every chunk is new
    else:
        if i % 20 == 0:
            state[i % mb][:16] = i                  # a chunk every 2 s
        time.sleep(0.1)
    poll(every)
    for pid in set(every) - before:
        forks.setdefault(pid, every[pid])
    i += 1
ru = resource.getrusage(resource.RUSAGE_SELF)
print(json.dumps({"self_cpu": ru.ru_utime + ru.ru_stime,
                  "wall": time.monotonic() - t0, "passes": i,
                  "forks": sorted(forks.values()),
                  "every": sorted(every.values())}))
'''


def write(tmp_path, name, body):
    p = tmp_path / name
    p.write_text(textwrap.dedent(body))
    return p


def children_cost(args, cwd):
    """Runs python -m chkpt ARGS and returns (report of the script's last
    line, CPU seconds of chkpt's snapshot children, bytes the run wrote to
    the disk, stderr). The run's total CPU time and block output (its
    process and every child it reaped) come from os.wait4; the script's own
    process reports its CPU time itself, and writes nothing."""
    p = subprocess.Popen([sys.executable, "-m", "chkpt", *map(str, args)],
                         cwd=cwd, env=chkpt_env(), stdin=subprocess.DEVNULL,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    # the outputs are small (a pipe holds them): read once the run is gone
    _, status, ru = os.wait4(p.pid, 0)
    out, err = p.stdout.read().decode(), p.stderr.read().decode()
    p.stdout.close()
    p.stderr.close()
    p.returncode = os.waitstatus_to_exitcode(status)
    assert p.returncode == 0, err
    rep = json.loads(out.splitlines()[-1])
    total = ru.ru_utime + ru.ru_stime
    # what the script's process did after its last line (python's exit) is
    # counted as the children's: it only makes the check stricter
    return rep, total - rep["self_cpu"], ru.ru_oublock * 512, err


def disk_bandwidth(where, mib=128):
    """Bytes per second this disk takes to write and fsync MIB MiB."""
    buf = os.urandom(1 << 20)
    path = where / "bandwidth.tmp"
    t = time.monotonic()
    with open(path, "wb") as f:
        for _ in range(mib):
            f.write(buf)
        f.flush()
        os.fsync(f.fileno())
    took = time.monotonic() - t
    path.unlink()
    return (mib << 20) / took


def autos(store):
    if not (store / "snapshots").exists():
        return []
    return [s for s in chkpt.snapshots(str(store)) if s.kind == "auto"]


def test_default_is_adaptive_and_snapshots_a_changing_script_often(tmp_path):
    """A 10 s script whose small state changes: the default takes several
    automatic snapshots, at least a second apart, none in the first second;
    -f 60000 (the old default) takes none in a run shorter than a minute.
    When a snapshot starts is when the script's process creates its child
    (the kernel keeps that time): the time in a snapshot's metadata is the
    child's, which a loaded machine may start hundreds of ms late."""
    write(tmp_path, "job.py", REWRITER)
    r = run_chkpt(["-o", "auto", "job.py", "2", "10", "all"], tmp_path,
                  timeout=120)
    assert r.returncode == 0, r.stderr
    assert chkpt_lines(r.stderr) == []
    rep = json.loads(r.stdout.splitlines()[-1])
    # the timer's: boundary snapshots (for --resume, between two top-level
    # statements: before the loop) come by their own rule
    got = [s for s in autos(tmp_path / "auto") if "statement" not in s.meta]
    assert len(got) >= 3, got
    # the processes created in the loop are the timer's
    forks = rep["forks"]
    assert len(forks) >= 3, forks
    # (one tick of the kernel's clock: 10 ms; boundary snapshots come after
    # 2 s of work)
    assert rep["every"][0] >= 0.99, rep["every"]
    assert min(b - a for a, b in zip(forks, forks[1:])) >= 0.98, forks
    r = run_chkpt(["-f", "60000", "-o", "old", "job.py", "2", "4", "all"],
                  tmp_path, timeout=120)
    assert r.returncode == 0, r.stderr
    assert len(autos(tmp_path / "old")) <= 1


def test_frequency_auto_can_be_set_and_read(tmp_path):
    write(tmp_path, "job.py", """
        import chkpt
        ck = chkpt.Checkpoint.get_global_singleton()
        print(ck.frequency, chkpt._chkpt.DEFAULT_FREQUENCY)
        ck.frequency = 100
        print(ck.frequency)
        ck.frequency = "auto"
        print(ck.frequency, repr(ck).split()[2])
        try:
            ck.frequency = "often"
        except TypeError as e:
            print("TypeError")
        import time
        import numpy as np
        state = np.ones(1 << 18)
        t = time.monotonic()
        while time.monotonic() - t < 3:
            state[0] += 1
            time.sleep(0.01)
    """)
    r = run_chkpt(["-f", "-1", "-o", "ck", "job.py"], tmp_path)
    assert r.stdout.split("\n")[:4] == ["-1 auto", "100", "auto frequency='auto'",
                                        "TypeError"], r.stderr
    # switched to auto while running, automatic snapshots start
    assert len(autos(tmp_path / "ck")) >= 1


def reported_cost(err):
    """How many snapshot processes the run had, and the seconds of CPU and
    of disk time they took, as chkpt measured them (its -v line at exit)."""
    (line,) = [l for l in chkpt_lines(err) if "snapshot process(es) over" in l]
    m = re.search(r"^chkpt: (\d+) snapshot process\(es\) over [0-9.]+ s: "
                  r"([0-9.]+) s of CPU \([0-9.]+%\), ([0-9.]+) s of disk time",
                  line)
    assert m, line
    return int(m[1]), float(m[2]), float(m[3])


@pytest.mark.parametrize("mode,mib,seconds", [("all", 96, 25), ("little", 32, 16)])
def test_children_stay_within_the_budget(tmp_path, mode, mib, seconds):
    """A script rewriting 96 MiB of state as fast as it can for 25 s, and
    one changing a chunk of 32 MiB every 2 s for 16 s: the snapshot
    children's CPU time, and the bytes the run writes over this disk's
    bandwidth (measured here, before and after: their mean), stay within the
    budget (5% of the run's wall time) while snapshots are taken. The
    margins: 1.5x for the CPU, 2x for the disk, whose bandwidth other
    processes on a shared machine change several times over within seconds
    (from 120 to 1500 MB/s on the 2-core VM this was written on). The
    first snapshot's cost is a guess until it has been measured (the
    script's memory at 250 MB/s: README): on a disk that other processes
    slow to 30 MB/s, a first one of 96 MiB alone is over 10% of 25 s. So
    the disk's check leaves out one state's worth of bytes (what the first
    one writes), the budget holds for the rest.
    Cheap snapshots come as often as the budget allows: at the cap of one a
    second, or until the budget is used (by chkpt's own measure, which
    counts the time a child is blocked syncing a disk that other processes
    keep busy: a machine's mood decides which). -f 1000 on the rewriting
    script shows the same measures going over them."""
    write(tmp_path, "job.py", REWRITER)
    bw = disk_bandwidth(tmp_path)

    def shares(opts, seconds):
        rep, cpu, written, err = children_cost(
            [*opts, "job.py", str(mib), str(seconds), mode], tmp_path)
        wall = rep["wall"]
        print(opts, "children cpu %.2f s, %.1f MB written, %.0f MB/s disk"
              % (cpu, written / 1e6, bw / 1e6), chkpt_lines(err)[-1:])
        return cpu / wall, written / wall, err, rep

    cpu, wrote, err, rep = shares(["-v", "-o", "ck"], seconds)
    bw = (bw + disk_bandwidth(tmp_path)) / 2
    disk = max(0, wrote - (mib << 20) / rep["wall"]) / bw
    n = len(autos(tmp_path / "ck"))
    print(mode, "snapshots", n, "cpu share %.3f disk share %.3f" % (cpu, disk))
    assert cpu <= 0.05 * 1.5 and disk <= 0.05 * 2, (cpu, disk)
    if mode == "little":
        took, own_cpu, own_disk = reported_cost(err)
        assert rep["every"], "no snapshot in %s s" % seconds
        # From the first one (when it comes is the guess's business: the
        # script's memory at 250 MB/s) to the end: at the cap of one a
        # second, or the budget used half at least (3.11's children cost
        # ~0.18 s of CPU here, and a busy disk's syncs seconds)
        span = rep["wall"] - rep["every"][0]
        print("from the first one: %d in %.1f s, %.2f s of CPU, %.2f s of disk"
              % (took, span, own_cpu, own_disk))
        assert (took >= 0.7 * span
                or max(own_cpu, own_disk) >= 0.05 / 2 * span), (
                    took, span, own_cpu, own_disk)
        return
    assert n >= 1
    cpu, wrote, _, _ = shares(["-f", "1000", "-o", "fixed"], 8)
    print("-f 1000 cpu share %.3f disk share %.3f" % (cpu, wrote / bw))
    assert cpu > 0.05 * 1.5 or wrote / bw > 0.05 * 2


def test_the_store_stays_bounded(tmp_path):
    """--keep-auto 3: of the script's 5 automatic snapshots, all but its
    newest 3 go, with the data only they used; its manual snapshot, and another
    script's automatic snapshots in the same store, stay; every snapshot
    left verifies."""
    store = tmp_path / "ck"
    write(tmp_path, "other.py", """
        import time
        import numpy as np
        other = np.random.rand(1 << 18)                 # 2 MiB
        t = time.monotonic()
        while time.monotonic() - t < 1.5:
            other[:] = np.random.rand(1 << 18)
            time.sleep(0.05)
    """)
    r = run_chkpt(["-f", "200", "-o", store, "other.py"], tmp_path)
    assert r.returncode == 0, r.stderr
    others = {s.path for s in autos(store)}
    assert len(others) >= 2
    # until 5 automatic snapshot processes were created (the kernel lists
    # them as the thread's children), which a loaded disk makes slower
    write(tmp_path, "job.py", """
        import threading, time
        import numpy as np
        import chkpt
        kids = "/proc/self/task/%d/children" % threading.get_native_id()
        state = np.random.rand(1 << 19)                 # 4 MiB
        chkpt.Checkpoint.get_global_singleton().snapshot("start")
        with open(kids) as f:
            before = set(f.read().split())
        seen = set()
        t = time.monotonic()
        while len(seen) < 5 and time.monotonic() - t < 60:
            state[:] = np.random.rand(1 << 19)          # all new data
            time.sleep(0.05)
            with open(kids) as f:
                seen |= set(f.read().split()) - before
    """)
    r = run_chkpt(["-v", "--keep-auto", "3", "-o", store, "job.py"], tmp_path,
                  timeout=120)
    assert r.returncode == 0, r.stderr
    taken = [l for l in chkpt_lines(r.stderr) if l.startswith("chkpt: auto snapshot")]
    assert len(taken) > 3, r.stderr         # more than kept: some went
    snaps = chkpt.snapshots(str(store))
    own = [s for s in snaps if s.kind == "auto" and s.script.endswith("job.py")]
    assert len(own) == 3
    assert others <= {s.path for s in snaps}
    assert [s.name for s in snaps if s.kind == "manual"] == ["start"]
    chunks = sum(p.stat().st_size for p in (store / "chunks").rglob("*")
                 if p.is_file())
    # the 3 kept, the manual one, the other script's (<= 2 MiB each), slack
    assert chunks <= (3 + 1) * 4.2e6 + len(others) * 2.2e6 + 1e6, chunks
    v = run_chkpt(["verify", store], tmp_path)
    assert v.returncode == 0, v.stdout + v.stderr


def test_the_default_keeps_ten_automatic_snapshots(tmp_path):
    """Without options the store keeps the script's newest 10 automatic
    snapshots, over all its runs; with an explicit -f every one stays (as
    before). How many one run takes is the budget's business (3.11's
    children cost more: CI once saw exactly 10 in 22 s), so the script runs
    again into the same store until it has taken more than 10."""
    write(tmp_path, "job.py", REWRITER)
    taken = []
    for _ in range(4):
        r = run_chkpt(["-v", "-o", "ck", "job.py", "1", "12", "all"], tmp_path,
                      timeout=120)
        assert r.returncode == 0, r.stderr
        taken += [l for l in chkpt_lines(r.stderr)
                  if l.startswith("chkpt: auto snapshot")]
        assert len(autos(tmp_path / "ck")) == min(len(taken), 10), taken
        if len(taken) > 10:
            break
    assert len(taken) > 10, "too few snapshots to show the default retention"
    # with -f, as many as a loaded machine's children allowed (one is
    # skipped while one is written): run again until more than 10
    taken = []
    for _ in range(4):
        r = run_chkpt(["-v", "-f", "200", "-o", "fixed", "job.py", "2", "3",
                       "all"], tmp_path, timeout=120)
        assert r.returncode == 0, r.stderr
        taken += [l for l in chkpt_lines(r.stderr)
                  if l.startswith("chkpt: auto snapshot")]
        assert len(autos(tmp_path / "fixed")) == len(taken), taken
        if len(taken) > 10:
            break
    assert len(taken) > 10, "too few snapshots to show -f keeps them all"


def cpu_slowness():
    """How many times its CPU time 20 ms of computation takes to run on
    this machine now (1 when a CPU is free for it)."""
    w, c = time.perf_counter(), time.process_time()
    n = 0
    while time.process_time() - c < 0.02:
        n += 1
    return (time.perf_counter() - w) / (time.process_time() - c)


def exit_latency(cmd, cwd, env):
    """Seconds from the script's last line (it prints time.monotonic(),
    system-wide) to the moment its process is gone."""
    p = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE,
                         stderr=subprocess.DEVNULL, text=True)
    out = p.stdout.read()
    p.wait()
    return time.monotonic() - float(out.split()[-1])


def test_exit_adds_nothing_when_no_snapshot_is_in_flight(tmp_path):
    """A script that ran long enough for automatic snapshots, the last one
    written before its end, exits as fast as under python, within a few ms
    of what chkpt's own modules add at interpreter teardown (measured
    against -f -1 with one manual snapshot, written at the start). (The
    script stops automatic snapshots before its last lines, which could
    otherwise take one that the exit then rightly waits for, and waits for
    the last one to be written.) A loaded machine adds tens of ms to any
    one exit at random: what is compared is the fastest of each, over
    rounds of the three interleaved, from 5 rounds until the fastest agree
    (a run that always waits never does) or 15. A machine whose CPUs are
    all busy makes every exit's work take longer: the few ms allowed are
    ms of a CPU as this machine gives it now (how many times its CPU time
    a short computation of the test's takes, at its least loaded moment
    of the rounds; 1 on an idle machine)."""
    write(tmp_path, "job.py", """
        import sys, time
        import numpy as np
        import chkpt
        state = np.ones(1 << 18)                         # 2 MiB
        if sys.argv[2] == "manual":
            chkpt.Checkpoint.get_global_singleton().snapshot()
        t = time.monotonic()
        while time.monotonic() - t < float(sys.argv[1]):
            state[0] += 1
            time.sleep(0.01)
        if sys.argv[2] != "-":
            ck = chkpt.Checkpoint.get_global_singleton()
            if sys.argv[2] == "stop":
                ck.frequency = -1
            ck.wait()                   # the last snapshot is written
        print(time.monotonic(), flush=True)
    """)
    env = chkpt_env()
    py = sys.executable
    got = {"python": [], "manual": [], "default": []}
    slow = []

    def agree(best):
        f = max(1.0, min(slow))
        return (best["default"] <= best["manual"] + 0.03 * f
                and best["default"] <= best["python"] + 0.05 * f)

    for i in range(15):
        # only the default's run needs the time for automatic snapshots:
        # the first one comes a second in
        runs = {"python": [py, "job.py", "0.3", "-"],
                "manual": [py, "-m", "chkpt", "-f", "-1", "-o", "m", "job.py",
                           "0.3", "manual"],
                "default": [py, "-m", "chkpt", "-o", f"d{i}", "job.py", "1.5",
                            "stop"]}
        slow.append(cpu_slowness())
        for k, cmd in runs.items():           # interleaved
            got[k].append(exit_latency(cmd, tmp_path, env))
        # each default run measured an exit after automatic snapshots
        assert len(autos(tmp_path / f"d{i}")) >= 1
        best = {k: min(v) for k, v in got.items()}
        if i >= 4 and agree(best):
            break
    print({k: "median %.1f ms, fastest %.1f ms of %d" % (
        statistics.median(v) * 1000, min(v) * 1000, len(v))
        for k, v in got.items()}, "CPU slowness %.1f" % min(slow))
    assert agree(best), (got, slow)


def test_exit_waits_for_the_snapshot_in_flight(tmp_path):
    """A snapshot of 256 MiB started on the script's last line is durable
    when the process is gone (the exit waited for it)."""
    write(tmp_path, "job.py", """
        import numpy as np
        import chkpt
        big = np.random.rand(32 << 20)                   # 256 MiB
        chkpt.Checkpoint.get_global_singleton().snapshot("last")
    """)
    r = run_chkpt(["-o", "ck", "job.py"], tmp_path, timeout=180)
    assert r.returncode == 0 and chkpt_lines(r.stderr) == [], r.stderr
    # (a loaded machine may take more than 2 s to fill big: then an
    # automatic snapshot, for --resume, may come before it)
    (snap,) = [s for s in chkpt.snapshots(str(tmp_path / "ck"))
               if s.kind == "manual"]
    assert snap.name == "last"
    assert chkpt.load(snap)["big"].nbytes == 256 << 20
