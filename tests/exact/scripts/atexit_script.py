import atexit
import sys
order = ["first", "second"]     # data: the snapshot modes save it


@atexit.register
def first():
    print("first registered, runs last")


def second(arg, *, kw):
    print("second:", arg, kw)
    print("__file__ in globals at exit:", "__file__" in globals())
    print("__cached__ in globals at exit:", "__cached__" in globals())
    print("main module at exit:", sys.modules["__main__"].__name__,
          sorted(k for k in vars(sys.modules["__main__"]) if k.startswith("__")))


atexit.register(second, 1, kw=2)
atexit.register(lambda: print("failing handler") or 1 / 0)
print("script ends")
