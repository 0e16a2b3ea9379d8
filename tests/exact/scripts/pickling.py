import collections
import copy
import copyreg
import enum
import functools
import pickle
import pickletools
import sys
import typing
from dataclasses import dataclass, field

import pickle_helper


@dataclass(frozen=True)
class Point:
    x: int
    y: int


@dataclass
class State:
    values: list[int] = field(default_factory=list)
    label: str = "s"


class Color(enum.Enum):
    RED = 1
    GREEN = 2


class Flags(enum.IntFlag):
    A = 1
    B = 2


Pair = collections.namedtuple("Pair", "left right")


class Typed(typing.NamedTuple):
    a: int
    b: str = "b"


class Plain:
    class Inner:
        def __init__(self):
            self.v = "inner"

    def __init__(self):
        self.items = {"k": [1, 2, 3]}

    def __eq__(self, other):
        return type(other) is Plain and other.items == self.items

    def method(self):
        return "method"


def square(n):
    return n * n


partial_square = functools.partial(square, 3)
objs = [Point(1, 2), State([1, 2, 3]), Color.GREEN, Flags.A | Flags.B,
        Pair(1, "r"), Typed(5), Plain(), Plain.Inner, square, partial_square,
        Plain().method, {Color.RED: Point(0, 0)}, Point, State]
for o in objs:
    data = pickle.dumps(o, protocol=pickle.HIGHEST_PROTOCOL)
    back = pickle.loads(data)
    names = sorted({arg for op, arg, pos in pickletools.genops(data)
                    if op.name in ("GLOBAL", "STACK_GLOBAL", "SHORT_BINUNICODE")
                    and isinstance(arg, str) and arg in ("__main__", "pickle_helper")})
    same = back == o or (callable(o) and not isinstance(o, type) and back() == o())
    print(type(o).__name__, "roundtrip ok:", same, "modules:", names,
          "copy ok:", copy.deepcopy(o) == o or callable(o))
    h_back, h_deep, h_copy = pickle_helper.roundtrip(o)
    print("   helper roundtrip:", h_back == o or callable(o))
for p in range(0, pickle.HIGHEST_PROTOCOL + 1):
    print("protocol", p, pickle.loads(pickle.dumps(State([p]), protocol=p)))
print("by name from helper:", pickle_helper.by_name())
print("qualname/module:", Point.__module__, Plain.Inner.__qualname__, square.__module__)
print("reduce:", Point(3, 4).__reduce_ex__(2)[0].__name__)
print("class lookup:", getattr(sys.modules[Point.__module__], "Point") is Point)


def unpicklable():
    class Local:
        pass
    return Local()


try:
    pickle.dumps(unpicklable())
except Exception as e:
    print("local class:", type(e).__name__, e)
try:
    pickle.dumps(lambda: 1)
except Exception as e:
    print("lambda:", type(e).__name__, e)
