import sys
lines = ["before closing"]     # data: the snapshot modes save it
print("before closing", flush=True)
sys.stdout.write("pending output")
sys.stdout.close()
print("stderr still open", file=sys.stderr)
if sys.argv[1:] == ["both"]:
    sys.stderr.close()
    raise RuntimeError("nobody sees this")
