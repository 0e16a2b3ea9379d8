"""The pickle opcode walker (src/store/pickle_refs.c, which gives a
snapshot's `module_refs`) against an independent walk of the same bytes:
pickletools.genops with a real stack and memo. For pickles of many shapes,
as python's Pickler writes them (protocols 2-5, also after
pickletools.optimize), the walker must reach the end (result 1) and name
exactly the globals, in the same order, that the reference finds; cut at
an opcode boundary it names those before the cut (result 1: the end of the
data), cut inside an opcode's argument it says it cannot follow (0).

The walker runs in tests/c/pickle_refs_dump.c, built here from the
checkout's sources."""
import collections
import datetime
import decimal
import enum
import fractions
import functools
import os
import pickle
import pickletools
import struct
import subprocess
import uuid
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from conftest import REPO

SRC = Path(REPO) / "src" / "store"
HARNESS = Path(REPO) / "tests" / "c" / "pickle_refs_dump.c"


@pytest.fixture(scope="module")
def walker(tmp_path_factory):
    exe = tmp_path_factory.mktemp("walker") / "pickle_refs_dump"
    subprocess.run(
        [os.environ.get("CC", "cc"), "-std=c11", "-g", "-O1", "-D_GNU_SOURCE",
         "-Wall", "-Wextra", "-Werror", f"-I{SRC}", "-o", str(exe),
         str(HARNESS), str(SRC / "pickle_refs.c")], check=True)

    def walk(inputs):
        """[(result, [(module bytes, name bytes)])] for each input."""
        feed = b"".join(struct.pack("<Q", len(b)) + b for b in inputs)
        p = subprocess.run([str(exe)], input=feed, capture_output=True,
                           timeout=60, check=True)
        lines = p.stdout.decode().splitlines()
        out = []
        i = 0
        while i < len(lines):
            _, r, n = lines[i].split()
            pairs = [tuple(bytes.fromhex(h) for h in l.split(" "))
                     for l in lines[i + 1:i + 1 + int(n)]]
            out.append((int(r), pairs))
            i += 1 + int(n)
        assert len(out) == len(inputs)
        return out
    return walk


MARK = object()
STRINGS = {"SHORT_BINUNICODE", "BINUNICODE", "BINUNICODE8", "UNICODE"}


def reference(data):
    """(the globals GLOBAL and STACK_GLOBAL name, in order, [(index of
    the opcode, (module, name) as bytes)]; the position of each opcode), by
    pickletools with a real stack: each opcode pops what its
    stack_before says (down to the mark for a markobject) and pushes its
    stack_after; strings and memo slots keep their values."""
    stack, memo, pairs, ops = [], {}, [], []
    for op, arg, pos in pickletools.genops(data):
        ops.append(pos)
        name = op.name
        if name in STRINGS:
            stack.append(arg.encode("utf-8", "surrogatepass"))
            continue
        if name in ("BINGET", "LONG_BINGET", "GET"):
            stack.append(memo.get(int(arg)))
            continue
        if name == "MEMOIZE":
            memo[len(memo)] = stack[-1]
            continue
        if name in ("BINPUT", "LONG_BINPUT", "PUT"):
            memo[int(arg)] = stack[-1]
            continue
        if name == "GLOBAL":
            module, _, qual = arg.partition(" ")
            pairs.append((len(ops) - 1, (module.encode(), qual.encode())))
        if name == "STACK_GLOBAL":
            module, qual = stack[-2], stack[-1]
            if isinstance(module, bytes) and isinstance(qual, bytes):
                pairs.append((len(ops) - 1, (module, qual)))
        before = op.stack_before
        if pickletools.markobject in before:
            while stack.pop() is not MARK:
                pass
            below = before.index(pickletools.markobject)
        else:
            below = len(before)
        if below:
            del stack[-below:]
        stack.extend(MARK if s is pickletools.markobject else None
                     for s in op.stack_after)
    return pairs, ops


# ---- values of many shapes ----


class Colour(enum.Enum):
    RED = 1
    GREEN = 2


Point = collections.namedtuple("Point", "x y")


class Box:
    def __init__(self, *items):
        self.items = list(items)

    def __eq__(self, other):
        return type(other) is Box and other.items == self.items


class Slotted:
    __slots__ = ("a", "b")

    def __init__(self, a=1, b=2):
        self.a, self.b = a, b


def top_level_function():
    pass


atoms = st.one_of(
    st.none(), st.booleans(), st.integers(), st.integers(min_value=2**70),
    st.floats(allow_nan=False), st.complex_numbers(allow_nan=False),
    st.text(), st.text(min_size=300, max_size=400), st.binary(),
    st.binary(min_size=300, max_size=400).map(bytearray),
    st.sampled_from([
        Colour.RED, Colour.GREEN, top_level_function, Box, Slotted, len,
        decimal.Decimal("1.25"), fractions.Fraction(3, 7),
        datetime.date(2026, 12, 7), datetime.timedelta(seconds=5),
        uuid.UUID(int=12345), range(3, 9, 2), functools.partial(max, 1),
        collections.OrderedDict(a=1), collections.Counter("abca"),
        collections.deque([1, 2]), frozenset({1, 2}), Slotted(3, 4),
        pickle.PickleBuffer(b"buffer"), Ellipsis, NotImplemented, type(None),
        ValueError("boom"), slice(1, 5),
    ]),
)
values = st.recursive(
    atoms,
    lambda kids: st.one_of(
        st.lists(kids, max_size=6), st.tuples(kids, kids),
        st.dictionaries(st.text(max_size=5), kids, max_size=5),
        st.lists(kids, max_size=4).map(lambda l: Box(*l)),
        st.tuples(kids, kids).map(lambda t: Point(*t)),
        # the same objects twice: memo references (BINGET of a module
        # name already given)
        kids.map(lambda v: [v, v, (v,)]),
    ),
    max_leaves=30)


def pickles_of(value, protocol):
    try:
        data = pickle.dumps(value, protocol=protocol)
    except pickle.PicklingError:            # PickleBuffer below protocol 5
        return []
    return [data, pickletools.optimize(data)]


def check(walk, data_list):
    inputs, wants = [], []
    for data in data_list:
        found, ops = reference(data)
        inputs.append(data)
        wants.append((1, [pair for _, pair in found]))
        # cut at each opcode boundary: the pairs of the opcodes before (at
        # some 300 of them in a large pickle: each cut is a copy)
        ends = ops[1:] + [len(data)]
        stride = 1 if len(data) < 50_000 else max(1, len(ops) // 300)
        for k, (start, end) in enumerate(zip(ops, ends)):
            if k % stride:
                continue
            before = [pair for i, pair in found if i < k]
            inputs.append(data[:start])
            wants.append((1, before))
            # cut inside the argument of an opcode that has one
            if end - start > 1 and k + 1 < len(ops):
                inputs.append(data[:end - 1])
                wants.append((0, None))
    got = walk(inputs)
    for data, g, w in zip(inputs, got, wants):
        if w[1] is None:
            assert g[0] == 0, (data, g)
        else:
            assert g == w, (data, g, w)


@settings(max_examples=150, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(value=values, protocol=st.integers(2, 5))
def test_walker_names_what_pickletools_finds(walker, value, protocol):
    check(walker, pickles_of(value, protocol))


def test_walker_on_fixed_shapes(walker):
    """The shapes hypothesis may not reach: a long memo (LONG_BINGET past
    256 slots, a module's name memoized past them), frames of a large
    pickle, many classes of one module."""
    many = [Box(i) for i in range(300)] + [Point(i, i) for i in range(300)]
    big = ["x" * 70_000, Colour.RED, b"y" * 70_000, Box(Slotted())]
    # a module first named after 300 memo slots, then named again
    late = [f"s{i}" for i in range(300)] + [Box(1), Box(2), Point(1, 2),
                                            Colour.GREEN, Point(3, 4)]
    data = []
    for value in (many, big, late, [many, big, many]):
        for protocol in (2, 3, 4, 5):
            data += pickles_of(value, protocol)
    pairs = [p for _, p in reference(pickle.dumps(many, protocol=5))[0]]
    assert (b"test_pickle_walker", b"Box") in pairs      # the oracle sees them
    assert any(op.name == "LONG_BINGET" for op, _, _ in
               pickletools.genops(pickle.dumps(many, protocol=5)))
    check(walker, data)
