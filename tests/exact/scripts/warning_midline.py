"""chkpt's own stderr lines must not land inside a line the script is
writing: here the script writes a progress line in two parts, and a snapshot
of a variable that cannot be pickled happens in between."""
import sys
import threading

try:
    from chkpt import Checkpoint
    ck = Checkpoint.get_global_singleton()
except (ImportError, AssertionError):
    ck = None

lock = threading.Lock()
sys.stderr.write("progress: ")
sys.stderr.flush()
if ck is not None:
    ck.track(lock)
    ck.snapshot()
    ck.wait()
sys.stderr.write("done\n")
print("finished")
