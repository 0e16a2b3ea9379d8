"""The docstring of the script."""
import sys
print(repr(__doc__))
print(sys.modules["__main__"].__doc__)
