"""Shared pytest helpers for chkpt's tests: the one place that says how a
test runs a script (the environment, the timeout).

    run_chkpt(args, cwd, ...)   python -m chkpt ARGS as a subprocess
    run_python(args, cwd, ...)  plain python ARGS, same environment
    chkpt_env(...)              the environment both get
    TIMEOUT                     how long any test subprocess may take
    python                      fixture: the interpreter under test

and the older names the snapshot tests use (tests/snapshot_util.py
re-exports them): env_with, run, chkpt, py, write, manifests, chunk_files.

Every test runs the interpreter that runs pytest (sys.executable), with the
chkpt under test importable: the repository root (or $CHKPT_TEST_PYTHONPATH)
is put on PYTHONPATH.

VERSION_INDEPENDENT names the test files whose subject is C that behaves
the same on every python (the store, the cost budget, capture's selection,
the verbs, the command line, loading): they are marked
`version_independent`, and `make test` runs them on the newest python
only, deselecting them explicitly (-m "not version_independent") on the
others. Everything touching the hooks, fork, signals, crashes and resume
is not in the list and runs on every python.

With $CHKPT_TEST_SANITIZER_LOGS set (tests/asan.sh), every test gets its
own directory there for sanitizer reports (log_path in ASAN_OPTIONS and
UBSAN_OPTIONS), and a report that appeared during a test fails it: a
snapshot child's stderr goes nowhere, its report must not.
"""
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ROOT = Path(REPO)

# Seconds any test subprocess may run before the test fails (the ASan
# build runs some scripts several times slower than the plain one).
TIMEOUT = 180

# Test files of version-independent C (see the module's docstring).
# A file name marks all its tests, "file.py::test_name" one test (each of its
# parameters).
VERSION_INDEPENDENT = (
    "test_cli.py",                  # the command line (src/run/cli.c)
    "test_verbs.py",                # ls, show, export, verify, gc
    "test_store_robustness.py",     # the store
    "test_pickle_walker.py",        # the pickle opcode walker
    "test_capture.py",              # what is selected, the metadata
    "test_tracked.py",              # tracked objects, sys.path modules, export
    "test_promises_options.py",     # library salience, size options, refusals
    "test_promises_store.py",       # modes, ownership, export, pip install .
    # damaged stores read back (the store's reader)
    "test_roundtrip_properties.py::test_damaged_snapshot_loads_equal_or_raises_snapshot_error",
    "test_roundtrip_properties.py::test_snapshots_never_raises_for_one_damaged_manifest",
)

# tests/asan.sh points CHKPT_TEST_PYTHONPATH at its sanitized build: the
# tests' own in-process `import chkpt` (chkpt.load, chkpt.snapshots) must
# get that build too, not the checkout's.
if os.environ.get("CHKPT_TEST_PYTHONPATH"):
    sys.path.insert(0, os.environ["CHKPT_TEST_PYTHONPATH"])

# Variables that would make two runs of the same script differ, or make
# python behave differently from its defaults.
_DROP = ("PYTHONBREAKPOINT", "PYTHONSTARTUP", "PYTHONINSPECT", "PYTHONSAFEPATH",
         "PYTHONWARNINGS", "PYTHONDEVMODE", "PYTHONFAULTHANDLER",
         "PYTHONTRACEMALLOC", "PYTHONASYNCIODEBUG", "PYTHONPROFILEIMPORTTIME",
         "PYTHONUNBUFFERED", "PYTHONVERBOSE", "PYTHONDEBUG", "PYTHONOPTIMIZE",
         "FORCE_COLOR", "PYTHON_COLORS", "COVERAGE_PROCESS_START")


def chkpt_env(extra=None, extra_paths=()):
    """The environment of a test subprocess: chkpt importable (then
    EXTRA_PATHS on PYTHONPATH), hashing deterministic, no colours, nothing
    that changes python's defaults; EXTRA's items set (None: removed)."""
    env = {k: v for k, v in os.environ.items() if k not in _DROP}
    # tests/asan.sh points CHKPT_TEST_PYTHONPATH at its sanitizer build
    env["PYTHONPATH"] = os.pathsep.join(
        [os.environ.get("CHKPT_TEST_PYTHONPATH") or REPO, *map(str, extra_paths)])
    env["PYTHONHASHSEED"] = "0"
    env["NO_COLOR"] = "1"
    env["PYTHON_COLORS"] = "0"
    env["TERM"] = "dumb"
    env["LC_ALL"] = "C.UTF-8"
    env["PYTHONIOENCODING"] = "utf-8"
    if extra:
        for k, v in extra.items():
            if v is None:
                env.pop(k, None)
            else:
                env[k] = v
    return env


def _run(cmd, cwd, *, input=None, env=None, timeout=TIMEOUT, text=True,
         extra_paths=()):
    return subprocess.run(
        cmd, cwd=cwd, env=chkpt_env(env, extra_paths), input=input,
        stdin=None if input is not None else subprocess.DEVNULL,
        capture_output=True, text=text, timeout=timeout,
        # undecodable bytes stay distinct (two different ones must not
        # compare equal as one replacement character)
        errors="surrogateescape" if text else None)


def run_chkpt(args, cwd, *, input=None, env=None, timeout=TIMEOUT, text=True,
              python=None, python_opts=()):
    """`python [PYTHON_OPTS] -m chkpt ARGS` in cwd; returns the
    CompletedProcess (returncode is negative when the process died by a
    signal)."""
    return _run([python or sys.executable, *python_opts, "-m", "chkpt",
                 *map(str, args)],
                cwd, input=input, env=env, timeout=timeout, text=text)


def run_python(args, cwd, *, input=None, env=None, timeout=TIMEOUT, text=True,
               python=None):
    """Plain `python ARGS` in cwd, with the same environment as run_chkpt."""
    return _run([python or sys.executable, *map(str, args)],
                cwd, input=input, env=env, timeout=timeout, text=text)


# ---- the names tests/snapshot_util.py has always offered ----


def env_with(extra_paths=(), **extra):
    """chkpt_env with EXTRA_PATHS after chkpt on PYTHONPATH."""
    return chkpt_env(extra, extra_paths)


def run(args, cwd, extra_paths=(), input=None, timeout=TIMEOUT, check=None):
    """Runs `python ARGS` in cwd; returns the CompletedProcess (text); with
    CHECK, fails unless it exited with that status."""
    proc = _run([sys.executable, *map(str, args)], str(cwd), input=input,
                timeout=timeout, extra_paths=extra_paths)
    if check is not None and proc.returncode != check:
        raise AssertionError(
            f"python {' '.join(map(str, args))} exited {proc.returncode}, "
            f"expected {check}\n--- stdout\n{proc.stdout}\n--- stderr\n{proc.stderr}")
    return proc


def chkpt(args, cwd, **kw):
    """`python -m chkpt ARGS` through run()."""
    return run(["-m", "chkpt", *map(str, args)], cwd, **kw)


def py(code, cwd, **kw):
    """`python -c CODE` (dedented) through run()."""
    return run(["-c", textwrap.dedent(code)], cwd, **kw)


def write(path, text):
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))
    return path


def manifests(store):
    return sorted((Path(store) / "snapshots").glob("*.ckpt"))


def chunk_files(store):
    return {p for p in (Path(store) / "chunks").rglob("*") if p.is_file()}


def chkpt_lines(stderr):
    """The lines chkpt itself wrote to stderr."""
    return [l for l in stderr.splitlines() if l.startswith("chkpt:")]


def without_chkpt_lines(stderr):
    """stderr without the lines chkpt itself wrote (they start with chkpt:)."""
    return "".join(l for l in stderr.splitlines(keepends=True)
                   if not l.startswith("chkpt:"))


def pytest_sessionstart(session):
    """Fail at once when the chkpt the tests would import in-process is not
    the one under test (a sanitized build imported as the plain one would
    let the in-process loads go unchecked)."""
    want = os.environ.get("CHKPT_TEST_PYTHONPATH")
    if want:
        import chkpt._chkpt
        got = os.path.realpath(chkpt._chkpt.__file__)
        if not got.startswith(os.path.realpath(want) + os.sep):
            raise pytest.UsageError(
                f"in-process chkpt is {got}, not the build in {want}")


@pytest.fixture
def python():
    """The interpreter under test."""
    return sys.executable


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "version_independent: the test's subject is C that behaves "
        "the same on every python (conftest.VERSION_INDEPENDENT)")


def pytest_collection_modifyitems(config, items):
    for item in items:
        test = f"{item.path.name}::{item.originalname}"
        if item.path.name in VERSION_INDEPENDENT or test in VERSION_INDEPENDENT:
            item.add_marker(pytest.mark.version_independent)


# ---- sanitizer reports (tests/asan.sh) ----

SANITIZER_LOGS = os.environ.get("CHKPT_TEST_SANITIZER_LOGS")


def _with_log_path(options, path):
    kept = [o for o in options.split(":") if o and not o.startswith("log_path=")]
    return ":".join([*kept, f"log_path={path}"])


@pytest.fixture(autouse=True)
def _no_sanitizer_report(request):
    """Under tests/asan.sh: every process the test starts (and the snapshot
    children they fork) writes its sanitizer reports into a directory of
    the test's own; a report there fails the test."""
    if not SANITIZER_LOGS:
        yield
        return
    name = re.sub(r"[^\w.-]+", "_", request.node.nodeid)[-150:]
    logs = Path(SANITIZER_LOGS) / name
    logs.mkdir(parents=True, exist_ok=True)
    saved = {v: os.environ.get(v) for v in ("ASAN_OPTIONS", "UBSAN_OPTIONS")}
    for var, old in saved.items():
        os.environ[var] = _with_log_path(old or "", logs / var.split("_")[0].lower())
    try:
        yield
    finally:
        for var, old in saved.items():
            if old is None:
                os.environ.pop(var, None)
            else:
                os.environ[var] = old
    reports = sorted(p for p in logs.iterdir() if p.stat().st_size)
    if reports:
        text = "\n".join(f"--- {p.name}\n{p.read_text(errors='replace')[:6000]}"
                         for p in reports)
        pytest.fail(f"sanitizer report(s) from a process of this test "
                    f"(kept in {logs}):\n{text}", pytrace=False)
