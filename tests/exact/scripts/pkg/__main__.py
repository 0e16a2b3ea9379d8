import sys
from . import VALUE
print("pkg.__main__:", __name__, __package__, __spec__.name, VALUE)
print("argv:", sys.argv)
