#!/bin/bash
# The test suite against an ASan+UBSan build of the extension: the extension
# is built into build/asan (the checkout's own build is left alone) and the
# tests that exercise the C engine run with the sanitizer runtime preloaded
# (the tests' own in-process `import chkpt` gets that build too: conftest.py).
# Python itself is not instrumented, so leak detection is off here; the C
# unit tests cover leaks under valgrind.
set -euo pipefail
cd "$(dirname "$0")/.."
# usage: tests/asan.sh [VENV_DIR [PYTEST ARGS...]]  (pytest args: instead of
# the selection below, e.g. one test being debugged)
VENV_DIR=${1:-.venv}
shift || true
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
# Sanitizer reports go to one directory per test (conftest.py sets
# log_path for each test's processes and fails the test when a report
# appears there): a snapshot child's stderr goes to /dev/null, its report
# must not be lost with it. (ASan's reports only: gcc's libubsan, loaded
# beside libasan, ignores log_path; a UBSan report halts its process,
# halt_on_error, and a child's then shows only as a lost snapshot.)
export CHKPT_TEST_SANITIZER_LOGS="$PWD/$out/logs"
mkdir -p "$CHKPT_TEST_SANITIZER_LOGS"
# Every test file that runs the engine, and the exact suite's sample: for
# each kind of script (targets, source, the script's classes,
# multiprocessing, the script's own fork, the ways a run ends: crash,
# Ctrl-C, exit, os._exit, the script's own tools: settrace, pdb, signal
# handlers, audit hooks; numpy and pandas), the modes that take snapshots
# (the forked child), a crash (crash.c) and a signal (signals.c).
exact=tests/exact/test_exact.py::test_same_as_python
cases=(
  dunders-manual dunders-snapshot dunders-every_line
  module_in_package-every_line zip_application-every_line latin1_coding-every_line
  pickle_copy-manual pickle_copy-every_line introspection-snapshot
  mp_fork-every_line mp_spawn-snapshot
  fork_fork-manual fork_fork-snapshot fork_fork-every_line fork_fork-default
  fork_thread-every_line fork_callbacks-every_line fork_forkpty-every_line
  fork_mp_process_W_error-every_line signal_blocked_stays_pending-every_line
  uncaught_chained-manual uncaught_chained-snapshot uncaught_chained-every_line
  uncaught_group-every_line recursion_uncaught-snapshot excepthook_custom-every_line
  keyboard_interrupt_signal-manual keyboard_interrupt_signal-snapshot
  keyboard_interrupt_signal-every_line keyboard_interrupt-every_line
  exit_3-every_line os_exit-every_line atexit_handlers-every_line
  thread_exception-every_line asyncio_run-every_line
  settrace-every_line setprofile-every_line pdb_breakpoint-every_line
  signal_handlers-manual signal_handlers-snapshot signal_handlers-every_line
  audit_hook-snapshot audit_hook-default cpu_bound-snapshot recursion_limit-snapshot
  snapshot_side_effects-every_line snapshot_side_effects-default
  python_i_after_error-every_line python_X_dev-every_line
  pandas_repr-every_line numpy_user_array_demo-snapshot
)
ids=()
for c in "${cases[@]}"; do ids+=("$exact[$c]"); done
files=(
  tests/test_api.py tests/test_capture.py tests/test_load_anywhere.py tests/test_verbs.py
  tests/test_cli.py tests/test_hostile_objects.py tests/test_store_robustness.py
  tests/test_tracked.py tests/test_promises_options.py tests/test_roundtrip_properties.py
  tests/test_resume.py tests/test_crash.py tests/test_signals.py
  tests/test_snapshot_child.py tests/test_script_forks.py tests/test_hooks.py
  tests/test_auto_frequency.py tests/test_promises_signals.py tests/test_coalesced.py
)
# Deselected here, by name: the tests whose assertion is a speed (the
# sanitized build is several times slower, and its processes far larger to
# fork); the code they run is run here by their neighbours.
slow=(
  "tests/test_auto_frequency.py::test_children_stay_within_the_budget"      # CPU share of the children
  # -f auto's first snapshot waits until its predicted cost (by the
  # script's private memory, which the sanitizer's runtime multiplies) fits
  # 5% of the run: these runs end before it, as the rule says they should
  "tests/test_auto_frequency.py::test_default_is_adaptive_and_snapshots_a_changing_script_often"
  "tests/test_auto_frequency.py::test_the_default_keeps_ten_automatic_snapshots"
  "tests/test_auto_frequency.py::test_exit_adds_nothing_when_no_snapshot_is_in_flight"
  "tests/test_auto_frequency.py::test_frequency_auto_can_be_set_and_read"
  "tests/test_snapshot_child.py::test_snapshot_returns_at_once_and_the_last_one_is_durable_at_exit"  # < 0.5 s
)
deselect=()
for t in "${slow[@]}"; do deselect+=(--deselect "$t"); done
if [ $# -gt 0 ]; then files=("$@"); ids=(); deselect=(); fi
"$py" -m pytest -q -rs -n 2 --dist worksteal --durations=15 -p no:cacheprovider \
  "${deselect[@]}" "${files[@]}" "${ids[@]}"
