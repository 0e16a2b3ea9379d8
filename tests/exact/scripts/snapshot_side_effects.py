"""What a snapshot does must not be visible to the script: after chkpt
pickled the script's objects, their classes, the objects themselves and the
modules look as they did (the seed post's pattern: the same script runs with
or without chkpt)."""
import copyreg
import sys
from dataclasses import dataclass, field

try:
    from chkpt import Checkpoint
    ck = Checkpoint.get_global_singleton()
except (ImportError, AssertionError):
    ck = None       # not running under chkpt: the same script runs on


class Plain:
    def __init__(self):
        self.values = list(range(10))


class Slotted:
    __slots__ = ("a", "b")

    def __init__(self):
        self.a, self.b = 1, [2]


@dataclass
class State:
    x: list[int] = field(default_factory=list)


class Custom:
    def __init__(self):
        self.data = bytearray(b"abc")

    def __reduce__(self):
        return (Custom, ())


plain, slotted, state, custom = Plain(), Slotted(), State([1, 2, 3]), Custom()
big = bytearray(2_000_000)


def snapshot_of_everything():
    if ck is not None:
        for o in (plain, slotted, state, big):
            ck.track(o)
        ck.snapshot()
        ck.wait()


def show():
    for cls in (Plain, Slotted, State, Custom):
        print(cls.__name__, sorted(vars(cls)), "__slotnames__" in vars(cls))
    print("plain", vars(plain))
    print("slotted", slotted.a, slotted.b)
    print("state", state)
    print("copyreg extension registry", len(copyreg._extension_registry),
          "dispatch table", len(copyreg.dispatch_table))
    print("modules with chkpt-looking names",
          sorted(m for m in sys.modules if "chkpt" in m and m != "chkpt"
                 and not m.startswith("chkpt.")))


snapshot_of_everything()
show()
snapshot_of_everything()
show()
