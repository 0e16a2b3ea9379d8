from __future__ import annotations

import dataclasses
import inspect
import linecache
import sys
import typing


class Base:
    """A class of the script."""
    count: int
    name: "str"

    def method(self, x: int) -> list[int]:
        """Method doc."""
        return [x]


@dataclasses.dataclass
class Child(Base):
    extra: typing.Optional[float] = None


def function(a: Base, b: Child | None = None) -> dict[str, int]:
    return {}


print("hints:", typing.get_type_hints(Base))
print("hints child:", typing.get_type_hints(Child))
print("hints function:", typing.get_type_hints(function))
print("hints method:", typing.get_type_hints(Base.method))
print("getsource:\n" + inspect.getsource(function), end="")
print("getsource class:\n" + inspect.getsource(Base), end="")
print("getsourcelines:", inspect.getsourcelines(Base.method)[1])
print("getfile:", inspect.getfile(Child), inspect.getfile(function))
print("getsourcefile:", inspect.getsourcefile(Base))
print("getmodule:", inspect.getmodule(function).__name__,
      inspect.getmodule(Child) is sys.modules["__main__"])
print("getmodule frame:", inspect.getmodule(inspect.currentframe()).__name__)
print("getdoc:", inspect.getdoc(Base), inspect.getdoc(Base.method))
print("signature:", inspect.signature(function))
print("fields:", [f.name for f in dataclasses.fields(Child)])
print("linecache:", linecache.getline(__file__, 11).rstrip())
print("module source lines:", len(inspect.getsource(sys.modules["__main__"]).splitlines()))
print("currentframe:", inspect.currentframe().f_code.co_filename,
      inspect.currentframe().f_lineno)
print("getouterframes:", [(f.function, f.lineno) for f in inspect.getouterframes(inspect.currentframe())])
print("classify:", sorted(a.name for a in inspect.classify_class_attrs(Base) if not a.name.startswith("__")))
print("annotations flag:", bool(function.__code__.co_flags & 0x1000000))
print("raw annotations:", function.__annotations__)
