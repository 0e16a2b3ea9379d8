"""A small data pipeline of the kind chkpt is for: simulate sensor readings,
clean them with pandas, fit a model with numpy, report. Run it under chkpt:

    python -m chkpt -f 500 examples/pipeline.py --days 60

and every half second of work leaves a snapshot of its big variables; the
stages also ask for named snapshots through the API.
"""
import argparse
import time
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

try:
    from chkpt import Checkpoint
    ck = Checkpoint.get_global_singleton()
except (ImportError, AssertionError):
    ck = None          # run without chkpt: everything still works


@dataclass
class Report:
    """What the pipeline found; tracked, so it is always in snapshots."""
    rows: int = 0
    stations: list = field(default_factory=list)
    coefficients: list = field(default_factory=list)


def simulate(days, stations, rng):
    minutes = days * 24 * 60
    t = np.arange(minutes, dtype=np.float64)
    frames = []
    for s in range(stations):
        base = 15 + 10 * np.sin(2 * np.pi * t / (24 * 60) + s)
        noise = rng.normal(0, 1.5, size=minutes)
        spikes = rng.random(minutes) < 0.001
        temp = base + noise + spikes * rng.normal(0, 40, size=minutes)
        frames.append(pd.DataFrame({
            "station": f"S{s:02d}",
            "minute": t.astype(np.int64),
            "temperature": temp,
            "humidity": np.clip(60 + rng.normal(0, 10, size=minutes), 0, 100),
        }))
    return pd.concat(frames, ignore_index=True)


def clean(raw):
    df = raw.copy()
    med = df.groupby("station")["temperature"].transform("median")
    spread = (df["temperature"] - med).abs()
    df = df[spread < 25].copy()
    df["hour"] = df["minute"] // 60
    return df


def fit(hourly):
    x = hourly["hour"].to_numpy(dtype=np.float64)
    X = np.column_stack([np.ones_like(x), np.sin(2 * np.pi * x / 24),
                         np.cos(2 * np.pi * x / 24)])
    y = hourly["temperature"].to_numpy()
    coef, *_ = np.linalg.lstsq(X, y, rcond=None)
    return coef


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--stations", type=int, default=8)
    args = parser.parse_args()
    rng = np.random.default_rng(2026)
    report = Report()
    if ck is not None:
        ck.track(report)

    started = time.perf_counter()
    raw = simulate(args.days, args.stations, rng)
    print(f"simulated {len(raw):,} readings ({raw.memory_usage().sum() / 2**20:.0f} MiB)")
    if ck is not None:
        ck.snapshot("simulated")

    cleaned = clean(raw)
    report.rows = len(cleaned)
    print(f"kept {len(cleaned):,} readings after removing spikes")

    hourly = (cleaned.groupby(["station", "hour"], as_index=False)
              [["temperature", "humidity"]].mean())
    report.stations = sorted(hourly["station"].unique())
    coef = fit(hourly)
    report.coefficients = [round(float(c), 3) for c in coef]
    if ck is not None:
        ck.snapshot("fitted")
    print(f"daily cycle: mean {coef[0]:.2f} C, amplitude "
          f"{np.hypot(coef[1], coef[2]):.2f} C")
    print(f"done in {time.perf_counter() - started:.1f} s")


if __name__ == "__main__":
    main()
