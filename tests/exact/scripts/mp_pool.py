"""multiprocessing calling the script's own functions and classes."""
import multiprocessing as mp
import sys
from dataclasses import dataclass


@dataclass
class Job:
    n: int


def work(job):
    return job.n * job.n, __name__


def child_info(q):
    import __main__
    q.put((__name__, getattr(__main__, "__file__", None) is not None,
           type(Job(1)).__module__))


def main():
    method = sys.argv[1]
    ctx = mp.get_context(method)
    with ctx.Pool(2) as pool:
        print(method, "results:", pool.map(work, [Job(i) for i in range(6)]))
    q = ctx.Queue()
    p = ctx.Process(target=child_info, args=(q,))
    p.start()
    print(method, "child:", q.get(timeout=60))
    p.join()
    print(method, "exitcode:", p.exitcode)


if __name__ == "__main__":
    main()
