import os
import signal
import sys

got = []


def handler(signum, frame):
    got.append((signal.Signals(signum).name, frame.f_code.co_filename == __file__))
    print("handler:", signal.Signals(signum).name, "in", frame.f_code.co_name)


print("defaults:", signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM),
      signal.getsignal(signal.SIGUSR1), signal.getsignal(signal.SIGPIPE))
signal.signal(signal.SIGUSR1, handler)
signal.signal(signal.SIGINT, handler)
os.kill(os.getpid(), signal.SIGUSR1)
os.kill(os.getpid(), signal.SIGINT)
signal.raise_signal(signal.SIGUSR1)
print("got:", got)
signal.signal(signal.SIGINT, signal.default_int_handler)
signal.signal(signal.SIGTERM, signal.SIG_DFL)
print("terminating by SIGTERM", flush=True)
os.kill(os.getpid(), signal.SIGTERM)
signal.pause()
