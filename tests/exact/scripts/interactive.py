import sys
x = 42
print("script ran, inspect flag:", sys.flags.inspect)
if sys.argv[1:] == ["fail"]:
    raise ValueError("the script fails; python -i still gives a prompt")
if sys.argv[1:] == ["exit"]:
    sys.exit(3)
