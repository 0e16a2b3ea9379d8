import sys
import weakref


class Noisy:
    def __init__(self, name):
        self.name = name

    def __del__(self):
        print("finalized", self.name, "sys.stdout alive:", sys.stdout is not None)


keep = Noisy("global")
cycle = Noisy("cycle")
cycle.self = cycle
weakref.finalize(keep, print, "weakref.finalize ran")
Noisy("temporary")
print("end of script")
