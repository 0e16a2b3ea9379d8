"""What differs by construction under chkpt (DIFFERENCES.md)."""
import json
import sys

print(json.dumps({"modules": sorted(sys.modules), "orig_argv": sys.orig_argv,
                  "argv": sys.argv}))
