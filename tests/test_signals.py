"""Signal snapshots (issue 16): SIGTERM and Ctrl-C take a 'signal' snapshot
and the process ends as plain python would; SIGUSR1 takes one and the
script goes on; the script's own handlers win; a deadline bounds the
snapshot; a second signal or a SIGKILL during it corrupts nothing. Signals
are sent to real subprocesses."""
import os
import re
import signal
import subprocess
import sys
import textwrap
import time

import pytest

import chkpt

from conftest import chkpt_env, run_chkpt, run_python

WORK = '''\
import os, signal, sys, time
import numpy as np
arr = np.zeros(400_000)          # 3.2 MB: salient at the default -z
step = 0
{setup}
for step in range(1, 100_000):
    arr[:] = step
    if step == 3:
        print("ready", flush=True)
    {in_loop}
    time.sleep(0.01)
print("finished", step, flush=True)
'''


def default_signals():
    # the test runner may ignore SIGINT; a user's shell does not
    for s in (signal.SIGINT, signal.SIGTERM, signal.SIGUSR1):
        signal.signal(s, signal.SIG_DFL)


def start(tmp_path, script, opts=(), plain=False, preexec=default_signals):
    work = tmp_path / "work"
    work.mkdir(exist_ok=True)
    (work / "job.py").write_text(textwrap.dedent(script))
    store = tmp_path / "store"
    cmd = ([sys.executable, "job.py"] if plain else
           [sys.executable, "-m", "chkpt", "-o", str(store), *opts, "job.py"])
    p = subprocess.Popen(cmd, cwd=work, env=chkpt_env(), stdin=subprocess.DEVNULL,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         preexec_fn=preexec)
    p.before = []               # what the script printed before "ready"
    for line in p.stdout:
        if line == "ready\n":
            break
        p.before.append(line)
    else:
        raise AssertionError("the script ended early: " + p.stderr.read())
    return p, store


def finish(p, timeout=60):
    out, err = p.communicate(timeout=timeout)
    return p.returncode, out, err


def snapshots(store, tmp_path):
    """[(kind, name, step, arr[0], arr[-1])] of every snapshot, read by a
    fresh process in another directory."""
    away = tmp_path / "away"
    away.mkdir(exist_ok=True)
    code = f'''
import chkpt
for s in chkpt.snapshots({str(store)!r}):
    d = chkpt.load(s)
    a = d.get("arr")
    print(s.kind, s.name, d.get("step"),
          None if a is None else (float(a[0]), float(a[-1])))
'''
    p = run_python(["-c", code], away)
    assert p.returncode == 0, p.stderr
    return p.stdout.splitlines()


def verify(store, tmp_path):
    p = run_chkpt(["verify", store], tmp_path)
    assert p.returncode == 0, p.stdout + p.stderr


def test_sigterm_snapshot_then_death_by_sigterm(tmp_path):
    p, store = start(tmp_path, WORK.format(setup="", in_loop=""), opts=("-z", "0"))
    time.sleep(0.3)
    p.send_signal(signal.SIGTERM)
    rc, out, err = finish(p)
    assert rc == -signal.SIGTERM
    assert out == "" and err == ""          # as python: nothing printed, no atexit
    snaps = snapshots(store, tmp_path)
    assert len(snaps) == 1
    kind, name, step, first_last = snaps[0].split(" ", 3)
    assert (kind, name) == ("signal", "SIGTERM")
    # the state of that moment: arr and step agree
    assert first_last == f"({step}.0, {step}.0)"
    assert int(step) > 3
    verify(store, tmp_path)


def test_sigterm_exactly_as_python_without_chkpt_output(tmp_path):
    p, _ = start(tmp_path, WORK.format(setup="", in_loop=""), plain=True)
    p.send_signal(signal.SIGTERM)
    plain = finish(p)
    p, _ = start(tmp_path, WORK.format(setup="", in_loop=""))
    p.send_signal(signal.SIGTERM)
    under = finish(p)
    assert under == plain == (-signal.SIGTERM, "", "")


def test_sigint_snapshot_keyboard_interrupt_and_death_by_sigint(tmp_path):
    p, store = start(tmp_path, WORK.format(setup="", in_loop=""), opts=("-z", "0"))
    time.sleep(0.3)
    p.send_signal(signal.SIGINT)
    rc, out, err = finish(p)
    assert rc == -signal.SIGINT
    assert out == ""
    lines = err.splitlines()
    assert lines[0] == "Traceback (most recent call last):"
    assert lines[-1] == "KeyboardInterrupt"
    assert not any(l.startswith("chkpt:") for l in lines)
    snaps = snapshots(store, tmp_path)
    assert len(snaps) == 1
    kind, name, step, first_last = snaps[0].split(" ", 3)
    assert (kind, name) == ("signal", "SIGINT")
    assert first_last == f"({step}.0, {step}.0)"


def test_sigint_traceback_same_as_python(tmp_path):
    script = WORK.format(setup="", in_loop="if step == 5: os.kill(os.getpid(), signal.SIGINT)")
    p, _ = start(tmp_path, script, plain=True)
    plain = finish(p)
    p, store = start(tmp_path, script)
    under = finish(p)
    assert under == plain
    assert plain[0] == -signal.SIGINT
    assert snapshots(store, tmp_path)[0].startswith("signal SIGINT 5 ")


def published(store, n, timeout=60):
    """Waits until STORE holds N published snapshots (a manifest appears
    only once its snapshot is whole); fails after TIMEOUT seconds."""
    end = time.monotonic() + timeout
    while True:
        got = sorted((store / "snapshots").glob("*.ckpt")) \
            if (store / "snapshots").is_dir() else []
        if len(got) >= n:
            return got
        assert time.monotonic() < end, f"{len(got)} snapshot(s), not {n}"
        time.sleep(0.02)


def test_sigusr1_snapshot_and_script_goes_on(tmp_path):
    # each SIGUSR1 is sent once the one before has its snapshot: none may
    # be lost, and the script goes on after both (-f -1: no automatic
    # snapshot among them)
    script = WORK.format(setup="", in_loop="if os.path.exists('stop'): break")
    p, store = start(tmp_path, script, opts=("-z", "0", "-f", "-1"))
    p.send_signal(signal.SIGUSR1)
    published(store, 1)
    p.send_signal(signal.SIGUSR1)
    published(store, 2)
    (tmp_path / "work" / "stop").touch()
    rc, out, err = finish(p)
    assert (rc, err) == (0, "")
    assert re.fullmatch(r"finished \d+\n", out), out
    snaps = snapshots(store, tmp_path)
    assert len(snaps) == 2, snaps
    steps = []
    for s in snaps:
        kind, name, step, first_last = s.split(" ", 3)
        assert (kind, name) == ("signal", "SIGUSR1")
        assert first_last == f"({step}.0, {step}.0)"   # arr and step agree
        steps.append(int(step))
    assert 3 <= steps[0] <= steps[1] <= int(out.split()[1]), (steps, out)


def test_handler_installed_by_the_script_wins(tmp_path):
    setup = '''
def mine(signum, frame):
    # (os.write: the signal may come while print("ready") is writing)
    os.write(1, b"script handler " + signal.Signals(signum).name.encode() + b"\\n")
    sys.exit(7)
signal.signal(signal.SIGTERM, mine)
print("installed", signal.getsignal(signal.SIGUSR1) is signal.SIG_DFL, flush=True)
'''
    script = WORK.format(setup=setup, in_loop="")
    p, store = start(tmp_path, script, opts=("-z", "0"))
    assert p.before == ["installed True\n"]
    p.send_signal(signal.SIGTERM)
    rc, out, err = finish(p)
    assert rc == 7, err
    assert out == "script handler SIGTERM\n"
    assert not (store / "snapshots").exists() or not list((store / "snapshots").iterdir())


def test_signal_before_the_script_installs_its_handler_is_chkpts(tmp_path):
    # the other order: SIGTERM arrives while chkpt's handler is in place;
    # the script would install its own only later
    script = WORK.format(setup="", in_loop='''if step == 1000:
        signal.signal(signal.SIGTERM, lambda *a: sys.exit(7))''')
    p, store = start(tmp_path, script, opts=("-z", "0"))
    p.send_signal(signal.SIGTERM)
    rc, out, err = finish(p)
    assert rc == -signal.SIGTERM
    assert snapshots(store, tmp_path)[0].startswith("signal SIGTERM ")


def test_no_handler_where_the_disposition_is_not_default(tmp_path):
    def ignore_term():
        default_signals()
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    script = WORK.format(setup='print("disp", signal.getsignal(signal.SIGTERM) is signal.SIG_IGN, flush=True)',
                         in_loop="if step == 30: break")
    p, store = start(tmp_path, script, preexec=ignore_term)
    assert p.before == ["disp True\n"]
    p.send_signal(signal.SIGTERM)
    rc, out, err = finish(p)
    assert rc == 0 and out == "finished 30\n"
    # no signal snapshot (an automatic one of the default -f auto may come
    # when a loaded machine makes the run last past its first second)
    kinds = [s.kind for s in chkpt.snapshots(str(store))] \
        if (store / "snapshots").exists() else []
    assert "signal" not in kinds, kinds


def test_getsignal_and_signal_see_pythons_defaults(tmp_path):
    work = tmp_path / "work"
    work.mkdir()
    (work / "gs.py").write_text(textwrap.dedent('''\
        import signal
        for s in (signal.SIGTERM, signal.SIGUSR1, signal.SIGINT):
            h = signal.getsignal(s)
            print(repr(h), h is signal.SIG_DFL, h == signal.SIG_DFL)
        print(repr(signal.signal(signal.SIGTERM, signal.SIG_DFL)))
    '''))
    under = run_chkpt(["gs.py"], work)
    plain = run_python(["gs.py"], work)
    assert under.stdout == plain.stdout and under.returncode == 0
    assert "Handlers.SIG_DFL" in under.stdout


SLOW = '''
class Slow:
    def __reduce__(self):
        time.sleep(3)
        return (Slow, ())
slow = Slow()
'''


def test_deadline_gives_up_and_dies_as_python_would(tmp_path):
    p, store = start(tmp_path, WORK.format(setup=SLOW, in_loop=""),
                     opts=("-z", "0", "--signal-deadline", "500"))
    t0 = time.monotonic()
    p.send_signal(signal.SIGTERM)
    rc, out, err = finish(p)
    elapsed = time.monotonic() - t0
    assert rc == -signal.SIGTERM
    assert elapsed < 2.5, elapsed
    assert err == ("chkpt: the signal snapshot did not finish within "
                   "--signal-deadline; not written\n")
    assert not list((store / "snapshots").glob("*.ckpt"))
    verify(store, tmp_path)


def test_second_signal_during_the_snapshot_corrupts_nothing(tmp_path):
    again = '''
class Again:
    def __reduce__(self):
        os.kill(os.getpid(), signal.SIGTERM)     # a second SIGTERM, meanwhile
        os.kill(os.getpid(), signal.SIGUSR1)
        time.sleep(0.05)
        return (Again, ())
again = Again()
'''
    p, store = start(tmp_path, WORK.format(setup=again, in_loop=""), opts=("-z", "0"))
    p.send_signal(signal.SIGTERM)
    rc, out, err = finish(p)
    assert rc == -signal.SIGTERM and err == ""
    snaps = snapshots(store, tmp_path)
    assert len(snaps) == 1 and snaps[0].startswith("signal SIGTERM ")
    verify(store, tmp_path)


def test_sigkill_during_the_snapshot_leaves_the_store_consistent(tmp_path):
    big = '''
state = [np.random.rand(1_000_000) for _ in range(40)]     # 320 MB to write
'''
    script = WORK.format(setup=big, in_loop="")
    p, store = start(tmp_path, script, opts=("-z", "0"))
    p.send_signal(signal.SIGTERM)
    # SIGKILL as soon as the snapshot's chunks are being written
    chunks = store / "chunks"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and p.poll() is None:
        if chunks.exists() and any(chunks.iterdir()):
            break
        time.sleep(0.005)
    p.kill()
    rc, _, _ = finish(p)
    assert rc == -signal.SIGKILL, "the snapshot ended before the SIGKILL"
    verify(store, tmp_path)
    # no manifest was published, or a complete one; the store takes more
    snaps = snapshots(store, tmp_path)
    assert all(s.startswith("signal SIGTERM ") for s in snaps)
    again = run_chkpt(["gc", store, "--keep", "5"], tmp_path)
    assert again.returncode == 0, again.stderr
    verify(store, tmp_path)


def test_preemption_sigterm_then_sigkill_after_grace(tmp_path):
    """As Slurm or Kubernetes do it: SIGTERM in the middle of the work,
    SIGKILL after a grace period; the last 'signal' snapshot loads in a
    fresh process elsewhere with the state of that moment."""
    script = WORK.format(setup="history = []", in_loop="history.append(step)")
    p, store = start(tmp_path, script, opts=("-z", "0"))
    time.sleep(0.5)
    p.send_signal(signal.SIGTERM)
    try:
        p.wait(timeout=10)          # the grace period
    except subprocess.TimeoutExpired:
        p.kill()
    rc, _, _ = finish(p)
    assert rc == -signal.SIGTERM
    away = tmp_path / "away"
    away.mkdir()
    code = f'''
import chkpt
s = [x for x in chkpt.snapshots({str(store)!r}) if x.kind == "signal"][-1]
d = chkpt.load(s)
assert (d["arr"] == d["step"]).all()
assert d["history"] == list(range(1, d["step"] + 1)), d["history"][-3:]
print("ok", d["step"])
'''
    out = run_python(["-c", code], away)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("ok ") and int(out.stdout.split()[1]) > 3


def test_forked_child_dies_by_the_signal_without_snapshot(tmp_path):
    # a child forked by the script inherits chkpt's handler: it must die as
    # python's default would, and write nothing
    script = '''\
    import os, signal, sys, time
    import numpy as np
    arr = np.ones(400_000)
    for sig in (signal.SIGTERM, signal.SIGUSR1):
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:
            os.write(w, b"x")
            while True:
                time.sleep(0.01)
        os.read(r, 1)
        os.kill(pid, sig)
        _, status = os.waitpid(pid, 0)
        print(signal.Signals(sig).name, os.WIFSIGNALED(status) and os.WTERMSIG(status) == sig,
              flush=True)
    '''
    work = tmp_path / "work"
    work.mkdir()
    (work / "forks.py").write_text(textwrap.dedent(script))
    store = tmp_path / "store"
    under = run_chkpt(["-o", store, "-z", "0", "forks.py"], work)
    plain = run_python(["forks.py"], work)
    assert under.stdout == plain.stdout == "SIGTERM True\nSIGUSR1 True\n"
    assert under.stderr == plain.stderr == ""
    assert not (store / "snapshots").exists() or not list((store / "snapshots").iterdir())


# A C call that does not return to python for a long time (the GIL is
# released: python's own handler can only run once it returns).
LONG_C_CALL = "hashlib.pbkdf2_hmac('sha256', b'x', b'y', 200_000_000)"


def test_deadline_counts_from_the_signals_arrival(tmp_path):
    # the snapshot cannot start before the C call returns; the grace period
    # of the batch system runs from the signal, and so does the deadline
    script = f"""\
    import hashlib
    print("ready", flush=True)
    {LONG_C_CALL}
    print("finished", flush=True)
    """
    p, store = start(tmp_path, script, opts=("--signal-deadline", "1000"))
    time.sleep(0.2)
    t0 = time.monotonic()
    p.send_signal(signal.SIGTERM)
    rc, out, err = finish(p)
    elapsed = time.monotonic() - t0
    assert rc == -signal.SIGTERM
    assert elapsed < 5, elapsed
    assert err == ("chkpt: the signal snapshot did not finish within "
                   "--signal-deadline; not written\n")
    assert not list(store.glob("snapshots/*.ckpt"))


def test_forked_child_busy_in_c_dies_at_once(tmp_path):
    # multiprocessing's Pool.terminate() sends SIGTERM to workers that may
    # be inside a C call or about to block on a semaphore: they must die at
    # once, as python's default disposition makes them
    script = f"""\
    import hashlib, os, signal, time
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.write(w, b"x")
        {LONG_C_CALL}
        os._exit(0)
    os.read(r, 1)
    time.sleep(0.2)
    t0 = time.monotonic()
    os.kill(pid, signal.SIGTERM)
    _, status = os.waitpid(pid, 0)
    print(os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGTERM,
          time.monotonic() - t0 < 5, flush=True)
    """
    work = tmp_path / "work"
    work.mkdir()
    (work / "forks.py").write_text(textwrap.dedent(script))
    under = run_chkpt(["-o", tmp_path / "store", "forks.py"], work)
    plain = run_python(["forks.py"], work)
    assert plain.stdout == "True True\n", plain.stderr
    assert under.stdout == plain.stdout, under.stderr
    assert under.stderr == plain.stderr == ""
