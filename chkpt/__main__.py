# `python -m chkpt`: everything happens in C (chkpt._chkpt.main). Nothing the
# run needs lives in this module, because the script gets a __main__ of its own.
import sys

from chkpt._chkpt import main

sys.exit(main(sys.argv[1:]))
