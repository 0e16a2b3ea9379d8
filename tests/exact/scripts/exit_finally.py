import atexit
import sys

atexit.register(print, "atexit after SystemExit, __file__ present:",
                "__file__" in globals())


def inner():
    try:
        sys.exit(7)
    finally:
        print("finally runs")


try:
    inner()
except SystemExit as e:
    print("caught", e.code)
    try:
        raise
    finally:
        print("outer finally")
