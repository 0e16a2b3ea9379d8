"""A signal the main thread blocks stays pending for the process until the
script takes it (sigtimedwait), as long as no other thread accepts it: the
script's threads are all there is."""
import os
import signal
import threading
import time

signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGUSR1, signal.SIGTERM})
end = time.monotonic() + 0.05
while time.monotonic() < end:
    pass
os.kill(os.getpid(), signal.SIGUSR1)
os.kill(os.getpid(), signal.SIGTERM)
time.sleep(0.05)
print("pending:", sorted(s.name for s in signal.sigpending()))
for _ in range(2):
    info = signal.sigtimedwait({signal.SIGUSR1, signal.SIGTERM}, 5)
    print("took:", None if info is None else signal.Signals(info.si_signo).name)
print("threads:", threading.active_count(),
      [t.name for t in threading.enumerate()])
