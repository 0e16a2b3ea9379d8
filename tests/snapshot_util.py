"""Helpers shared by the snapshot tests (capture, load anywhere, verbs).

Everything runs in real subprocesses: `python -m chkpt` with PYTHONPATH
pointing at this checkout, so the tests see exactly what a user sees.
"""
import os
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def env_with(extra_paths=(), **extra):
    env = dict(os.environ)
    # tests/asan.sh points CHKPT_TEST_PYTHONPATH at its sanitizer build
    paths = [os.environ.get("CHKPT_TEST_PYTHONPATH") or str(ROOT)]
    paths += [str(p) for p in extra_paths]
    env["PYTHONPATH"] = os.pathsep.join(paths)
    env.pop("PYTHONSTARTUP", None)
    env.update(extra)
    return env


def run(args, cwd, extra_paths=(), input=None, timeout=180, check=None):
    """Runs `python ARGS` in cwd; returns the CompletedProcess (text)."""
    proc = subprocess.run([sys.executable, *args], cwd=str(cwd), input=input,
                          env=env_with(extra_paths), capture_output=True,
                          text=True, timeout=timeout)
    if check is not None and proc.returncode != check:
        raise AssertionError(
            f"python {' '.join(map(str, args))} exited {proc.returncode}, "
            f"expected {check}\n--- stdout\n{proc.stdout}\n--- stderr\n{proc.stderr}")
    return proc


def chkpt(args, cwd, **kw):
    return run(["-m", "chkpt", *map(str, args)], cwd, **kw)


def py(code, cwd, **kw):
    return run(["-c", textwrap.dedent(code)], cwd, **kw)


def chkpt_lines(stderr):
    return [l for l in stderr.splitlines() if l.startswith("chkpt:")]


def write(path, text):
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))
    return path


def manifests(store):
    return sorted((Path(store) / "snapshots").glob("*.ckpt"))


def chunk_files(store):
    return {p for p in (Path(store) / "chunks").rglob("*") if p.is_file()}
