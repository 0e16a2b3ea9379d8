"""multiprocessing's fork start method, one process at a time: the parent
has a single thread at each fork (the child puts into the queue, the parent
only gets), so python prints no fork warning even with -W default."""
import multiprocessing as mp
import sys
import time


def square(q, n):
    q.put((n, n * n, __name__))


def main():
    ctx = mp.get_context("fork")
    q = ctx.Queue()
    results = []
    for n in range(4):
        p = ctx.Process(target=square, args=(q, n))
        p.start()
        results.append(q.get(timeout=60))
        p.join()
        results.append(p.exitcode)
        end = time.monotonic() + 0.02
        while time.monotonic() < end:
            pass
    print(results)
    print(len(mp.active_children()), file=sys.stderr)


if __name__ == "__main__":
    main()
