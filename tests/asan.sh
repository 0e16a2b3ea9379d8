#!/bin/bash
# The test suite against an ASan+UBSan build of the extension: the extension
# is built into build/asan (the checkout's own build is left alone) and the
# tests that exercise the C engine run with the sanitizer runtime preloaded.
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
export LD_PRELOAD="$libasan $libubsan"
export ASAN_OPTIONS=detect_leaks=0:abort_on_error=1:halt_on_error=1
export UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1
"$py" -m pytest -q -n 2 -p no:cacheprovider \
  tests/test_api.py tests/test_capture.py tests/test_load_anywhere.py tests/test_verbs.py \
  tests/test_cli.py tests/test_hostile.py tests/test_store_robustness.py \
  tests/test_tracked.py
