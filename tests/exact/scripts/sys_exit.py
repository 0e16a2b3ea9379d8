import sys
print("exiting with", sys.argv[1:])
arg = sys.argv[1]
if arg == "none":
    sys.exit()
if arg.lstrip("-").isdigit():
    sys.exit(int(arg))
if arg == "exit-builtin":
    exit(4)
if arg == "raise":
    raise SystemExit(5, "two args")
sys.exit(arg)
