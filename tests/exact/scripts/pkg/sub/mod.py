"""A module inside a package, run with -m, using relative imports."""
import pickle
import sys
from dataclasses import dataclass

from . import helper
from .. import VALUE


@dataclass
class Item:
    name: str
    size: int


print("mod:", __name__, __package__, __spec__.name, __spec__.origin == __file__)
print("file:", __file__, "cached:", __cached__ is not None)
print("argv:", sys.argv)
print("path0:", sys.path[0])
print("names:", list(globals()))
print(helper.greet("mod"), VALUE)
print("repr:", repr(sys.modules["__main__"]))
item = Item("a", 3)
data = pickle.dumps(item)
print("pickled class path:", Item.__module__, Item.__qualname__)
print("roundtrip:", pickle.loads(data) == item)
print("doc:", __doc__)
if "--fail" in sys.argv:
    helper.greet(None, 1)
