import sys

events = []


def tracer(frame, event, arg):
    if frame.f_code.co_filename == __file__:
        events.append((event, frame.f_code.co_name, frame.f_lineno))
        return tracer
    return None


def fib(n):
    if n < 2:
        return n
    return fib(n - 1) + fib(n - 2)


print("initial tracer:", sys.gettrace())
sys.settrace(tracer)
total = fib(4)
x = 1
y = x + 1
sys.settrace(None)
print("total:", total)
for e in events:
    print(e)
print("tracer after:", sys.gettrace())
