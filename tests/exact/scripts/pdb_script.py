import sys

total = 0


def step(n):
    global total
    value = n * 2
    breakpoint()
    total += value
    return value


x = 10
breakpoint()
y = step(x)
print("y =", y, "total =", total)
