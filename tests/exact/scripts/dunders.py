import builtins
import inspect
import sys
import traceback

MARK = "marked"
print("names:", list(globals()))
print("sorted:", sorted(globals()))
print("__name__:", __name__)
print("__file__:", __file__)
print("__spec__:", __spec__)
print("__package__:", repr(__package__))
print("__loader__:", type(__loader__).__module__, type(__loader__).__name__,
      __loader__.name, __loader__.path)
print("__builtins__ is builtins:", __builtins__ is builtins)
print("__doc__:", __doc__)
print("__cached__:", __cached__)
print("__annotations__:", __annotations__)
main = sys.modules["__main__"]
print("repr:", repr(main))
print("dict is globals:", main.__dict__ is globals())
print("main.MARK:", main.MARK)
print("f_back:", sys._getframe().f_back)
print("stack depth:", len(inspect.stack()))
print("format_stack:", "".join(traceback.format_stack()), end="")
print("code:", sys._getframe().f_code.co_filename, sys._getframe().f_code.co_name)
print("argv:", sys.argv)
import helper_main
helper_main.report()
import importlib
print("import_module:", importlib.import_module("__main__") is main)
x: int = 5
print("annotations after:", __annotations__)
