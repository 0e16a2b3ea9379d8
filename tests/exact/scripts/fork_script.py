"""The script forks by itself: os.fork(), os.forkpty(), at-fork callbacks,
warnings recorded, its own thread, a fork its audit hook refuses. Each
child reports what it sees before the parent goes on, so the output has one
order. Threads are counted as the OS counts them (/proc/self/status), as
os.fork() does for its warning."""
import os
import re
import sys
import threading
import time
import warnings


def threads():
    fd = os.open("/proc/self/status", os.O_RDONLY)
    try:
        status = os.read(fd, 65536).decode()
    finally:
        os.close(fd)
    return int(status.split("Threads:")[1].split()[0])


def spin(n):
    """Python code with loops, where pending calls can run."""
    total = 0
    for i in range(n):
        total += i
    return total


def busy(seconds):
    """Lines of the script's own code, long enough for a timer tick."""
    end = time.monotonic() + seconds
    n = 0
    while time.monotonic() < end:
        n += 1
    return n


def fork_and_wait(report):
    sys.stdout.flush()
    pid = os.fork()
    if pid == 0:
        print("child:", report())
        sys.stdout.flush()
        os._exit(7)
    _, status = os.waitpid(pid, 0)
    print("parent: child exit", os.waitstatus_to_exitcode(status))


def child_view():
    return threads(), threading.active_count(), \
        [t.name for t in threading.enumerate()]


def plain():
    data = list(range(1000))
    for i in range(3):
        busy(0.03)
        data[0] = i
        fork_and_wait(child_view)


def forkpty():
    sys.stdout.flush()
    pid, fd = os.forkpty()
    if pid == 0:
        print("pty child:", child_view())
        sys.stdout.flush()
        os._exit(3)
    out = b""
    while True:
        try:
            chunk = os.read(fd, 1024)
        except OSError:             # EIO once the child closed the pty
            break
        if not chunk:
            break
        out += chunk
    os.close(fd)
    _, status = os.waitpid(pid, 0)
    print("parent read:", out.replace(b"\r\n", b"\n").decode())
    print("parent: child exit", os.waitstatus_to_exitcode(status))


seen = []


def callbacks():
    import logging                  # registers after_in_parent callbacks
    logging.getLogger("x").debug("x")
    os.register_at_fork(before=lambda: seen.append(("before", threads())))
    os.register_at_fork(
        before=lambda: seen.append(("before2", threads())),
        after_in_parent=lambda: seen.append(("in_parent", threads(), spin(20))),
        after_in_child=lambda: seen.append(("in_child", threads())))
    os.register_at_fork(after_in_parent=lambda: seen.append(("in_parent2", threads())))
    for i in range(5):
        busy(0.01)
        fork_and_wait(lambda: list(seen))
        print("parent saw:", seen)
        seen.clear()


def record():
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fork_and_wait(child_view)
        busy(0.01)
        fork_and_wait(child_view)
    print("warnings:", [re.sub(r"pid=\d+", "pid=N", str(w.message))
                        for w in caught])


def with_a_thread():
    stop = threading.Event()
    t = threading.Thread(target=stop.wait, name="worker")
    t.start()
    try:
        record()
    finally:
        stop.set()
        t.join()


def from_a_thread():
    t = threading.Thread(target=record, name="forker")
    t.start()
    t.join()


def refused():
    def hook(event, args):
        if event == "os.fork":
            raise RuntimeError("no forking here")
    sys.addaudithook(hook)
    for _ in range(3):
        try:
            os.fork()
        except RuntimeError as e:
            print("refused:", e)
        busy(0.02)


def introspect():
    """The functions the script forks with are python's own."""
    import inspect
    import pickle
    import posix
    for f in (os.fork, os.forkpty):
        print(f is getattr(posix, f.__name__), f.__name__, f.__qualname__,
              f.__module__, f.__self__ is posix, re.sub("0x[0-9a-f]+", "", repr(f)),
              f.__doc__, inspect.signature(f), f.__text_signature__,
              pickle.loads(pickle.dumps(f)) is f, f == getattr(posix, f.__name__))


if __name__ == "__main__":
    {"introspect": introspect, "fork": plain, "forkpty": forkpty, "callbacks": callbacks,
     "record": record, "thread": with_a_thread, "from_thread": from_a_thread,
     "refused": refused}[sys.argv[1]]()
    print("end", threading.active_count())
