import sys
import warnings
messages = ["old api"]     # data: the snapshot modes save it


def deprecated_api():
    warnings.warn("old api", DeprecationWarning, stacklevel=2)


def user_warning():
    warnings.warn("from a function")


warnings.warn("at module level")
warnings.warn("stacklevel 2 at module level", stacklevel=2)
warnings.warn("stacklevel 3 at module level", UserWarning, stacklevel=3)
user_warning()
deprecated_api()
warnings.warn("pending", PendingDeprecationWarning)
for i in range(3):
    warnings.warn("in a loop, shown once")
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    warnings.warn("recorded")
    print("recorded:", [(str(w.message), w.filename == __file__, w.lineno) for w in caught])
warnings.warn_explicit("explicit", UserWarning, "somefile.py", 42)
print("registry keys:", sorted(k for k in globals() if "warning" in k))
print("filters:", warnings.filters[:6])
import importlib
warnings.warn("deprecated via module", DeprecationWarning)
sys.stderr.flush()
print("done")
