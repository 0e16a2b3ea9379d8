"""Real third-party scripts under chkpt (issue 15): scikit-learn's own
examples, as Debian's python-sklearn-doc ships them, run by plain python and
by `python -m chkpt -f 100 -z 0 -o <tmp>` (a snapshot of every picklable
variable every 100 ms), interleaved, N rounds. Prints, for each example, the
median ratio of chkpt's wall time to plain's and its spread, then the median
over examples and the worst, against the targets (median <= 1.25x, worst
<= 1.5x), and checks that stdout+stderr are identical.

    python bench/bench_sklearn.py [--rounds 3] [--only SUBSTR] [--first N]
                                  [--select]

Needs: `apt-get install python-sklearn-doc` (the examples, found under
/usr/share/doc/python-sklearn-doc/examples or $CHKPT_SKLEARN_EXAMPLES) and
scikit-learn + matplotlib in this python (`make bench-sklearn` sets both up).

The examples (EXAMPLES below) were chosen by a mechanical rule, not by how
chkpt does on them; `--select` applies it again and prints what it picks:
  1. every examples/*/*.py whose text has no network access (no `fetch_`,
     no urlopen/urllib, no pooch) and is not a GUI (svm_gui);
  2. taken in the order of the SHA-256 of their path relative to examples/
     (an order that says nothing about what they do);
  3. each run once under plain python (MPLBACKEND=Agg, 60 s limit); kept if
     it exits 0 within 1 to 30 s, until 18 are kept.
Debian's examples are for scikit-learn 1.2; the rule keeps those that still
run under the version installed.

Output comparison: stdout and stderr of every chkpt run must equal those of
a plain run. Some examples print timings: only the lines that differ
between two plain runs of the same example are normalised, and only their
numbers (replaced by '#', signs included) and their spacing (columns
realign around numbers of another width); the table says how many lines
that was. One example (model_selection/plot_grid_search_digits.py) picks
the model that predicts fastest, so which model it reports, and that
model's scores, depend on the machine's load (its plain runs differ): its
numbers are masked on every line (TIMING_DEPENDENT). When a chkpt run's
output is not one the plain runs printed, up to 6 more plain runs are
made, and the output counts as identical if one of them prints it too
(the table says so).
Each run gets a fresh temporary copy of the example (examples write files).
"""
import argparse
import hashlib
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
DEFAULT_DIR = "/usr/share/doc/python-sklearn-doc/examples"
TARGET_MEDIAN = 1.25
TARGET_WORST = 1.5
KEEP = 18
EXTRA_PLAIN = 6     # plain runs more, for an output that depends on time
# Results that depend on how fast the machine runs the example: numbers on
# every line are masked (its plain runs pick C=1, C=10 or C=1000 from one
# run to the next, and print that model's scores).
TIMING_DEPENDENT = {
    "model_selection/plot_grid_search_digits.py":
        "picks the model that predicts fastest",
}
MIN_S, MAX_S, LIMIT_S = 1.0, 30.0, 60.0
NETWORK = re.compile(r"fetch_|urlopen|urllib|pooch")
GUI = ("svm_gui",)

# Picked by --select (see the rule above) with scikit-learn 1.9.1 on python
# 3.12; the plain time of the selection run is in the comment.
EXAMPLES = [
    "miscellaneous/plot_kernel_approximation.py",  # 13.8 s
    "decomposition/plot_pca_3d.py",  # 2.4 s
    "datasets/plot_random_dataset.py",  # 2.8 s
    "cross_decomposition/plot_compare_cross_decomposition.py",  # 2.4 s
    "linear_model/plot_multi_task_lasso_support.py",  # 2.2 s
    "model_selection/plot_precision_recall.py",  # 1.7 s
    "model_selection/plot_successive_halving_heatmap.py",  # 7.2 s
    "svm/plot_separating_hyperplane.py",  # 1.7 s
    "covariance/plot_robust_vs_empirical_covariance.py",  # 4.4 s
    "linear_model/plot_ols_ridge_variance.py",  # 1.7 s
    "miscellaneous/plot_pipeline_display.py",  # 1.2 s
    "model_selection/plot_underfitting_overfitting.py",  # 1.6 s
    "decomposition/plot_pca_vs_lda.py",  # 1.5 s
    "feature_selection/plot_feature_selection.py",  # 1.5 s
    "model_selection/plot_grid_search_digits.py",  # 7.1 s
    "linear_model/plot_theilsen.py",  # 1.6 s
    "ensemble/plot_isolation_forest.py",  # 1.6 s
    "linear_model/plot_nnls.py",  # 1.6 s
]

HOW = ("get them with `make bench-sklearn` (as root), or by hand: "
       "`apt-get install python-sklearn-doc` and "
       "`pip install scikit-learn matplotlib` in {py}")


def examples_dir():
    d = os.environ.get("CHKPT_SKLEARN_EXAMPLES", DEFAULT_DIR)
    if not os.path.isdir(d):
        sys.exit(f"bench_sklearn: no scikit-learn examples at {d}: "
                 + HOW.format(py=sys.executable))
    try:
        import matplotlib  # noqa: F401
        import sklearn  # noqa: F401
    except ImportError as e:
        sys.exit(f"bench_sklearn: {e.name} is not installed in "
                 f"{sys.executable}: " + HOW.format(py=sys.executable))
    return d


def env():
    e = dict(os.environ, MPLBACKEND="Agg", PYTHONPATH=REPO)
    e.pop("PYTHONSTARTUP", None)
    return e


def run(src, chkpt, timeout=None):
    """Runs example src in a fresh copy; returns (seconds, output, rc)."""
    with tempfile.TemporaryDirectory(prefix="bench-sk-") as tmp:
        script = os.path.join(tmp, os.path.basename(src))
        shutil.copy(src, script)
        cmd = [sys.executable]
        if chkpt:
            cmd += ["-m", "chkpt", "-f", "100", "-z", "0",
                    "-o", os.path.join(tmp, "ckpt")]
        cmd.append(script)
        t0 = time.perf_counter()
        try:
            p = subprocess.run(cmd, cwd=tmp, env=env(), timeout=timeout,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        except subprocess.TimeoutExpired:
            return time.perf_counter() - t0, None, None
        dt = time.perf_counter() - t0
        # the copy's path appears in warnings: the same for every run
        out = (p.stdout + b"\n--- stderr ---\n" + p.stderr).replace(
            tmp.encode(), b"<tmp>")
        return dt, out, p.returncode


def select(d):
    cands = []
    for sub in sorted(os.listdir(d)):
        sd = os.path.join(d, sub)
        if not os.path.isdir(sd):
            continue
        for f in sorted(os.listdir(sd)):
            if not f.endswith(".py") or any(g in f for g in GUI):
                continue
            with open(os.path.join(sd, f), encoding="utf-8") as fh:
                if NETWORK.search(fh.read()):
                    continue
            cands.append(f"{sub}/{f}")
    cands.sort(key=lambda r: hashlib.sha256(r.encode()).hexdigest())
    print(f"{len(cands)} candidates without network access", flush=True)
    kept = []
    for rel in cands:
        dt, out, rc = run(os.path.join(d, rel), False, timeout=LIMIT_S)
        ok = rc == 0 and MIN_S <= dt <= MAX_S
        why = ("timeout" if rc is None else f"exit {rc}" if rc else
               "kept" if ok else "too short" if dt < MIN_S else "too long")
        print(f"  {rel:60s} {dt:6.1f} s  {why}", flush=True)
        if ok:
            kept.append((rel, dt))
            if len(kept) == KEEP:
                break
    print("EXAMPLES = [")
    for rel, dt in kept:
        print(f'    "{rel}",  # {dt:.1f} s')
    print("]")


def lines(b):
    return b.decode("utf-8", "replace").split("\n")


NUM = re.compile(r"[-+]?\d+(\.\d*)?(e[-+]?\d+)?")
SPACE = re.compile(r"\s+")


def normaliser(plains, every_line=False):
    """Which lines differ between plain runs (of the reference's length):
    their numbers and spacing are masked (on every line if every_line)."""
    ref = lines(plains[0])
    varying = set(range(len(ref))) if every_line else set()
    for p in plains[1:]:
        other = lines(p)
        if len(other) == len(ref):
            varying |= {i for i, (a, b) in enumerate(zip(ref, other)) if a != b}

    def norm(b):
        return [SPACE.sub("", NUM.sub("#", l))
                if i in varying or every_line else l
                for i, l in enumerate(lines(b))]
    return norm, len(varying)


def compare(plains, chkpts, every_line=False):
    """None if every chkpt output is, once masked, that of a plain run;
    else the first difference. Returns (diff, lines masked)."""
    norm, masked = normaliser(plains, every_line)
    seen = [norm(p) for p in plains]
    for o in chkpts:
        got = norm(o)
        if got not in seen:
            return first_diff(seen[0], got), masked
    return None, masked


def bench_one(d, rel, rounds):
    src = os.path.join(d, rel)
    plain_t, ck_t, plain_o, ck_o, ratios = [], [], [], [], []
    for r in range(rounds):
        # the order alternates: drift in the machine's load cancels
        order = (False, True) if r % 2 == 0 else (True, False)
        res = {}
        for chk in order:
            res[chk] = run(src, chk)
        for chk, (dt, out, rc) in res.items():
            (ck_t if chk else plain_t).append(dt)
            (ck_o if chk else plain_o).append((out, rc))
        ratios.append(res[True][0] / res[False][0])
    rcs = {rc for _, rc in plain_o + ck_o}
    plains = [o for o, _ in plain_o]
    chkpts = [o for o, _ in ck_o]
    every = rel in TIMING_DEPENDENT
    diff, masked = compare(plains, chkpts, every)
    extra = 0
    # An example whose results depend on time (one picks the model that
    # predicts fastest) can print under chkpt what plain python prints
    # only now and then: more plain runs, until one prints it too.
    while diff is not None and extra < EXTRA_PLAIN and len(rcs) == 1:
        _, out, rc = run(src, False)
        extra += 1
        plains.append(out)
        rcs.add(rc)
        diff, masked = compare(plains, chkpts, every)
    if len(rcs) != 1:
        diff = f"exit statuses {sorted(rcs)}"
    return {"rel": rel, "plain": plain_t, "chkpt": ck_t, "ratios": ratios,
            "same": diff is None, "diff": diff,
            "masked": "every" if every else masked, "extra": extra}


def first_diff(want, got):
    for i, (x, y) in enumerate(zip(want, got)):
        if x != y:
            return f"line {i + 1}: plain {x!r} / chkpt {y!r}"
    return f"plain {len(want)} lines / chkpt {len(got)} lines"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--only", help="examples whose path contains this")
    ap.add_argument("--first", type=int, help="the first N examples only")
    ap.add_argument("--select", action="store_true",
                    help="apply the selection rule again and print the list")
    args = ap.parse_args()
    d = examples_dir()
    if args.select:
        select(d)
        return 0
    todo = [e for e in EXAMPLES if not args.only or args.only in e]
    todo = todo[:args.first] if args.first else todo
    missing = [e for e in todo if not os.path.isfile(os.path.join(d, e))]
    if missing:
        sys.exit(f"bench_sklearn: {len(missing)} example(s) missing under {d} "
                 f"(e.g. {missing[0]}): another python-sklearn-doc version? "
                 "`--select` picks them again")
    import sklearn
    print(f"python {sys.version.split()[0]}, scikit-learn {sklearn.__version__}, "
          f"{len(todo)} examples of {d}, {args.rounds} rounds interleaved; "
          "chkpt: -f 100 -z 0")
    print(f"{'example':55s} {'plain s':>8s} {'chkpt s':>8s} {'ratio':>6s} "
          f"{'[min .. max]':>15s}  output")
    results, bad = [], []
    for rel in todo:
        r = bench_one(d, rel, args.rounds)
        results.append(r)
        m = statistics.median(r["ratios"])
        out = ("identical" if r["same"] else "DIFFERENT")
        if r["same"] and r["masked"] == "every":
            out += " (numbers masked: " + TIMING_DEPENDENT[rel] + ")"
        elif r["same"] and r["masked"]:
            out += f" ({r['masked']} timing line(s) masked)"
        if r["extra"]:
            out += f" ({r['extra']} more plain run(s))"
        print(f"{rel:55s} {statistics.median(r['plain']):8.2f} "
              f"{statistics.median(r['chkpt']):8.2f} {m:6.3f} "
              f"[{min(r['ratios']):.3f} .. {max(r['ratios']):.3f}]  {out}",
              flush=True)
        if not r["same"]:
            bad.append(rel)
    meds = [statistics.median(r["ratios"]) for r in results]
    med, worst = statistics.median(meds), max(meds)
    wrel = results[meds.index(worst)]["rel"]
    print(f"median over examples: {med:.3f}x (target <= {TARGET_MEDIAN}) "
          f"{'met' if med <= TARGET_MEDIAN else 'MISSED'}")
    print(f"worst: {worst:.3f}x, {wrel} (target <= {TARGET_WORST}) "
          f"{'met' if worst <= TARGET_WORST else 'MISSED'}")
    print(f"output identical: {len(results) - len(bad)} of {len(results)}")
    for r in results:
        if not r["same"]:
            print(f"  {r['rel']}: {r['diff']}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
