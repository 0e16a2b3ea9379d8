import sys
how = list(sys.argv[1:])     # data: the snapshot modes save it
print("hook set to", sys.argv[1])
if sys.argv[1] == "none":
    sys.excepthook = None
else:
    del sys.excepthook
raise ValueError("who prints me?")
