"""The docstring of the script."""
import sys
docs = [__doc__]     # data: the snapshot modes have something to save
print(repr(__doc__))
print(sys.modules["__main__"].__doc__)
