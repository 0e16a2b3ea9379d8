import atexit
import os
import sys
status = [3]     # data: the snapshot modes have something to save
atexit.register(print, "atexit never runs")
print("buffered, lost by os._exit", end="")
sys.stderr.write("stderr is unbuffered enough\n")
os._exit(3)
