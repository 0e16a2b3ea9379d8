"""A CPU-bound pure-Python workload (floats, recursion, dicts and strings,
method calls) taking about a second under plain python."""
import sys


class Vec:
    def __init__(self, x, y):
        self.x, self.y = x, y

    def add(self, other):
        return Vec(self.x + other.x, self.y + other.y)

    def norm2(self):
        return self.x * self.x + self.y * self.y


def fib(n):
    return n if n < 2 else fib(n - 1) + fib(n - 2)


def words(n):
    counts = {}
    for i in range(n):
        w = "w%d" % (i % 997)
        counts[w] = counts.get(w, 0) + len(w)
    return counts


def main(scale):
    acc = Vec(0.0, 0.0)
    for i in range(int(200_000 * scale)):
        acc = acc.add(Vec(i * 0.5, -i * 0.25))
    total = acc.norm2()
    total += fib(int(22 + scale))
    total += sum(words(int(300_000 * scale)).values())
    print(round(total) % 1000003)


main(float(sys.argv[1]) if len(sys.argv) > 1 else 1.0)
