import sys
seen = ["hooked"]     # data: the snapshot modes have something to save


def hook(tp, value, tb):
    print("custom hook:", tp.__name__, value, tb.tb_frame.f_code.co_filename,
          tb.tb_lineno, tb.tb_next is None, file=sys.stderr)
    print("last_value set:", sys.last_value is value, file=sys.stderr)


sys.excepthook = hook
if len(sys.argv) > 1:
    def bad_hook(tp, value, tb):
        raise RuntimeError("the hook fails")
    sys.excepthook = bad_hook
raise LookupError("hooked")
