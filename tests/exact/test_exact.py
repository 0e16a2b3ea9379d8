"""Differential suite (issue 3): under `python -m chkpt [options] script.py
args` (and `-m pkg.mod`, a directory, a zip application) everything the
script can observe or print is what plain `python script.py args` gives.

Each case runs the same command both ways, as subprocesses, in the same
directory (a fresh copy of tests/exact/scripts for each run, at the same
path), with the same environment and stdin, and compares stdout, stderr
(minus the lines chkpt itself writes, which start with `chkpt:`) and the
exit status (a negative returncode is a death by that signal).

Modes: `manual` is `-f -1 -z -1` (no automatic snapshot); `snapshot` is
`-f 1 -z 0`, so that automatic snapshots happen while the script runs (a
script shorter than the first timer tick sees none); `every_line` is
`-f 0 -z 0`, a snapshot attempt at every line of the script's own code, so
that even the shortest script runs through the capture path (used where the
script executes few lines); `default` is chkpt without options, writing to
./checkpoints where the script runs. Known, documented differences are
in DIFFERENCES.md and tested at the end of this file.

Beyond the comparison, each case's run under chkpt must print no `chkpt:`
line but those it expects (CHKPT_LINES, `Case.chkpt_lines`), take at least
one snapshot in each snapshot mode unless NO_SNAPSHOT (`Case.no_snapshot`)
says why it cannot, load every snapshot it took, and leave the script's
directory as python does (in the default mode, plus ./checkpoints once a
snapshot was written there). Output is compared as text with undecodable
bytes kept distinct (surrogateescape).
"""
import os
import py_compile
import re
import shutil
import signal
import sys
import sysconfig
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from conftest import chkpt_lines, run_chkpt, run_python, without_chkpt_lines

HERE = Path(__file__).resolve().parent
SCRIPTS = HERE / "scripts"

MODES = {
    "manual": ["-f", "-1", "-z", "-1"],
    "snapshot": ["-f", "1", "-z", "0"],
    "every_line": ["-f", "0", "-z", "0"],
    "default": [],
}

# ---- files made at run time (exact bytes, links, archives) ----


def make_generated(work: Path):
    (work / "latin1.py").write_bytes(
        b"# -*- coding: latin-1 -*-\n"
        b"import sys\n"
        b's = "caf\xe9 cr\xe8me"\n'
        b"print(ascii(s), len(s))\n"
        b"print(__file__)\n"
        b'raise ValueError("caf\xe9: " + s)\n')
    (work / "bom.py").write_bytes(
        b"\xef\xbb\xbf# a script with a UTF-8 byte order mark\n"
        b"import sys\n"
        b"seen = [1, 2]\n"
        b'print("bom", ascii("\xc3\xa9t\xc3\xa9"), __doc__)\n'
        b"def f():\n"
        b"    return 1 / 0\n"
        b"f()\n")
    (work / "crlf.py").write_bytes(
        b"import sys\r\n"
        b"x = 1\r\n"
        b'print("crlf", x)\r\n'
        b's = """a\r\nb"""\r\n'
        b"print(repr(s))\r\n"
        b"def g():\r\n"
        b'    raise RuntimeError("crlf line")\r\n'
        b"g()\r\n")
    (work / "syntax_error.py").write_text(
        'x = 1\nprint("never printed")\ndef f(:\n    pass\n')
    (work / "indent_error.py").write_text(
        "def f():\n    x = 1\n      y = 2\n")
    (work / "bad_encoding.py").write_bytes(b'print("ok")\nx = "\xe9"\n')
    (work / "unknown_coding.py").write_bytes(b"# coding: bogus\nx = 1\n")
    (work / "nul_byte.py").write_bytes(b"x = 1\n\x00\n")
    (work / "empty_script.py").write_bytes(b"")
    (work / "links").mkdir()
    os.symlink("../argv_path.py", work / "links" / "argv_link.py")
    with zipfile.ZipFile(work / "app.pyz", "w") as z:
        for name in ("__main__.py", "apphelper.py"):
            z.write(work / "appdir" / name, name)
    (work / "emptydir").mkdir()
    py_compile.compile(str(work / "docstring.py"),
                       cfile=str(work / "compiled.pyc"), doraise=True)


def fresh_workdir(tmp_path: Path) -> Path:
    work = tmp_path / "work"
    if work.exists():
        shutil.rmtree(work)
    shutil.copytree(SCRIPTS, work,
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    make_generated(work)
    return work


# ---- the cases ----


@dataclass
class Case:
    name: str
    argv: list                      # after `python` / `python -m chkpt OPTS`
    stdin: str = ""
    cwd: str = "."                  # relative to the work directory
    modes: tuple = ("manual", "snapshot", "every_line")
    timeout: int = 60
    env: dict = field(default_factory=dict)
    python_opts: tuple = ()         # interpreter options (before -m chkpt)
    # the chkpt: lines this case may print (regular expressions); any other
    # chkpt: line fails it
    chkpt_lines: tuple = ()
    # mode -> why no snapshot can exist in that mode (every other snapshot
    # mode must take at least one, and each must load)
    no_snapshot: dict = field(default_factory=dict)


SITE = Path(sysconfig.get_paths()["purelib"])
NUMPY = SITE / "numpy"

PDB_INPUT = "\n".join([
    "where", "p x", "next", "p sys.argv", "list", "continue",
    "where", "p value", "up", "p n", "down", "ll", "continue", ""])

CASES = [
    # module globals
    Case("dunders", ["dunders.py"]),
    Case("dunders_abspath", ["{work}/dunders.py"]),
    Case("docstring", ["docstring.py"]),
    # sys.argv, sys.path[0], the kinds of target
    Case("argv_looks_like_options",
         ["argv_path.py", "-v", "-f", "3", "--help", "-m", "x", "--", "ls"]),
    Case("argv_relative", ["./argv_path.py", "a b", ""]),
    Case("argv_dotdot", ["appdir/../argv_path.py", "x"]),
    Case("argv_symlink", ["links/argv_link.py"]),
    Case("argv_from_subdir", ["../argv_path.py", "y"], cwd="pkg"),
    Case("directory_main", ["appdir", "3"]),
    Case("zip_application", ["app.pyz", "arg"]),
    Case("module_in_package", ["-m", "pkg.sub.mod", "arg", "-v"]),
    Case("module_in_package_fails", ["-m", "pkg.sub.mod", "--fail"]),
    Case("module_package_main", ["-m", "pkg", "a", "-f", "1"]),
    Case("module_uncaught", ["-m", "uncaught", "context"]),
    Case("module_keyboard_interrupt", ["-m", "keyboard_interrupt", "signal"]),
    Case("module_exit_message", ["-m", "sys_exit", "bye"]),
    Case("module_parent_import_fails", ["-m", "badinit.mod"]),
    Case("module_package_import_fails", ["-m", "badinit"]),
    Case("script_from_stdin", ["-", "a", "-v"],
         stdin=(SCRIPTS / "uncaught.py").read_text()),
    Case("script_from_stdin_syntax_error", ["-"], stdin="x = (\n"),
    Case("pyc_file", ["compiled.pyc"]),
    Case("empty_script", ["empty_script.py"]),
    # source
    Case("latin1_coding", ["latin1.py"]),
    Case("utf8_bom", ["bom.py"]),
    Case("crlf_newlines", ["crlf.py"]),
    Case("future_annotations", ["future_annotations.py"]),
    Case("no_compiler_flag_leaks", ["no_flag_leak.py"]),
    Case("syntax_error", ["syntax_error.py"]),
    Case("indentation_error", ["indent_error.py"]),
    Case("non_utf8_source", ["bad_encoding.py"]),
    Case("unknown_coding", ["unknown_coding.py"]),
    Case("nul_byte", ["nul_byte.py"]),
    # the script's classes and functions
    Case("pickle_copy", ["pickling.py"]),
    Case("introspection", ["introspect.py"]),
    Case("doctest_testmod", ["doctest_script.py"]),
    Case("unittest_main", ["unittest_script.py"]),
    Case("mp_spawn", ["mp_pool.py", "spawn"], timeout=120),
    Case("mp_forkserver", ["mp_pool.py", "forkserver"], timeout=120),
    Case("mp_fork", ["mp_pool.py", "fork"], timeout=120),
    # the script forks by itself: no fork warning, no thread of chkpt at the
    # fork, in its at-fork callbacks or in the child (issue 20)
    *[Case(f"fork_{arg}", ["fork_script.py", arg], modes=tuple(MODES))
      for arg in ("introspect", "fork", "forkpty", "callbacks", "record", "thread",
                  "from_thread", "refused")],
    *[Case(f"{name}_W_{action}", argv, python_opts=("-W", f"{action}::DeprecationWarning"),
           modes=tuple(MODES), timeout=120)
      for name, argv in (("fork_os_fork", ["fork_script.py", "fork"]),
                         ("fork_mp_process", ["mp_fork_process.py"]))
      for action in ("error", "default")],
    Case("mp_fork_W_error", ["mp_pool.py", "fork"], timeout=120,
         python_opts=("-W", "error::DeprecationWarning"), modes=tuple(MODES)),
    Case("signal_blocked_stays_pending", ["signal_mask.py"], modes=tuple(MODES)),
    # outcome
    Case("uncaught_chained", ["uncaught.py"]),
    Case("uncaught_context", ["uncaught.py", "context"]),
    Case("uncaught_group", ["uncaught.py", "group"]),
    Case("excepthook_custom", ["excepthook_custom.py"]),
    Case("excepthook_fails", ["excepthook_custom.py", "fail"]),
    Case("exit_3", ["sys_exit.py", "3"]),
    Case("exit_0", ["sys_exit.py", "0"]),
    Case("exit_none", ["sys_exit.py", "none"]),
    Case("exit_256", ["sys_exit.py", "256"]),
    Case("exit_negative", ["sys_exit.py", "-1"]),
    Case("exit_message", ["sys_exit.py", "a message"]),
    Case("exit_builtin", ["sys_exit.py", "exit-builtin"]),
    Case("exit_two_args", ["sys_exit.py", "raise"]),
    Case("exit_through_finally", ["exit_finally.py"]),
    Case("keyboard_interrupt", ["keyboard_interrupt.py"]),
    Case("keyboard_interrupt_signal", ["keyboard_interrupt.py", "signal"]),
    Case("keyboard_interrupt_subclass", ["ki_subclass.py"]),
    Case("thread_exception", ["thread_exc.py"]),
    Case("atexit_handlers", ["atexit_script.py"]),
    Case("finalized_at_shutdown", ["finalize.py"]),
    Case("buffered_output", ["buffered.py"]),
    Case("closed_stdout", ["closed_streams.py"]),
    Case("closed_stdout_and_stderr", ["closed_streams.py", "both"]),
    Case("os_exit", ["os_exit.py"]),
    Case("excepthook_none", ["hook_none.py", "none"]),
    Case("excepthook_deleted", ["hook_none.py", "del"]),
    Case("exit_list", ["sys_exit.py", "[1, 2]"]),
    Case("asyncio_run", ["asyncio_script.py"]),
    # the script's own tools
    Case("settrace", ["settrace_script.py"]),
    Case("setprofile", ["setprofile_script.py"]),
    Case("pdb_breakpoint", ["pdb_script.py"], stdin=PDB_INPUT),
    Case("signal_handlers", ["signals_script.py"]),
    Case("stdin_input", ["stdin_input.py"], stdin="Ada\n41\nline 3\nline 4\n"),
    Case("warnings", ["warnings_script.py"]),
    Case("audit_hook", ["audit_hook.py"],
         modes=("manual", "snapshot", "every_line", "default")),
    Case("cpu_bound", ["cpu_bound.py"], modes=("manual", "snapshot")),
    # (thousands of frames: a snapshot at each line would take minutes)
    Case("recursion_limit", ["recursion.py"], modes=("manual", "snapshot")),
    Case("recursion_uncaught", ["recursion.py", "uncaught"],
         modes=("manual", "snapshot")),
    # what chkpt does while snapshotting stays invisible
    Case("snapshot_side_effects", ["snapshot_side_effects.py"],
         modes=("manual", "snapshot", "every_line", "default")),
    Case("warning_inside_a_line", ["warning_midline.py"],
         modes=("manual", "snapshot")),
    # interpreter options given to python (before -m chkpt)
    Case("python_i_prompt", ["interactive.py"], python_opts=("-i",),
         stdin="print(x, __name__, '__file__' in globals())\n"),
    Case("python_i_after_error", ["interactive.py", "fail"],
         python_opts=("-i",), stdin="print(x)\nimport sys; sys.exit(5)\n"),
    Case("python_i_after_exit", ["interactive.py", "exit"],
         python_opts=("-i",), stdin="print(x)\n"),
    Case("python_O", ["no_flag_leak.py"], python_opts=("-O",)),
    Case("python_OO_docstring", ["docstring.py"], python_opts=("-OO",)),
    Case("python_P_safe_path", ["argv_path.py"], python_opts=("-P",)),
    Case("python_W_error", ["warnings_script.py"],
         python_opts=("-W", "error::UserWarning")),
    Case("python_X_dev", ["finalize.py"], python_opts=("-X", "dev")),
    Case("python_u_unbuffered", ["buffered.py"], python_opts=("-u",)),
    Case("python_B_no_bytecode", ["-m", "pkg.sub.mod"], python_opts=("-B",)),
    # real scripts shipped inside numpy (nobody here wrote them)
    Case("numpy_print_coercion_tables",
         [str(NUMPY / "testing" / "print_coercion_tables.py")],
         modes=("manual", "snapshot", "default"), timeout=120),
    Case("numpy_user_array_demo",
         [str(NUMPY / "lib" / "_user_array_impl.py")],
         modes=("manual", "snapshot", "default"), timeout=120),
    Case("pandas_repr", ["pandas_repr.py"],
         modes=("manual", "every_line", "default"), timeout=120),
    Case("numpy_f2py_version", ["-m", "numpy.f2py", "-v"],
         modes=("manual", "default")),
]

# ---- what each case may print as chkpt:, and why a snapshot mode may have
# no snapshot (a Case's own chkpt_lines / no_snapshot say it for new cases)


def cannot_save(*names):
    """The one chkpt: line per variable that cannot be pickled."""
    return (r"^chkpt: variable '(%s)' \(.*\) could not be saved: "
            % "|".join(map(re.escape, names)),)


CHKPT_LINES = {
    "pickle_copy": cannot_save("values"),          # dataclasses.Field objects
    # 3.11's comprehensions are frames of their own: a snapshot there sees
    # their loop variables (a dataclasses.Field, an inspect.Attribute)
    "introspection": cannot_save("f", "a"),
    "unittest_main": cannot_save("self"),          # a TestCase holds its stream
    "mp_spawn": cannot_save("p", "pool", "q"),     # processes, pools, queues
    "mp_forkserver": cannot_save("p", "pool", "q"),
    "mp_fork": cannot_save("p", "pool", "q"),
    "mp_fork_W_error": cannot_save("p", "pool", "q"),
    "fork_mp_process_W_error": cannot_save("p", "q", "ctx"),
    "fork_mp_process_W_default": cannot_save("p", "q", "ctx"),
    "fork_thread": cannot_save("t", "stop"),       # threads and events hold locks
    "fork_from_thread": cannot_save("t", "stop"),
    "signal_blocked_stays_pending": cannot_save("t"),   # a thread
    "thread_exception": cannot_save("t", "late"),  # threads hold locks
    "pdb_breakpoint": cannot_save("__pdb_convenience_variables"),  # frames
    "audit_hook": cannot_save("f"),                # an open file
    "cpu_bound": cannot_save("h"),                 # a hashlib object
    "recursion_limit": cannot_save("value"),       # nested deeper than pickle goes
    "recursion_uncaught": cannot_save("value"),
    "warning_inside_a_line": cannot_save("lock"),
    "numpy_print_coercion_tables": cannot_save("no_cast_info"),  # a local class
    # numpy's container class, run as __main__, is not the one pickle finds;
    # numpy/lib's modules are the script's siblings, and a snapshot inside
    # one while numpy imports sees functions pickle cannot find yet
    # (a function, or a lambda in one of its module-level dicts: seen with
    # _QuantileMethods, whose lambdas pickle finds under no name)
    "numpy_user_array_demo": cannot_save("ua", "ua_small", "self", "args") + (
        r"^chkpt: variable '\w+' \(numpy\._ArrayFunctionDispatcher\) could "
        r"not be saved: PicklingError: ",
        r"^chkpt: variable '\w+' \(builtins\.dict\) could not be saved: "
        r"PicklingError: Can't pickle <function <lambda> at 0x[0-9a-f]+>: "
        r"attribute lookup <lambda> on numpy\.",),
}

NEVER_RUNS = "python refuses the script before its first line"
NO_LINE = "the script has no line to run"
BRIEF = ("its own lines run in well under the first 1 ms tick "
         "(every_line snapshots it)")
BRIEF_ONLY = "its own lines run in well under the first 1 ms tick"
SNAPSHOT_MODES = ("snapshot", "every_line")
NO_SNAPSHOT = {
    **{name: dict.fromkeys(SNAPSHOT_MODES, NEVER_RUNS) for name in (
        "syntax_error", "indentation_error", "non_utf8_source",
        "unknown_coding", "nul_byte", "script_from_stdin_syntax_error",
        "module_parent_import_fails", "module_package_import_fails")},
    "empty_script": dict.fromkeys(SNAPSHOT_MODES, NO_LINE),
    **{name: {"snapshot": BRIEF} for name in (
        "module_package_main", "module_uncaught", "module_keyboard_interrupt",
        "module_exit_message", "docstring", "argv_looks_like_options",
        "argv_relative", "script_from_stdin", "argv_dotdot", "argv_symlink",
        "pyc_file", "argv_from_subdir", "directory_main", "latin1_coding",
        "utf8_bom", "zip_application", "crlf_newlines", "module_in_package",
        "future_annotations", "module_in_package_fails",
        "no_compiler_flag_leaks", "excepthook_custom", "excepthook_fails",
        "uncaught_chained", "uncaught_context", "uncaught_group",
        "pickle_copy", "exit_3", "exit_0", "exit_none", "exit_256",
        "exit_negative", "exit_message", "exit_builtin", "exit_two_args",
        "keyboard_interrupt",
        "keyboard_interrupt_signal", "keyboard_interrupt_subclass",
        "atexit_handlers", "finalized_at_shutdown",
        "buffered_output", "closed_stdout", "closed_stdout_and_stderr",
        "excepthook_none", "excepthook_deleted", "stdin_input", "exit_list",
        "warnings", "asyncio_run", "settrace",
        "setprofile", "python_i_prompt", "python_i_after_error",
        "python_i_after_exit", "python_O", "python_OO_docstring",
        "python_P_safe_path", "python_u_unbuffered", "python_B_no_bytecode",
        "python_W_error", "dunders", "dunders_abspath", "doctest_testmod",
        "pdb_breakpoint", "python_X_dev")},
    "numpy_user_array_demo": {"snapshot": "numpy's demo runs in a few ms: "
                                          "most runs see a snapshot, not all"},
    **{name: {"snapshot": "it runs for some 30 ms: on a loaded machine the "
                          "timer's first tick can come after its end"}
       for name in ("recursion_limit", "recursion_uncaught", "introspection")},
    # (its own lines, importing inspect, take some 20 ms: 1 run in 40-60
    # on 3.11 sees no tick before the end, unloaded too)
    "fork_introspect": {"snapshot": "it runs for some 20 ms: the timer's "
                                    "first tick can come after its end"},
    # -f 0: the first line's snapshot starts with nothing bound yet; the
    # lines run while it is written are coalesced into one taken at the end
    # of the script's code, which these scripts never reach or which finds
    # nothing that can be saved
    "os_exit": {"snapshot": BRIEF_ONLY, "every_line": "os._exit ends the process "
                "at once: the snapshot coalesced after the first line's is "
                "never taken"},
    "signal_handlers": {"snapshot": BRIEF_ONLY, "every_line": "it dies by a "
                        "SIGTERM under SIG_DFL, its own choice: the snapshot "
                        "coalesced after the first line's is never taken"},
    "exit_through_finally": {"snapshot": BRIEF_ONLY, "every_line": "it binds "
                             "only modules and functions: nothing to write"},
    "unittest_main": {"snapshot": BRIEF_ONLY, "every_line": "its only variables "
                      "are test cases, which hold the runner's stream "
                      "(cannot be saved): nothing to write"},
    "fork_forkpty": {"snapshot": "its own lines take a few ms around a "
                                 "blocking read of the child's pty: the "
                                 "first 1 ms tick often comes while it is "
                                 "blocked (every_line snapshots it)"},
    "warning_inside_a_line": {"snapshot": "its one salient variable is a "
                                          "lock, which cannot be saved (the "
                                          "point of the case): nothing to "
                                          "write"},
}
for _case in CASES:
    _case.chkpt_lines = _case.chkpt_lines or CHKPT_LINES.get(_case.name, ())
    _case.no_snapshot = _case.no_snapshot or NO_SNAPSHOT.get(_case.name, {})

ADDRESS = re.compile(r"0x[0-9a-fA-F]{6,}")
DURATION = re.compile(r"(Ran \d+ tests? in )\d+\.\d+s")


def normalise(text, work):
    """What differs between any two runs of plain python: object addresses
    and unittest's timing."""
    return DURATION.sub(r"\1?s", ADDRESS.sub("0x...", text))


def expand(argv, work):
    return [a.replace("{work}", str(work)) for a in argv]


def tree(work):
    """The files and directories under WORK (what a script listing its
    directory would see), relative, without bytecode caches."""
    return sorted(str(p.relative_to(work)) for p in work.rglob("*")
                  if "__pycache__" not in p.parts)


WORK_PLACEHOLDER = "\x00work\x00"


def plain_run(case, tmp_path):
    """The case under plain python (its CompletedProcess-like result and
    the tree it left), run in tmp_path/work. Run once per case and python
    in a session: the result is kept (in the session's temporary directory,
    shared by the workers) with the work directory's path written as a
    placeholder, and given back with this test's own work path, which is
    where its chkpt run runs too."""
    import json
    import types
    cache = tmp_path.parent.parent / "exact-plain" if \
        tmp_path.parent.name.startswith("popen-") else tmp_path.parent / "exact-plain"
    cache.mkdir(exist_ok=True)
    key = cache / f"{case.name}.json"
    work = tmp_path / "work"
    if key.exists():
        saved = json.loads(key.read_text())
    else:
        work = fresh_workdir(tmp_path)
        proc = run_python([*case.python_opts, *expand(case.argv, work)],
                          work / case.cwd, input=case.stdin, env=case.env,
                          timeout=case.timeout)
        saved = {"stdout": proc.stdout.replace(str(work), WORK_PLACEHOLDER),
                 "stderr": proc.stderr.replace(str(work), WORK_PLACEHOLDER),
                 "returncode": proc.returncode, "tree": tree(work)}
        tmp = key.with_name(f"{key.name}.{os.getpid()}")
        tmp.write_text(json.dumps(saved))
        os.replace(tmp, key)
    plain = types.SimpleNamespace(
        stdout=saved["stdout"].replace(WORK_PLACEHOLDER, str(work)),
        stderr=saved["stderr"].replace(WORK_PLACEHOLDER, str(work)),
        returncode=saved["returncode"])
    return plain, saved["tree"]


def run_both(case, mode, tmp_path):
    """Runs the case under python (once per session: plain_run), then under
    chkpt in MODE, each in a fresh work directory at the same path; returns
    both results, the work directory, the store and
    what each run left in its work directory.  The default mode writes to
    ./checkpoints, where the script runs, as a user's run does."""
    plain, plain_tree = plain_run(case, tmp_path)
    work = fresh_workdir(tmp_path)
    cwd = work / case.cwd
    if mode == "default":
        store, opts = cwd / "checkpoints", []
    else:
        store = tmp_path / "snapshots"
        opts = [*MODES[mode], "-o", str(store)]
    under = run_chkpt([*opts, *expand(case.argv, work)], cwd,
                      input=case.stdin, env=case.env, timeout=case.timeout,
                      python_opts=case.python_opts)
    return plain, under, work, store, plain_tree, tree(work)


def assert_same(plain, under, work):
    p_out, u_out = normalise(plain.stdout, work), normalise(under.stdout, work)
    p_err = normalise(plain.stderr, work)
    u_err = normalise(without_chkpt_lines(under.stderr), work)
    assert u_out == p_out, "stdout differs"
    assert u_err == p_err, "stderr differs"
    assert under.returncode == plain.returncode, "exit status differs"


def assert_expected_chkpt_lines(case, under):
    unexpected = [l for l in chkpt_lines(under.stderr)
                  if not any(re.search(p, l) for p in case.chkpt_lines)]
    assert unexpected == [], "chkpt: lines the case does not expect"


def loaded_snapshots(store):
    """Loads every snapshot in STORE (in this process: the script's classes
    come from the snapshot's own sources); returns how many there are, or
    fails on the first that does not load."""
    import chkpt
    if not store.exists():
        return 0
    infos = chkpt.snapshots(str(store))
    manifests = list((store / "snapshots").glob("*.ckpt"))
    assert len(infos) == len(manifests), (infos, manifests)
    for info in infos:
        data = chkpt.load(info)
        meta = info.meta
        if "traceback" in meta:
            # a crash (or uncaught KeyboardInterrupt): load gives the failing
            # frame's locals over its module's globals, exactly those
            module = meta["traceback"][meta["frame"]]["module"]
            want = [v for v in meta["variables"]
                    if v.get("frame") == meta["frame"]
                    or v.get("globals") == module]
            assert meta["traceback"][meta["frame"]].get("saved"), info
        else:
            want = meta["variables"]
        assert sorted(data) == sorted({v["name"] for v in want}), info
        by_name = {}
        for v in want:
            by_name.setdefault(v["name"], []).append(v)
        for name, vs in by_name.items():
            # (a local and a global of one name: the local is loaded)
            if all(v.get("standin") is None for v in vs):
                assert_same_value(vs, data[name], info)
    return len(infos)


ADDR_IN_REPR = re.compile(r"0x[0-9a-fA-F]+")
# a script's module loaded in this process (chkpt.load) is named after the
# snapshot: `<__main__.C object at ..>` reads `<_chkpt_snap_HASH___main__.C ..>`
SNAPSHOT_MODULE = re.compile(r"_chkpt_snap_[0-9a-f]+_")


def short_repr(value, meta_repr):
    """What chkpt records as a variable's `repr` (src/take/capture.c,
    short_repr), computed here on the loaded value: arrays and frames as
    <Type shape=.. dtype=..>, anything else through reprlib's limits, on
    one line, at most 160 characters."""
    import reprlib
    shape = getattr(value, "shape", None)
    if isinstance(shape, tuple) and meta_repr.startswith("<") and " shape=" in meta_repr:
        name = type(value).__name__
        dtype = getattr(value, "dtype", None)
        r = (f"<{name} shape={shape!r}>" if dtype is None
             else f"<{name} shape={shape!r} dtype={dtype}>")
    else:
        rp = reprlib.Repr()
        for attr, n in (("maxlevel", 3), ("maxtuple", 6), ("maxlist", 6),
                        ("maxarray", 6), ("maxdict", 4), ("maxset", 6),
                        ("maxfrozenset", 6), ("maxdeque", 6),
                        ("maxstring", 60), ("maxlong", 40), ("maxother", 100)):
            setattr(rp, attr, n)
        try:
            r = rp.repr(value)
        except Exception:
            r = f"<{type(value).__name__} object>"
    r = " ".join(r.split())
    return r if len(r) <= 160 else r[:157] + "..."


def assert_same_value(vs, value, info):
    """The loaded value is the one the script held when the snapshot was
    taken: its repr is the one chkpt recorded from the script's own object
    at that moment (object addresses and the name of the module the
    script's classes load into aside; sets, whose order depends on the
    hash seed, compared as sorted characters)."""
    def canon(r):
        r = SNAPSHOT_MODULE.sub("", ADDR_IN_REPR.sub("0x?", r))
        return sorted(r) if isinstance(value, (set, frozenset)) else r
    got = [canon(short_repr(value, v["repr"])) for v in vs]
    want = [canon(v["repr"]) for v in vs]
    assert any(g == w for g, w in zip(got, want)), \
        (info, vs[0]["name"], vs[0]["type"], got, want)


def assert_snapshots(case, mode, store, plain_tree, under_tree, work):
    """The snapshot modes took snapshots and they load; the script's
    directory holds what it holds under python (plus ./checkpoints in the
    default mode, and only once a snapshot was written there)."""
    n = loaded_snapshots(store)
    extra = sorted(set(under_tree) - set(plain_tree))
    missing = sorted(set(plain_tree) - set(under_tree))
    assert missing == [], "files the script made under python are missing"
    if mode == "default":
        rel = str(store.relative_to(work))
        assert all(e == rel or e.startswith(rel + "/") for e in extra), extra
        assert (n > 0) == (rel in extra), (n, extra)
    else:
        assert extra == [], "chkpt wrote into the script's directory"
    if mode in SNAPSHOT_MODES and mode not in case.no_snapshot:
        assert n > 0, "no snapshot was taken in a snapshot mode"


PARAMS = [pytest.param(case, mode, id=f"{case.name}-{mode}")
          for case in CASES for mode in case.modes]


@pytest.mark.parametrize("case,mode", PARAMS)
def test_same_as_python(case, mode, tmp_path):
    if case.name.startswith("mp_") and case.argv[-1] not in \
            __import__("multiprocessing").get_all_start_methods():
        pytest.skip(f"start method {case.argv[-1]} unavailable")
    plain, under, work, store, plain_tree, under_tree = run_both(
        case, mode, tmp_path)
    assert_same(plain, under, work)
    assert_expected_chkpt_lines(case, under)
    assert_snapshots(case, mode, store, plain_tree, under_tree, work)


def test_broken_pipe(tmp_path):
    """`python script.py | head -1`: BrokenPipeError at exit, python's
    message and exit status 120 (or death by SIGPIPE), the same under
    chkpt."""
    import subprocess
    from conftest import chkpt_env
    work = fresh_workdir(tmp_path)
    results = []
    for prefix in ([sys.executable], [sys.executable, "-m", "chkpt", "-f", "-1"]):
        cmd = " ".join(map(str, prefix)) + " broken_pipe.py | head -n 1; " \
              "echo status ${PIPESTATUS[0]} >&2"
        r = subprocess.run(["bash", "-c", cmd], cwd=work, env=chkpt_env(),
                           capture_output=True, text=True, timeout=60)
        results.append((r.stdout, without_chkpt_lines(r.stderr)))
    assert results[0] == results[1]
    assert results[0][0] == "line 0\n"


# ---- sanity of the cases themselves: they test what they claim ----


def test_cases_cover_signal_deaths_and_tracebacks(tmp_path):
    """The interrupt case really dies by SIGINT, the uncaught case really
    prints a traceback, the snapshot mode really is accepted."""
    work = fresh_workdir(tmp_path)
    p = run_python(["keyboard_interrupt.py"], work)
    assert p.returncode == -signal.SIGINT
    p = run_python(["uncaught.py"], work)
    assert p.returncode == 1 and "Traceback (most recent call last)" in p.stderr
    p = run_python(["syntax_error.py"], work)
    assert p.returncode == 1 and "SyntaxError" in p.stderr
    assert "Traceback" not in p.stderr


@pytest.mark.parametrize("mode,script,least", [
    # every line where no snapshot is being written: a fast script gets few
    ("every_line", "pickling.py", 1),
    # one snapshot written at a time, auto ones due meanwhile skipped
    ("snapshot", "cpu_bound.py", 2),
])
def test_snapshot_modes_really_snapshot(mode, script, least, tmp_path):
    """The automatic snapshots do happen while the scripts run, so the
    comparisons above cover them."""
    import chkpt
    work = fresh_workdir(tmp_path)
    r = run_chkpt([*MODES[mode], "-o", tmp_path / "snaps", script], work)
    assert r.returncode == 0, r.stderr
    kinds = [s.kind for s in chkpt.snapshots(str(tmp_path / "snaps"))]
    assert kinds.count("auto") >= least, kinds


def test_forked_children_take_no_snapshots(tmp_path):
    """A process forked by the script is the script's business, not a run
    of chkpt: it must not take snapshots of its own."""
    work = fresh_workdir(tmp_path)
    r = run_chkpt([*MODES["every_line"], "-o", tmp_path / "snaps",
                   "mp_pool.py", "fork"], work)
    assert r.returncode == 0, r.stderr
    import chkpt
    # the process whose state a snapshot holds (each is written by a child
    # of it, whose pid names the file)
    pids = {s.meta["pid"] for s in chkpt.snapshots(str(tmp_path / "snaps"))}
    assert len(pids) == 1, sorted(pids)


# ---- the target cannot be run: one chkpt: line, exit status 2 ----


@pytest.mark.parametrize("mode", ["manual", "snapshot"])
@pytest.mark.parametrize("target,message", [
    ("missing_script.py",
     "chkpt: can't open file '{work}/missing_script.py': "
     "[Errno 2] No such file or directory"),
    ("emptydir", "chkpt: can't find '__main__' module in '{work}/emptydir'"),
])
def test_target_cannot_be_run(target, message, mode, tmp_path):
    work = fresh_workdir(tmp_path)
    r = run_chkpt([*MODES[mode], "-o", tmp_path / "snapshots", target, "arg"],
                  work)
    assert r.stdout == ""
    assert r.stderr.splitlines() == [message.format(work=work)]
    assert r.returncode == 2
    # python says the same thing after its own name
    p = run_python([target, "arg"], work)
    assert p.stderr.split(": ", 1)[1] == r.stderr.split(": ", 1)[1]


@pytest.mark.parametrize("module,message", [
    ("no_such_module_here", "No module named no_such_module_here"),
    ("pkg.nothing", "No module named pkg.nothing"),
    (".pkg", "Relative module names not supported"),
    ("nomain_pkg", "No module named nomain_pkg.__main__; 'nomain_pkg' is a "
                   "package and cannot be directly executed"),
])
def test_module_not_runnable_is_python_message(module, message, tmp_path):
    """python's own message and exit status 1, prefixed `chkpt:` instead of
    python's path; what the module's packages print happens once."""
    work = fresh_workdir(tmp_path)
    p = run_python(["-m", module], work)
    work = fresh_workdir(tmp_path)
    r = run_chkpt(["-f", "-1", "-m", module], work)
    assert r.stderr == f"chkpt: {message}\n"
    assert p.stderr == f"{os.path.realpath(sys.executable)}: {message}\n" or \
        p.stderr == f"{sys.executable}: {message}\n"
    assert (r.stdout, r.returncode) == (p.stdout, p.returncode) == (p.stdout, 1)


# ---- the documented differences (DIFFERENCES.md), no larger than said ----


def _json_run(runner, args, cwd):
    import json
    r = runner(args, cwd)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


@pytest.mark.parametrize("kind", ["script", "module"])
def test_differences_sys_modules_and_orig_argv(kind, tmp_path):
    """Only the modules `python -m chkpt` imports itself (runpy and its
    importlib parts, chkpt, pickle, json and what they import) are extra in
    sys.modules; nothing python has is missing; sys.orig_argv is chkpt's
    command line; sys.argv is python's."""
    import json
    work = fresh_workdir(tmp_path)
    target = ["modules_seen.py"] if kind == "script" else ["-m", "modules_seen"]
    plain = _json_run(run_python, target, work)
    opts = ["-f", "-1", "-z", "-1", "-o", str(tmp_path / "snapshots")]
    under = _json_run(run_chkpt, [*opts, *target], work)
    r = run_python(["-c", "import json, sys; base = set(sys.modules); "
                          "import runpy, chkpt, chkpt._chkpt; "
                          "print(json.dumps(sorted(set(sys.modules) - base)))"],
                   work)
    allowed = set(json.loads(r.stdout)) | {"json", "json.decoder",
                                           "json.scanner", "json.encoder"}
    extra = set(under["modules"]) - set(plain["modules"])
    assert extra <= allowed, sorted(extra - allowed)
    assert set(plain["modules"]) <= set(under["modules"])
    assert under["argv"] == plain["argv"]
    assert under["orig_argv"] == [sys.executable, "-m", "chkpt", *opts, *target]


def test_differences_directory_without_main_exit_status(tmp_path):
    """python exits 1 for a directory without __main__.py (runpy's error);
    chkpt exits 2, as for a script it cannot open (issue 3's spec)."""
    work = fresh_workdir(tmp_path)
    assert run_python(["emptydir"], work).returncode == 1
    assert run_chkpt(["emptydir"], work).returncode == 2


PROCESS_STATE = '''
import json, os, sys, threading
try:
    from chkpt import Checkpoint
    ck = Checkpoint.get_global_singleton()
except AssertionError:
    ck = None
data = list(range(1000))
if ck is not None:
    ck.track(data)


def state():
    return {"threads": [t.name for t in threading.enumerate()],
            "tasks": len(os.listdir("/proc/self/task")),
            "fds": len(os.listdir("/proc/self/fd")),
            "refs": sys.getrefcount(data)}


before = state()
if ck is not None:
    ck.snapshot()
    ck.wait()
print(json.dumps([before, state()]))
'''


def test_differences_threads_descriptors_references(tmp_path):
    """What README's "differences a script can still see" says of chkpt's
    own objects, and no more: one native thread (in /proc/self/task, not in
    threading.enumerate()), a few descriptors once a snapshot is written
    (none before), one more reference to a tracked object."""
    (tmp_path / "state.py").write_text(PROCESS_STATE)
    plain = _json_run(run_python, ["state.py"], tmp_path)
    under = _json_run(run_chkpt, ["-o", tmp_path / "snaps", "state.py"],
                      tmp_path)
    for p, u in zip(plain, under):
        assert u["threads"] == p["threads"]
        assert u["tasks"] - p["tasks"] in (0, 1), (p, u)
        assert u["refs"] == p["refs"] + 1, (p, u)
    assert under[0]["fds"] == plain[0]["fds"]
    assert 0 <= under[1]["fds"] - plain[1]["fds"] <= 3, (plain, under)
    assert under[1]["tasks"] - plain[1]["tasks"] == 1    # the timer's thread


PROBED = '''
import os
import sys
# what the script sees (calls) and what ran anywhere, the snapshot's child
# included (calls.log: O_APPEND writes reach the file from either process)
log = os.open("calls.log", os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_APPEND)


class Calls(list):
    def append(self, name):
        os.write(log, (name + "\\n").encode())
        super().append(name)


calls = Calls()


class Probe:
    def __init__(self):
        self.payload = [1, 2, 3]

    def __getattr__(self, name):
        calls.append("__getattr__ " + name)
        raise AttributeError(name)

    def __reduce_ex__(self, protocol):
        calls.append("__reduce_ex__")
        return object.__reduce_ex__(self, protocol)

    def __getstate__(self):
        calls.append("__getstate__")
        return self.__dict__

    def __repr__(self):
        calls.append("__repr__")
        return "Probe()"

    def __sizeof__(self):
        calls.append("__sizeof__")
        return object.__sizeof__(self)

    def __eq__(self, other):
        calls.append("__eq__")
        return self is other

    __hash__ = object.__hash__

    def __len__(self):
        calls.append("__len__")
        return 3

    def __iter__(self):
        calls.append("__iter__")
        return iter(self.payload)

    def __bool__(self):
        calls.append("__bool__")
        return True


probe = Probe()
try:
    from chkpt import Checkpoint
    ck = Checkpoint.get_global_singleton()
    ck.snapshot()
    ck.wait()
except AssertionError:
    pass
print(sorted(set(calls)))
'''


@pytest.mark.parametrize("opts,allowed", [
    # nothing salient, nothing tracked: chkpt calls none of the methods
    (["-z", "-1"], set()),
    # saved: pickling (__reduce_ex__, __getstate__ and the lookups pickle
    # makes itself), the repr kept for show, the size chkpt measures
    (["-z", "0"], {"__reduce_ex__", "__getstate__", "__repr__", "__sizeof__",
                   "__getattr__ __getnewargs_ex__",
                   "__getattr__ __getnewargs__"}),
])
def test_differences_methods_a_snapshot_calls(opts, allowed, tmp_path):
    """The script's own methods that a snapshot runs are those README and
    DIFFERENCES.md name (pickling, repr, size), nothing else (no __eq__,
    __len__, __iter__, __bool__, no attribute probing of the object); they
    run in the snapshot's child, so the script itself sees none of them."""
    (tmp_path / "probed.py").write_text(PROBED)
    assert run_python(["probed.py"], tmp_path).stdout == "[]\n"
    assert (tmp_path / "calls.log").read_text() == ""
    r = run_chkpt(["-f", "-1", *opts, "-o", tmp_path / "snaps", "probed.py"],
                  tmp_path)
    assert r.returncode == 0 and chkpt_lines(r.stderr) == [], r.stderr
    assert r.stdout == "[]\n", "the script saw a snapshot's method calls"
    called = set((tmp_path / "calls.log").read_text().splitlines())
    assert called <= allowed, called - allowed
    if allowed:
        assert {"__reduce_ex__", "__repr__"} <= called, called
