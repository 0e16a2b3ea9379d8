import sys
print("hook set to", sys.argv[1])
if sys.argv[1] == "none":
    sys.excepthook = None
else:
    del sys.excepthook
raise ValueError("who prints me?")
