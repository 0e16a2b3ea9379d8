import sys
results = []     # data: the snapshot modes have something to save


def f(x: int, y: "str") -> float:
    return 1.0


print(f.__annotations__)
print("module code flags:", hex(sys._getframe().f_code.co_flags))
print("compile inherits:", compile("def g(a: list): pass\nh = g", "<s>", "exec").co_consts[0].co_flags)
ns = {}
exec("def g(a: int): pass", ns)
print("exec annotations:", ns["g"].__annotations__)
try:
    eval("1 <> 2")
except SyntaxError as e:
    print("no barry_as_FLUFL:", e.msg)
print("optimize:", sys.flags.optimize, __debug__)
assert True, "asserts run"
