import sys


class AppError(Exception):
    """An exception class of the script."""


def load(key):
    table = {"a": 1}
    try:
        return table[key]
    except KeyError as e:
        raise AppError(f"no {key!r}") from e


def process(keys):
    out = []
    for k in keys:
        out.append(load(k))
    return out


print("start", flush=False)
try:
    process(["a", "zz"])
except AppError:
    try:
        1 / 0
    except ZeroDivisionError:
        pass
print("half")
sys.stdout.write("unflushed tail")
if len(sys.argv) > 1 and sys.argv[1] == "group":
    raise ExceptionGroup("many", [ValueError(1), TypeError(2)])
if len(sys.argv) > 1 and sys.argv[1] == "context":
    try:
        {}["k"]
    except KeyError:
        undefined_function()
process(["a", "b"])
