import sys


def depth_reached():
    count = 0

    def down():
        nonlocal count
        count += 1
        down()

    try:
        down()
    except RecursionError as e:
        return count, str(e)


def nested_repr(n):
    value = []
    for _ in range(n):
        value = [value]
    try:
        return len(repr(value))
    except RecursionError as e:
        return "RecursionError " + str(e)


print("limit:", sys.getrecursionlimit())
print("python depth:", depth_reached())
print("module-level frames:", len(__import__("traceback").extract_stack()))
sys.setrecursionlimit(200)
print("python depth, limit 200:", depth_reached())
sys.setrecursionlimit(5000)
print("python depth, limit 5000:", depth_reached())
sys.setrecursionlimit(1000)
for n in (100, 1000, 50000):
    print("nested repr", n, nested_repr(n))


def recurse_uncaught(n):
    return recurse_uncaught(n + 1)


if sys.argv[1:] == ["uncaught"]:
    recurse_uncaught(0)
