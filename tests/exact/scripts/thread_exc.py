import threading
import time


def target(n):
    time.sleep(0.01 * n)
    raise ValueError(f"in thread {n}")


for i in range(2):
    t = threading.Thread(target=target, args=(i,), name=f"worker-{i}")
    t.start()
    t.join()
print("main thread:", threading.current_thread().name, threading.main_thread() is threading.current_thread())
print("active:", threading.active_count())
late = threading.Thread(target=lambda: (time.sleep(0.2), print("non-daemon thread finishes after main")))
late.start()
print("main done")
