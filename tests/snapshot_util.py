"""The helpers the snapshot tests (capture, load anywhere, verbs) import
by this name. They live in conftest.py, the one place that says how a test
runs a script (its environment and timeout); this module only re-exports
them."""
from conftest import (ROOT, TIMEOUT, chkpt, chkpt_env, chkpt_lines,  # noqa: F401
                      chunk_files, env_with, manifests, py, run, write)
