import sys
sizes = [10000]     # data: the snapshot modes have something to save
print("line 1")
sys.stdout.write("x" * 10000)
sys.stdout.write("\nno newline at the end")
print("to stderr", file=sys.stderr)
sys.stderr.write("stderr without newline")
