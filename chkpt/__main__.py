# `python -m chkpt`: everything happens in C (chkpt._chkpt.main). Nothing the
# run needs lives in this module, because the script gets a __main__ of its own.
import sys

from chkpt._chkpt import main

status = main(sys.argv[1:])
# Under `python -i`, python goes on to its prompt whatever the script's
# outcome, and would print a SystemExit raised here as a traceback.
if not sys.flags.inspect:
    sys.exit(status)
