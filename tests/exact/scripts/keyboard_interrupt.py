import atexit
import os
import signal
import sys
import time

atexit.register(print, "atexit runs after KeyboardInterrupt")
print("handler:", signal.getsignal(signal.SIGINT))
print("before", flush=True)
state = {"stage": "before"}     # data: the snapshot modes save it


def loop():
    if sys.argv[1:] == ["signal"]:
        os.kill(os.getpid(), signal.SIGINT)
        for _ in range(1000):
            time.sleep(0.01)
    else:
        raise KeyboardInterrupt("pressed")


loop()
