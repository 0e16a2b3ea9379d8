"""Pause, disk and load cost of snapshots of big numpy arrays, against
pickle.dump/pickle.load of the same variables, measured in one run.

    python bench/bench_snapshot.py [--mib 512]
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--mib", type=int, default=512)
    args = parser.parse_args()
    env = dict(os.environ, PYTHONPATH=REPO)
    with tempfile.TemporaryDirectory() as out:
        proc = subprocess.run(
            [sys.executable, "-m", "chkpt", "-f", "-1", "-o", out,
             os.path.join(HERE, "snapshot_script.py"), str(args.mib)],
            env=env, check=True, capture_output=True, text=True)
    r = json.loads(proc.stdout.splitlines()[-1])
    print(f"python {sys.version.split()[0]}, {r['mib']} MiB of numpy arrays in globals")
    print(f"  pickle.dump (original's way)   {r['pickle_dump']:7.3f} s")
    print(f"  ck.snapshot() first            {r['snapshot_first']:7.3f} s   "
          f"{r['snapshot_first'] / r['pickle_dump']:6.1%} of pickle.dump")
    print(f"  ck.snapshot() after 8 KiB      {r['snapshot_later']:7.3f} s   "
          f"{r['snapshot_later'] / r['pickle_dump']:6.1%} of pickle.dump")
    print(f"  disk: first snapshot           {r['disk_first'] / 2**20:7.1f} MiB")
    print(f"  disk: 4 later snapshots add    {r['disk_added_by_4_later'] / 2**20:7.1f} MiB")
    print(f"  pickle.load                    {r['pickle_load']:7.3f} s")
    print(f"  chkpt.load                     {r['chkpt_load']:7.3f} s   "
          f"{r['chkpt_load'] / r['pickle_load']:6.1%} of pickle.load")


if __name__ == "__main__":
    main()
