#!/bin/bash
# The test suite against an ASan+UBSan build of the extension: the extension
# is built into build/asan (the checkout's own build is left alone) and the
# tests that exercise the C engine run with the sanitizer runtime preloaded
# (the tests' own in-process `import chkpt` gets that build too: conftest.py).
# Python itself is not instrumented, so leak detection is off here; the C
# unit tests cover leaks under valgrind.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV_DIR=${1:-.venv}
py=$(ls -d "$VENV_DIR"/3.1[0-9]/bin/python | sort -V | tail -1)
out=build/asan
rm -rf "$out" && mkdir -p "$out/chkpt"
cp chkpt/*.py chkpt/py.typed "$out/chkpt/"
CHKPT_EXTRA_CFLAGS="-O1 -g -fsanitize=address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer" \
CHKPT_EXTRA_LDFLAGS="-fsanitize=address,undefined" \
  "$py" setup.py -q build_ext --build-lib "$out" --build-temp "$out/tmp" --force
libasan=$(gcc -print-file-name=libasan.so)
libubsan=$(gcc -print-file-name=libubsan.so)
echo "=== pytest against the ASan+UBSan build ($("$py" -V)) ==="
export CHKPT_TEST_PYTHONPATH="$PWD/$out"
# the other Pythons write a snapshot this sanitized build then loads
export CHKPT_TEST_VENVS="$(cd "$VENV_DIR" && pwd)"
export LD_PRELOAD="$libasan $libubsan"
export ASAN_OPTIONS=detect_leaks=0:abort_on_error=1:halt_on_error=1
export UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1
# The exact suite's sample: every mode, and the cases whose snapshots go
# through the most of the engine (every_line pickling of the script's own
# classes, signals and Ctrl-C during capture, threads, audit hooks, pandas).
exact=tests/exact/test_exact.py::test_same_as_python
"$py" -m pytest -q -rs -n 2 --dist worksteal --durations=8 -p no:cacheprovider \
  tests/test_api.py tests/test_capture.py tests/test_load_anywhere.py tests/test_verbs.py \
  tests/test_cli.py tests/test_hostile.py tests/test_store_robustness.py \
  tests/test_tracked.py tests/test_promises.py tests/test_hypothesis.py \
  tests/test_resume.py \
  "$exact[pickle_copy-manual]" "$exact[pickle_copy-every_line]" \
  "$exact[uncaught_chained-snapshot]" "$exact[keyboard_interrupt_signal-every_line]" \
  "$exact[signal_handlers-every_line]" "$exact[thread_exception-every_line]" \
  "$exact[snapshot_side_effects-default]" "$exact[audit_hook-snapshot]" \
  "$exact[pandas_repr-every_line]" "$exact[cpu_bound-snapshot]" \
  "$exact[settrace-every_line]" "$exact[module_in_package-every_line]"
