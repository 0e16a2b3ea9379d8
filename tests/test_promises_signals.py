"""README promises about signals, `debug` and `explore` that no other test
held (issue 25, point 1):

- a SIGTERM that comes while a snapshot child is writing: that snapshot is
  finished first, then the signal's own is taken; both are listed and load,
  and the process dies by SIGTERM;
- nothing salient: SIGTERM writes no snapshot and the process dies by it;
- SIGUSR1: where the disposition is not python's default (the job started
  with it ignored, the script ignores it, or installs its own handler)
  chkpt stays out of the way; with the default one, each SIGUSR1 takes a
  snapshot and the script goes on;
- `debug` on the snapshot of an uncaught Ctrl-C opens pdb on the script's
  frame;
- `explore` runs IPython when it is installed.

Real scripts in subprocesses. Ordering comes from events (a file the script
or the snapshot child writes, a snapshot published in the store, the
process's exit), never from sleeps."""
import os
import pty
import select
import signal
import subprocess
import sys
import textwrap
import time

from conftest import chkpt_env, chkpt_lines, run_chkpt, run_python


def default_signals():
    # the test runner may ignore SIGINT; a user's shell does not
    for s in (signal.SIGINT, signal.SIGTERM, signal.SIGUSR1):
        signal.signal(s, signal.SIG_DFL)


def wait_until(cond, what, timeout=60):
    """Polls cond() until true; fails after timeout seconds."""
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting for " + what)
        time.sleep(0.005)


def start(tmp_path, script, opts=(), preexec=default_signals):
    """Starts `python -m chkpt -o STORE OPTS job.py CTL` in tmp_path/work;
    CTL is a directory through which the script and the test signal each
    other with files."""
    work = tmp_path / "work"
    work.mkdir(exist_ok=True)
    (work / "job.py").write_text(textwrap.dedent(script))
    ctl = tmp_path / "ctl"
    ctl.mkdir(exist_ok=True)
    store = tmp_path / "store"
    p = subprocess.Popen(
        [sys.executable, "-m", "chkpt", "-o", str(store), *opts, "job.py", str(ctl)],
        cwd=work, env=chkpt_env(), stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        preexec_fn=preexec)
    return p, store, ctl


def wait_file(p, path, timeout=60):
    """Waits for path to exist while p runs (fails at once if p ended)."""
    def there():
        if path.exists():
            return True
        if p.poll() is not None:
            out, err = p.communicate()
            raise AssertionError(f"the script ended ({p.returncode}) before "
                                 f"{path.name}:\n{out}\n{err}")
        return False
    wait_until(there, path.name, timeout)


def finish(p, timeout=60):
    out, err = p.communicate(timeout=timeout)
    return p.returncode, out, err


def published(store):
    return sorted((store / "snapshots").glob("*.ckpt"))


def listed(store, tmp_path, code=""):
    """[(kind, name, variables, time)] of every snapshot as a fresh process
    in another directory lists them (oldest first), after loading each;
    `code` runs for each with s (the SnapshotInfo) and d (what it loads)."""
    away = tmp_path / "away"
    away.mkdir(exist_ok=True)
    body = textwrap.indent(textwrap.dedent(code), "    ")
    prog = f'''
import chkpt
for s in chkpt.snapshots({str(store)!r}):
    d = chkpt.load(s)
    print("SNAP", s.kind, s.name, ",".join(sorted(d)), repr(s.time))
{body}
'''
    r = run_python(["-c", prog], away)
    assert r.returncode == 0, r.stderr
    return r.stdout


def signal_delivered(pid, signum):
    """True once signum is no longer pending for process pid (its handler
    ran), or the process is gone (a zombie counts as gone)."""
    try:
        status = open(f"/proc/{pid}/status").read()
    except FileNotFoundError:
        return True
    pending = 0
    for line in status.splitlines():
        if line.startswith("State:") and line.split()[1] in "ZX":
            return True
        if line.startswith(("SigPnd:", "ShdPnd:")):
            pending |= int(line.split()[1], 16)
    return not pending & (1 << (signum - 1))


# ---------------------------------------------------------------------------
# SIGTERM while a snapshot child is writing

CHILD_IN_FLIGHT = '''\
import os, sys, time
from chkpt import Checkpoint

CTL = sys.argv[1]
ck = Checkpoint.get_global_singleton()


def log(what):
    with open(os.path.join(CTL, "log"), "a") as f:
        f.write(f"{what} {os.getpid()} {time.monotonic()!r}\\n")


class Slow:
    """Pickled in the snapshot child: says so with a file, then keeps the
    child busy until the test says go (at most 4 s: an object's budget
    is 5 s)."""
    def __reduce__(self):
        log("start")
        open(os.path.join(CTL, f"pickling-{os.getpid()}"), "w").close()
        t0 = time.monotonic()
        while (not os.path.exists(os.path.join(CTL, "go"))
               and time.monotonic() - t0 < 4):
            time.sleep(0.002)
        log("end")
        return (Slow, ())


slow = ck.track(Slow())
data = list(range(1000))
step = 1
ck.snapshot("first")          # returns at once; its child pickles slow
step = 2
open(os.path.join(CTL, "ready"), "w").close()
while True:
    time.sleep(0.01)
'''


def test_sigterm_while_a_child_writes_finishes_it_then_takes_its_own(tmp_path):
    p, store, ctl = start(tmp_path, CHILD_IN_FLIGHT, opts=("-z", "0", "-f", "-1"))
    # the script is past step = 2, and the first snapshot's child is
    # inside Slow.__reduce__: in flight
    wait_file(p, ctl / "ready")
    wait_until(lambda: any(ctl.glob("pickling-*")) or p.poll() is not None,
               "the first snapshot child to pickle")
    assert p.poll() is None, p.communicate()
    assert published(store) == []
    p.send_signal(signal.SIGTERM)
    # the child goes on only once the script got the SIGTERM: a process
    # that ended without waiting for it would take it along
    wait_until(lambda: p.poll() is not None or signal_delivered(p.pid, signal.SIGTERM),
               "SIGTERM's delivery")
    (ctl / "go").touch()
    rc, out, err = finish(p)
    assert rc == -signal.SIGTERM, err
    assert (out, err) == ("", "")
    snaps = [l.split() for l in listed(store, tmp_path, '''
        assert d["data"] == list(range(1000)), d["data"][:5]
        assert type(d["slow"]).__name__ == "Slow"
        print("STEP", d["step"])
    ''').splitlines()]
    kinds = [(s[1], s[2], s[3]) for s in snaps if s[0] == "SNAP"]
    assert kinds == [("manual", "first", "CTL,data,slow,step"),
                     ("signal", "SIGTERM", "CTL,data,slow,step")], snaps
    assert [s[1] for s in snaps if s[0] == "STEP"] == ["1", "2"]
    t_first, t_signal = (float(s[4]) for s in snaps if s[0] == "SNAP")
    assert t_first < t_signal
    # the signal's child began pickling after the first one had finished
    log = [l.split() for l in (ctl / "log").read_text().splitlines()]
    assert [(what, pid) for what, pid, _ in log] == [
        ("start", log[0][1]), ("end", log[0][1]),
        ("start", log[2][1]), ("end", log[2][1])], log
    assert log[0][1] != log[2][1]
    assert float(log[2][2]) > float(log[1][2])
    assert run_chkpt(["verify", store], tmp_path).returncode == 0


# ---------------------------------------------------------------------------
# nothing salient

NOTHING_SALIENT = '''\
import os, sys, time
CTL = sys.argv[1]
n = 3
name = "small"
values = [1.5, 2.5]
open(os.path.join(CTL, "ready"), "w").close()
while True:
    n += 1
    time.sleep(0.01)
'''


def sigterm_when_ready(tmp_path, opts):
    p, store, ctl = start(tmp_path, NOTHING_SALIENT, opts=opts)
    wait_file(p, ctl / "ready")
    p.send_signal(signal.SIGTERM)
    rc, out, err = finish(p)
    (ctl / "ready").unlink()
    return rc, out, err, store


def test_sigterm_with_nothing_salient_writes_nothing_and_dies_by_it(tmp_path):
    rc, out, err, store = sigterm_when_ready(tmp_path, ())
    assert (rc, out, err) == (-signal.SIGTERM, "", "")
    assert published(store) == []
    # the same script, where its small variables count (-z 0): the signal
    # snapshot is there, so the one above was not written for that reason
    rc, out, err, store = sigterm_when_ready(tmp_path, ("-z", "0"))
    assert (rc, out, err) == (-signal.SIGTERM, "", "")
    snaps = listed(store, tmp_path).split()
    assert snaps[:4] == ["SNAP", "signal", "SIGTERM", "CTL,n,name,values"]
    assert len(published(store)) == 1


# ---------------------------------------------------------------------------
# SIGUSR1

USR1 = '''\
import os, signal, sys, time
CTL = sys.argv[1]
data = list(range(100))
count = 0
{setup}
d = signal.getsignal(signal.SIGUSR1)
print("disposition", getattr(d, "name", None) or d.__name__, flush=True)
open(os.path.join(CTL, "ready"), "w").close()
while not os.path.exists(os.path.join(CTL, "stop")):
    count += 1
    time.sleep(0.005)
print("went on", flush=True)
'''

OWN_HANDLER = '''\
def mine(signum, frame):
    global handled
    handled += 1
    os.write(1, b"handler ran\\n")
    open(os.path.join(CTL, "handled"), "w").close()
handled = 0
signal.signal(signal.SIGUSR1, mine)
'''


def test_sigusr1_twice_two_snapshots_and_the_script_goes_on(tmp_path):
    # -f -1: the only snapshots are the signals'
    p, store, ctl = start(tmp_path, USR1.format(setup=""), opts=("-z", "0", "-f", "-1"))
    wait_file(p, ctl / "ready")
    for n in (1, 2):
        p.send_signal(signal.SIGUSR1)
        # the next one only once this one is published
        wait_until(lambda: len(published(store)) >= n or p.poll() is not None,
                   f"snapshot {n}", timeout=30)
    (ctl / "stop").touch()
    rc, out, err = finish(p)
    assert (rc, err) == (0, ""), err
    assert out == "disposition SIG_DFL\nwent on\n"
    lines = listed(store, tmp_path, 'print("COUNT", d["count"])').splitlines()
    snaps = [l.split()[1:4] for l in lines if l.startswith("SNAP")]
    assert snaps == [["signal", "SIGUSR1", "CTL,count,d,data"]] * 2
    counts = [int(l.split()[1]) for l in lines if l.startswith("COUNT")]
    assert counts[0] <= counts[1]


def run_non_default(tmp_path, setup, preexec=default_signals):
    p, store, ctl = start(tmp_path, USR1.format(setup=setup),
                          opts=("-z", "0", "-f", "-1"), preexec=preexec)
    wait_file(p, ctl / "ready")
    p.send_signal(signal.SIGUSR1)
    return p, store, ctl


def test_sigusr1_ignored_by_the_script_is_ignored(tmp_path):
    p, store, ctl = run_non_default(
        tmp_path, "signal.signal(signal.SIGUSR1, signal.SIG_IGN)")
    # an ignored signal is dropped when it is sent: the script sees no
    # more of it; one chkpt had kept would be handled before `stop` is seen
    (ctl / "stop").touch()
    rc, out, err = finish(p)
    assert published(store) == []
    assert (rc, out, err) == (0, "disposition SIG_IGN\nwent on\n", "")


def test_sigusr1_ignored_when_the_job_started_is_left_alone(tmp_path):
    def ignore_usr1():
        default_signals()
        signal.signal(signal.SIGUSR1, signal.SIG_IGN)
    p, store, ctl = run_non_default(tmp_path, "", preexec=ignore_usr1)
    (ctl / "stop").touch()
    rc, out, err = finish(p)
    assert published(store) == []
    assert (rc, out, err) == (0, "disposition SIG_IGN\nwent on\n", "")


def test_sigusr1_runs_the_scripts_own_handler_and_no_snapshot(tmp_path):
    p, store, ctl = run_non_default(tmp_path, OWN_HANDLER)
    wait_file(p, ctl / "handled")
    (ctl / "stop").touch()
    rc, out, err = finish(p)
    assert (rc, err) == (0, "")
    assert out == "disposition mine\nhandler ran\nwent on\n"
    assert published(store) == []


# ---------------------------------------------------------------------------
# debug on a Ctrl-C snapshot

CTRL_C = '''\
import os, sys, time
CTL = sys.argv[1]
total = 41


def work(n):
    secret = f"value-{n}"
    items = list(range(n))
    open(os.path.join(CTL, "ready"), "w").close()
    while True:
        time.sleep(0.01)


work(7)
'''


def test_debug_on_a_sigint_snapshot_opens_pdb_at_the_scripts_frame(tmp_path):
    p, store, ctl = start(tmp_path, CTRL_C)
    wait_file(p, ctl / "ready")
    p.send_signal(signal.SIGINT)
    rc, out, err = finish(p)
    assert rc == -signal.SIGINT
    assert err.splitlines()[-1] == "KeyboardInterrupt"
    assert chkpt_lines(err) == []
    snaps = listed(store, tmp_path).split()
    assert snaps[:3] == ["SNAP", "signal", "SIGINT"]
    script = tmp_path / "work" / "job.py"
    script.unlink()                     # debug needs only the snapshot
    away = tmp_path / "elsewhere"
    away.mkdir()
    r = run_chkpt(["debug", store], away,
                  input="where\np secret, items, n\nup\np total, sorted(k for k in locals() if not k.startswith('__'))\nq\n")
    assert r.returncode == 0, r.stderr
    prompts = r.stdout.split("(Pdb) ")
    # where: the script's two frames, work's current (time.sleep, C code,
    # is not a frame of the script), at the line the Ctrl-C came in work
    where = prompts[1].splitlines()
    assert where[:2] == [f"  {script}(14)<module>()", "-> work(7)"], where
    line = int(where[2].split("(")[1].split(")")[0])
    assert where[2:] == [f"> {script}({line})work()",
                         "-> " + CTRL_C.splitlines()[line - 1].strip()], where
    assert 9 <= line <= 11, where
    assert prompts[2] == "('value-7', [0, 1, 2, 3, 4, 5, 6], 7)\n"
    assert prompts[4] == "(41, ['CTL', 'os', 'sys', 'time', 'total', 'work'])\n"
    assert "***" not in r.stdout


# ---------------------------------------------------------------------------
# explore with IPython

EXPLORED = '''\
from chkpt import Checkpoint
grid = [[i * j for j in range(4)] for i in range(3)]
label = "run-12"
Checkpoint.get_global_singleton().snapshot("for-explore")
'''


def read_until(fd, proc, buf, want, timeout=90):
    """Reads the pty into buf (a bytearray) until `want` is in it; fails at
    once on the plain console's prompt (IPython's are `In [n]:`)."""
    deadline = time.monotonic() + timeout
    while want not in buf:
        if b"\n>>> " in buf:
            raise AssertionError("the plain console, not IPython:\n"
                                 + buf.decode(errors="replace"))
        left = deadline - time.monotonic()
        if left <= 0:
            raise AssertionError(f"no {want!r} from explore:\n{buf.decode(errors='replace')}")
        r, _, _ = select.select([fd], [], [], min(left, 1))
        if r:
            try:
                chunk = os.read(fd, 65536)
            except OSError:         # EIO: the other side is closed
                chunk = b""
            if not chunk:
                raise AssertionError(f"explore ended ({proc.poll()}) before {want!r}:\n"
                                     + buf.decode(errors="replace"))
            buf += chunk


def test_explore_runs_ipython_with_the_variables(tmp_path):
    work = tmp_path / "work"
    work.mkdir()
    (work / "ex.py").write_text(EXPLORED)
    store = tmp_path / "store"
    r = run_chkpt(["-z", "0", "-o", store, "ex.py"], work)
    assert r.returncode == 0, r.stderr
    away = tmp_path / "away"
    away.mkdir()
    # explore chooses IPython when its stdin is a terminal: a pty
    master, slave = pty.openpty()
    env = chkpt_env({"IPYTHONDIR": str(tmp_path / "ipython")})
    proc = subprocess.Popen([sys.executable, "-m", "chkpt", "explore", str(store)],
                            cwd=away, env=env, stdin=slave, stdout=slave,
                            stderr=slave, start_new_session=True)
    os.close(slave)
    buf = bytearray()
    try:
        read_until(master, proc, buf, b"In [1]:")
        os.write(master, b"print('SHELL', type(get_ipython()).__name__, "
                         b"'SUM', sum(map(sum, grid)), label.upper())\n")
        read_until(master, proc, buf, b"SUM 18 RUN-12")
        os.write(master, b"exit\n")
        assert proc.wait(timeout=60) == 0, buf.decode(errors="replace")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(master)
    text = buf.decode(errors="replace")
    assert "SHELL TerminalInteractiveShell SUM 18 RUN-12" in text
    assert "variables: grid, label" in text
    assert "Traceback" not in text and "Error" not in text


SLOW_THEN_CRASH = '''\
import time
from chkpt import Checkpoint

class Slow:
    def __reduce__(self):           # runs in the snapshot's child
        time.sleep(1.0)
        return (Slow, ())

slow = Slow()
ck = Checkpoint.get_global_singleton()
ck.snapshot("before")               # still being written at the crash
answer = 41
answer / 0
'''


def test_debug_of_a_store_opens_its_crash_even_when_it_is_not_the_newest(tmp_path):
    """README: `python -m chkpt debug checkpoints` after a crash opens pdb
    on the crash. A snapshot still being written when the script crashed is
    published after the crash's, so the store's newest is not the crash:
    debug takes the newest snapshot with a saved traceback."""
    work = tmp_path / "work"
    work.mkdir()
    (work / "job.py").write_text(SLOW_THEN_CRASH)
    r = run_chkpt(["-f", "-1", "-z", "0", "job.py"], work)
    assert r.returncode == 1 and "ZeroDivisionError" in r.stderr, r.stderr
    import chkpt
    kinds = [s.kind for s in chkpt.snapshots(str(work / "checkpoints"))]
    assert sorted(kinds) == ["crash", "manual"], kinds
    r = run_chkpt(["debug", "checkpoints"], work, input="p answer\nq\n")
    assert r.returncode == 0, r.stderr
    assert "(Pdb) 41\n" in r.stdout, r.stdout
