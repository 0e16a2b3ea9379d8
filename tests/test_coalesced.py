"""-f 0's coalesced snapshot: lines skipped while a snapshot is being
written are owed one snapshot of the script's module variables, and a
snapshot taken at a line of a sibling module (which holds that function's
variables, not __main__'s) does not pay that debt.

The race is made certain, not waited for: the script's first snapshot
holding `slow` blocks in its child until the script lets it go (a file),
the script's last lines run in a sibling module, and the module waits
for that child's exit on a pidfd (no line of the script's runs meanwhile),
so that the very next line, the last one, is the first after the child
ended.
"""
import os

import pytest

import chkpt
from conftest import run_chkpt

HELPER = '''
import os
import select
import time

PIDFILE = "pid"
RELEASE = "release"


class Slow:
    """Pickles only once the script wrote RELEASE (in the snapshot
    child: the script's process never pickles it)."""

    def __reduce__(self):
        if not os.path.exists(RELEASE):
            with open(PIDFILE + ".tmp", "w") as f:
                f.write(str(os.getpid()))
            os.replace(PIDFILE + ".tmp", PIDFILE)
            while not os.path.exists(RELEASE):
                time.sleep(0.005)
        return (Slow, ())


def finish():
    pid = int(open(PIDFILE).read())
    fd = os.pidfd_open(pid)
    open(RELEASE, "w").close()
    select.select([fd], [], [])
    os.close(fd)
'''

SCRIPT = '''
import os
import sys
import time
import helper
slow = helper.Slow()
while not os.path.exists(helper.PIDFILE):
    time.sleep(0.005)
final = "the last value"
helper.finish()
'''


@pytest.mark.skipif(not hasattr(os, "pidfd_open"), reason="needs pidfd_open")
def test_every_line_last_lines_in_a_sibling_module_keep_the_main_variables(
        tmp_path):
    (tmp_path / "helper.py").write_text(HELPER)
    (tmp_path / "main.py").write_text(SCRIPT)
    proc = run_chkpt(["-f", "0", "-z", "0", "-o", "st", "main.py"], tmp_path,
                     timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert [l for l in proc.stderr.splitlines() if l.startswith("chkpt:")] == []
    # the child that held `slow` did end before the script's last line
    assert (tmp_path / "release").exists()
    snaps = chkpt.snapshots(str(tmp_path / "st"))
    assert snaps, "no snapshot published"
    # the race happened: the child ended while the sibling module ran, and
    # its last line took a snapshot of its own (that function's variables)
    assert any(s.meta.get("function") == "finish" for s in snaps), [
        (s.line, s.variables) for s in snaps]
    newest = snaps[-1]
    assert newest.kind == "auto"
    values = chkpt.load(newest)
    # the owed snapshot: the script's module variables as the run ended
    assert values.get("final") == "the last value", (newest.variables,
                                                     newest.line)
    assert type(values["slow"]).__name__ == "Slow"
