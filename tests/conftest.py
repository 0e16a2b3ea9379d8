"""Shared pytest helpers for chkpt's tests.

    run_chkpt(args, cwd, ...)   python -m chkpt ARGS as a subprocess
    run_python(args, cwd, ...)  plain python ARGS, same environment
    chkpt_env(...)              the environment both get
    python                      fixture: the interpreter under test

Every test runs the interpreter that runs pytest (sys.executable), with the
chkpt under test importable: the repository root (or $CHKPT_TEST_PYTHONPATH)
is put on PYTHONPATH.
"""
import os
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

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


def chkpt_env(extra=None):
    """The environment of a test subprocess: chkpt importable, hashing
    deterministic, no colours, nothing that changes python's defaults."""
    env = {k: v for k, v in os.environ.items() if k not in _DROP}
    env["PYTHONPATH"] = os.environ.get("CHKPT_TEST_PYTHONPATH", REPO)
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


def _run(cmd, cwd, *, input=None, env=None, timeout=120, text=True):
    return subprocess.run(
        cmd, cwd=cwd, env=chkpt_env(env), input=input,
        stdin=None if input is not None else subprocess.DEVNULL,
        capture_output=True, text=text, timeout=timeout,
        # undecodable bytes stay distinct (two different ones must not
        # compare equal as one replacement character)
        errors="surrogateescape" if text else None)


def run_chkpt(args, cwd, *, input=None, env=None, timeout=120, text=True,
              python=None, python_opts=()):
    """`python [PYTHON_OPTS] -m chkpt ARGS` in cwd; returns the
    CompletedProcess (returncode is negative when the process died by a
    signal)."""
    return _run([python or sys.executable, *python_opts, "-m", "chkpt",
                 *map(str, args)],
                cwd, input=input, env=env, timeout=timeout, text=text)


def run_python(args, cwd, *, input=None, env=None, timeout=120, text=True,
               python=None):
    """Plain `python ARGS` in cwd, with the same environment as run_chkpt."""
    return _run([python or sys.executable, *map(str, args)],
                cwd, input=input, env=env, timeout=timeout, text=text)


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
