"""The command line of `python -m chkpt` (cli.c): every option, its accepted
spellings and its error paths, verbs and their arguments, and where the
options end (everything after the script belongs to it)."""
import os
import re
import textwrap

import pytest

from conftest import chkpt_lines, run_chkpt

SETTINGS = """\
import json, sys
from chkpt import Checkpoint
ck = Checkpoint.get_global_singleton()
print(json.dumps({"argv": sys.argv, "frequency": ck.frequency,
                  "min_obj_size": ck.min_obj_size, "verbosity": ck.verbosity,
                  "output_dir": ck.output_dir}))
open("ran.marker", "w").close()
"""


@pytest.fixture
def job(tmp_path):
    (tmp_path / "job.py").write_text(SETTINGS)
    return tmp_path


def settings(proc):
    import json
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.splitlines()[-1])


def assert_usage_error(proc, message, cwd):
    """One `chkpt: error: ...` line, nothing else, exit 2, script not run."""
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    assert proc.stdout == ""
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("chkpt: error: ")
    if message is not None:
        assert lines[0] == "chkpt: error: " + message
    assert not (cwd / "ran.marker").exists()


# ---- help and version ----


@pytest.mark.parametrize("flag", ["-h", "--help", "--he", "-vh"])
def test_help(flag, job):
    r = run_chkpt([flag], job)
    assert r.returncode == 0 and r.stderr == ""
    out = r.stdout
    assert out.startswith("usage: python -m chkpt [options] [--] script.py")
    for word in ["-z BYTES, --min-obj-size BYTES", "-o DIR, --output-dir DIR",
                 "-f MS, --frequency MS", "-v, --verbose", "--compress LEVEL",
                 "-h, --help", "--version", "-m MODULE",
                 "ls [DIR]", "show SNAPSHOT", "explore SNAPSHOT",
                 "export [--portable] SNAPSHOT OUT.pkl", "verify [DIR]",
                 "gc [DIR] --keep N",
                 "K, M and G", "0: every", "-1: only", "Default: 1M",
                 "./checkpoints", "0: at every executed line", "-1: only",
                 "zstd", "--"]:
        assert word in out, word
    assert "Default: auto" in out      # CHKPT_DEFAULT_FREQUENCY_MS
    assert "--keep-auto N" in out and "Default: 10 with -f auto" in out
    assert not (job / "ran.marker").exists()


def test_help_after_other_options(job):
    r = run_chkpt(["-f", "5", "-v", "--help", "job.py"], job)
    assert r.returncode == 0 and r.stdout.startswith("usage:")
    assert not (job / "ran.marker").exists()


def test_version(job):
    import chkpt
    r = run_chkpt(["--version"], job)
    assert (r.returncode, r.stdout, r.stderr) == (0, f"chkpt {chkpt.__version__}\n", "")


# ---- accepted spellings reach the Checkpoint ----


@pytest.mark.parametrize("opts,expected", [
    ([], {"frequency": "auto", "min_obj_size": 1 << 20, "verbosity": 0}),
    (["-f", "auto"], {"frequency": "auto"}),
    (["-fAUTO"], {"frequency": "auto"}),
    (["--frequency= auto "], {"frequency": "auto"}),
    (["-f", "1000", "-f", "auto"], {"frequency": "auto"}),
    (["--keep-auto", "3"], {}),
    (["--keep-auto=0"], {}),
    (["-f", "5"], {"frequency": 5}),
    (["-f5"], {"frequency": 5}),
    (["--frequency=5"], {"frequency": 5}),
    (["--frequency", "5"], {"frequency": 5}),
    (["--freq", "7"], {"frequency": 7}),
    (["-f", "0"], {"frequency": 0}),
    (["-f", "-1"], {"frequency": -1}),
    (["-f-1"], {"frequency": -1}),
    (["--frequency=-1"], {"frequency": -1}),
    (["-z", "0"], {"min_obj_size": 0}),
    (["-z", "-1"], {"min_obj_size": -1}),
    (["-z", "4096"], {"min_obj_size": 4096}),
    (["-z", "64K"], {"min_obj_size": 64 << 10}),
    (["-z64k"], {"min_obj_size": 64 << 10}),
    (["-z", "3M"], {"min_obj_size": 3 << 20}),
    (["--min-obj-size=2G"], {"min_obj_size": 2 << 30}),
    (["--min-obj-size", "1MiB"], {"min_obj_size": 1 << 20}),
    (["-z", "10KB"], {"min_obj_size": 10 << 10}),
    (["-z", "512B"], {"min_obj_size": 512}),
    (["-v"], {"verbosity": 1}),
    (["-vv"], {"verbosity": 2}),
    (["-v", "-v", "--verbose"], {"verbosity": 3}),
    (["-vvf", "9"], {"verbosity": 2, "frequency": 9}),
    (["-vf9"], {"verbosity": 1, "frequency": 9}),
    (["--compress", "3"], {}),
    (["--compress=19"], {}),
    (["--compress", "0"], {}),
    (["-f", "5", "-f", "6"], {"frequency": 6}),       # the last one wins
    (["-f", "+5"], {"frequency": 5}),                 # as int() reads it
    (["-f", " 5 "], {"frequency": 5}),
    (["-f", "1_000"], {"frequency": 1000}),
    (["-z", "1_024K"], {"min_obj_size": 1 << 20}),
])
def test_accepted_options(opts, expected, job):
    s = settings(run_chkpt([*opts, "-o", "out", "job.py"], job))
    for k, v in expected.items():
        assert s[k] == v, (k, s)
    assert s["argv"] == ["job.py"]


@pytest.mark.parametrize("opts", [["-o", "snaps"], ["-osnaps"],
                                  ["--output-dir", "snaps"],
                                  ["--output-dir=snaps"], ["--out", "snaps"]])
def test_output_dir(opts, job):
    s = settings(run_chkpt([*opts, "job.py"], job))
    assert s["output_dir"] == str(job / "snaps")


def test_output_dir_default(job):
    s = settings(run_chkpt(["job.py"], job))
    assert s["output_dir"] == str(job / "checkpoints")


# ---- options end at the script ----


def test_arguments_after_the_script_belong_to_it(job):
    r = run_chkpt(["job.py", "-v", "-f", "3", "--help", "--", "-m", "x", "ls"],
                  job)
    s = settings(r)
    assert s["argv"] == ["job.py", "-v", "-f", "3", "--help", "--", "-m", "x",
                         "ls"]
    assert (s["verbosity"], s["frequency"]) == (0, "auto")


def test_double_dash_ends_options(job):
    (job / "-weird.py").write_text(SETTINGS)
    s = settings(run_chkpt(["-f", "4", "--", "-weird.py", "-f", "5"], job))
    assert s["argv"] == ["-weird.py", "-f", "5"] and s["frequency"] == 4


@pytest.mark.parametrize("verb", ["ls", "show", "explore", "export", "verify",
                                  "gc"])
def test_double_dash_runs_a_script_named_like_a_verb(verb, job):
    (job / verb).write_text(SETTINGS)
    s = settings(run_chkpt(["-f", "-1", "--", verb, "a", "--keep"], job))
    assert s["argv"] == [verb, "a", "--keep"]


def test_module_option_ends_options(job):
    (job / "mymod.py").write_text(SETTINGS)
    for opts in (["-m", "mymod"], ["-mmymod"]):
        s = settings(run_chkpt(["-f", "8", *opts, "-f", "3", "-v"], job))
        assert s["argv"] == [str(job / "mymod.py"), "-f", "3", "-v"]
        assert (s["frequency"], s["verbosity"]) == (8, 0)


def test_options_bundled_with_module(job):
    (job / "mymod.py").write_text(SETTINGS)
    s = settings(run_chkpt(["-vm", "mymod", "x"], job))
    assert s["argv"] == [str(job / "mymod.py"), "x"] and s["verbosity"] == 1


# ---- usage errors: one line, exit status 2 ----


@pytest.mark.parametrize("argv,message", [
    ([], "the following arguments are required: script (or -m MODULE)"),
    (["-f", "5"], "the following arguments are required: script (or -m MODULE)"),
    (["-v", "--"], "the following arguments are required: script (or -m MODULE)"),
    (["-f", "abc", "job.py"], "argument -f/--frequency: invalid int value: 'abc'"),
    (["-f", "1.5", "job.py"], "argument -f/--frequency: invalid int value: '1.5'"),
    (["-f", "", "job.py"], "argument -f/--frequency: invalid int value: ''"),
    (["--frequency=", "job.py"], "argument -f/--frequency: invalid int value: ''"),
    (["-f", "-2", "job.py"], "argument -f/--frequency: must be >= -1 (got -2)"),
    (["-f", "1__0", "job.py"], "argument -f/--frequency: invalid int value: '1__0'"),
    (["-f", "0x10", "job.py"], "argument -f/--frequency: invalid int value: '0x10'"),
    (["-f", "99999999999999999999999", "job.py"],
     "argument -f/--frequency: invalid int value: '99999999999999999999999'"),
    (["-f"], "argument -f/--frequency: expected one argument"),
    (["--frequency"], "argument -f/--frequency: expected one argument"),
    (["-z", "lots", "job.py"], None),
    (["-z", "1X", "job.py"], None),
    (["-z", "-1K", "job.py"], None),
    (["-z", "K", "job.py"], None),
    (["-z", "-2", "job.py"], "argument -z/--min-obj-size: must be >= -1 (got -2)"),
    (["-z"], "argument -z/--min-obj-size: expected one argument"),
    (["--compress", "20", "job.py"],
     "argument --compress: must be between 0 and 19 (got 20)"),
    (["--compress", "-1", "job.py"],
     "argument --compress: must be between 0 and 19 (got -1)"),
    (["--compress", "high", "job.py"],
     "argument --compress: invalid int value: 'high'"),
    (["--compress"], "argument --compress: expected one argument"),
    (["--max-pickle-size", "0", "job.py"],
     "argument --max-pickle-size: must be >= 1 (got 0)"),
    (["--max-pickle-size", "big", "job.py"],
     "argument --max-pickle-size: invalid size value: 'big' "
     "(an integer of bytes, K, M or G suffix allowed)"),
    (["--max-store-size", "-1", "job.py"],
     "argument --max-store-size: must be >= 0 (got -1)"),
    (["--keep-auto", "-1", "job.py"], "argument --keep-auto: must be >= 0 (got -1)"),
    (["--keep-auto", "x", "job.py"], "argument --keep-auto: invalid int value: 'x'"),
    (["-f", "automatic", "job.py"],
     "argument -f/--frequency: invalid int value: 'automatic'"),
    (["-o"], "argument -o/--output-dir: expected one argument"),
    (["-o", "", "job.py"], "argument -o/--output-dir: expected a directory, got ''"),
    (["-m"], "argument -m: expected one argument"),
    (["--bogus", "job.py"], "unrecognized arguments: --bogus"),
    (["-q", "job.py"], "unrecognized arguments: -q"),
    (["-vq", "job.py"], "argument -v/--verbose: ignored explicit argument 'q'"),
    (["--verbose=2", "job.py"],
     "argument -v/--verbose: ignored explicit argument '2'"),
    (["--keep", "3", "job.py"], "unrecognized arguments: --keep"),
    (["--", "--"], None),
])
def test_usage_errors(argv, message, job):
    if argv == ["--", "--"]:
        # `--` then a script named `--`: python's own error, not a usage one
        r = run_chkpt(argv, job)
        assert r.returncode == 2
        assert chkpt_lines(r.stderr) == r.stderr.splitlines()
        assert "can't open file" in r.stderr
        return
    r = run_chkpt(argv, job)
    assert_usage_error(r, message, job)
    if message is None:
        assert "argument -z/--min-obj-size: invalid size value:" in r.stderr


# ---- verbs ----


@pytest.mark.parametrize("argv,message", [
    (["show"], "the following arguments are required: SNAPSHOT"),
    (["explore"], "the following arguments are required: SNAPSHOT"),
    (["export"], "the following arguments are required: SNAPSHOT, OUT.pkl"),
    (["export", "snap"], "the following arguments are required: OUT.pkl"),
    (["gc"], "the following arguments are required: --keep"),
    (["gc", "dir"], "the following arguments are required: --keep"),
    (["gc", "--keep"], "argument --keep: expected one argument"),
    (["gc", "--keep", "x"], "argument --keep: invalid int value: 'x'"),
    (["gc", "--keep", "-1"], "argument --keep: must be >= 0 (got -1)"),
    (["ls", "a", "b"], "unrecognized arguments: b"),
    (["show", "a", "b", "c"], "unrecognized arguments: b c"),
    (["export", "a", "b", "c"], "unrecognized arguments: c"),
    (["verify", "a", "b"], "unrecognized arguments: b"),
    (["ls", "--bogus"], "unrecognized arguments: --bogus"),
    (["ls", "--keep", "1"], "unrecognized arguments: --keep"),
    (["show", "-f", "1", "x"], "unrecognized arguments: -f"),
])
def test_verb_usage_errors(argv, message, job):
    assert_usage_error(run_chkpt(argv, job), message, job)


def test_verb_help(job):
    r = run_chkpt(["gc", "--help"], job)
    assert r.returncode == 0 and r.stdout.startswith("usage:")


@pytest.fixture
def store(tmp_path):
    """A snapshot directory with two manual snapshots."""
    (tmp_path / "make.py").write_text(textwrap.dedent("""\
        from chkpt import Checkpoint
        ck = Checkpoint.get_global_singleton()
        data = list(range(1000))
        ck.track(data)
        ck.snapshot("one")
        ck.snapshot("two")
        ck.wait()
    """))
    r = run_chkpt(["-f", "-1", "-o", "snaps", "make.py"], tmp_path)
    assert r.returncode == 0, r.stderr
    return tmp_path


def manifests(d):
    return sorted((d / "snaps" / "snapshots").glob("*.ckpt"))


def test_verbs_get_their_arguments(store):
    """The verbs run with what the command line gave them (what they print
    is verbs.c's business, tested there)."""
    snaps = manifests(store)
    assert len(snaps) == 2
    r = run_chkpt(["ls", "snaps"], store)
    assert r.returncode == 0 and snaps[0].stem in r.stdout
    r = run_chkpt(["-o", "snaps", "ls"], store)
    assert r.returncode == 0 and snaps[1].stem in r.stdout
    r = run_chkpt(["show", snaps[0]], store)
    assert r.returncode == 0 and re.search(r"\bone\b", r.stdout), r.stdout
    assert not re.search(r"\btwo\b", r.stdout), r.stdout
    r = run_chkpt(["export", snaps[1], "out.pkl"], store)
    assert r.returncode == 0 and (store / "out.pkl").exists()
    r = run_chkpt(["verify", "snaps"], store)
    assert r.returncode == 0
    r = run_chkpt(["gc", "snaps", "--keep", "1"], store)
    assert r.returncode == 0 and len(manifests(store)) == 1
    r = run_chkpt(["gc", "--keep=0", "--", "snaps"], store)
    assert r.returncode == 0 and len(manifests(store)) == 0


# ---- stderr discipline ----


def test_every_chkpt_stderr_line_is_prefixed(tmp_path):
    """-vv on a run that snapshots: the start, each snapshot written and the
    count at exit are all said, every line of it starting with chkpt:."""
    (tmp_path / "job.py").write_text(textwrap.dedent("""\
        import time
        data = list(range(1000))
        for i in range(5):
            data[0] = i
            time.sleep(0.01)
        print("done")
    """))
    r = run_chkpt(["-vv", "-f", "0", "-z", "0", "-o", "out", "job.py"], tmp_path)
    assert (r.returncode, r.stdout) == (0, "done\n"), r.stderr
    written = sorted((tmp_path / "out" / "snapshots").glob("*.ckpt"))
    assert written, "the run took no snapshot"
    lines = r.stderr.splitlines()
    assert all(l.startswith("chkpt:") for l in lines), r.stderr
    said = [l.rsplit(" -> ", 1)[1] for l in lines if " snapshot " in l and " -> " in l]
    assert sorted(said) == [str(p) for p in written], r.stderr


def test_unwritable_output_dir_warns_once_and_runs(job):
    (job / "afile").write_text("not a directory")
    r = run_chkpt(["-o", "afile/sub", "job.py"], job)
    assert r.returncode == 0
    assert (job / "ran.marker").exists()
    lines = chkpt_lines(r.stderr)
    assert lines == [f"chkpt: cannot write snapshots to {job}/afile/sub: "
                     "Not a directory; the script runs without snapshots"]


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores directory permissions; "
                    "as root, test_store_robustness mounts a read-only tmpfs instead")
def test_read_only_output_dir(job):
    ro = job / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        r = run_chkpt(["-o", "ro/snaps", "job.py"], job)
    finally:
        ro.chmod(0o700)
    assert r.returncode == 0 and "Permission denied" in r.stderr


def test_output_dir_not_created_before_a_snapshot(job):
    """Nothing appears in the script's directory unless a snapshot is
    taken: a script listing its directory sees what it sees under python."""
    r = run_chkpt(["-f", "-1", "-z", "-1", "job.py"], job)
    assert r.returncode == 0
    assert not (job / "checkpoints").exists()


def test_main_accepts_only_strings():
    import chkpt._chkpt as c
    with pytest.raises(TypeError):
        c.main(["-f", 5])


# ---- arguments that are not valid UTF-8 (file names) ----


def test_non_utf8_arguments(tmp_path):
    import sys
    name = os.fsdecode(b"caf\xe9.py")
    (tmp_path / name).write_text("import sys; print(ascii(sys.argv))\n")
    r = run_chkpt(["-f", "-1", "-o", os.fsdecode(b"o\xff"), name,
                   os.fsdecode(b"\xfe")], tmp_path)
    assert r.returncode == 0, r.stderr
    assert r.stdout == "['caf\\udce9.py', '\\udcfe']\n"
    r = run_chkpt(["-f", os.fsdecode(b"\xff"), name], tmp_path, text=False)
    assert r.returncode == 2
    assert r.stderr == (b"chkpt: error: argument -f/--frequency: invalid int "
                        b"value: '\xff'\n")
