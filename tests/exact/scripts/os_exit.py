import atexit
import os
import sys
atexit.register(print, "atexit never runs")
print("buffered, lost by os._exit", end="")
sys.stderr.write("stderr is unbuffered enough\n")
os._exit(3)
