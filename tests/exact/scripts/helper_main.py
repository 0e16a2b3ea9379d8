"""A module next to the script that looks at __main__."""
import sys

import __main__


def report():
    print("helper: __main__ is sys.modules['__main__']:",
          __main__ is sys.modules["__main__"])
    print("helper: __main__.__name__ =", __main__.__name__)
    print("helper: __main__.__file__ =", getattr(__main__, "__file__", None))
    print("helper: MARK =", getattr(__main__, "MARK", None))
    print("helper: own __name__ =", __name__, "file =", __file__)
