import sys

calls = []


def profiler(frame, event, arg):
    name = getattr(arg, "__name__", None) if event.startswith("c_") else frame.f_code.co_name
    if frame.f_code.co_filename == __file__ or event.startswith("c_"):
        calls.append((event, name))


def work(n):
    return sorted(range(n), key=lambda v: -v)[:2]


print("initial profiler:", sys.getprofile())
sys.setprofile(profiler)
work(3)
len("abc")
sys.setprofile(None)
for c in calls:
    print(c)
