"""Benchmark: fit time per bundled model and the wall time of rendering every report.

Run: make bench   (or .venv/bin/python benchmarks/bench_fit.py [--no-report])
Prints one line per measurement; the figures in README.md come from this script.
"""

import argparse
import platform
import statistics
import tempfile
import time
from pathlib import Path

import energykit.fit as ekfit
from energykit import dataset, design, hardware

ROOT = Path(__file__).resolve().parent.parent
FILES = ["data/h200_hf_energykit/measurements.nc", "data/h200_transformers_compiled_b16.csv",
         "data/h200_transformers_eager_b16.csv"]


def long_tail_memory(rows: int = 200_000) -> None:
    """Peak Python memory of loading a sparse (long-tail) file of ``rows`` windows, and of fitting it."""
    import tracemalloc

    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(0)
    i, o = rng.integers(1, 8000, rows), rng.integers(1, 2000, rows)
    e = 3e-6 * i**2 + 2e-4 * i * o + 0.05 * i + 1e-4 * o**2 + 3.5 * o + 20
    df = pd.DataFrame(dict(model="tail", batch_size=16, input_len=i, output_len=o, energy_j=e, duration_s=0.01 * o))
    df["repeat"] = df.groupby(["input_len", "output_len"]).cumcount()
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "tail.csv"
        df.to_csv(path, index=False)
        tracemalloc.start()
        t0 = time.perf_counter()
        ds = dataset.load(path)
        load_s = time.perf_counter() - t0
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    grid = dataset.dense_size(dataset.to_frame(ds))
    print(f"long-tail file, {rows} windows: load {load_s:.2f} s, peak {peak / 1e6:.0f} MB, dataset "
          f"{ds.nbytes / 1e6:.1f} MB ({ds.attrs['layout']}; a grid would hold {grid / 1e6:.0f} M slots per variable)")
    t0 = time.perf_counter()
    ekfit.fit_dataset(ds, cv_folds=5)
    print(f"long-tail file: fit with 5-fold CV {time.perf_counter() - t0:.1f} s")


def cli_start(repeats: int = 5) -> None:
    """Wall time of ``python -m energykit --help`` (the CLI imports nothing heavy to print it)."""
    import subprocess
    import sys

    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-m", "energykit", "--help"], capture_output=True, check=True, cwd=ROOT)
        times.append(time.perf_counter() - t0)
    print(f"energykit --help: median {statistics.median(times) * 1000:.0f} ms over {repeats} (goal < 500 ms)")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--no-report", action="store_true")
    ap.add_argument("--report-only", action="store_true", help="time only the report build")
    args = ap.parse_args()
    if args.report_only:
        return report_build()
    print(f"machine: {platform.processor() or platform.machine()}, python {platform.python_version()}")
    cli_start()
    for f in FILES:
        ds = dataset.load(ROOT / f)
        for m in ds["model"].values:
            times = []
            for _ in range(args.repeats):
                t0 = time.perf_counter()
                ekfit.fit_dataset(ds, models=[str(m)])  # analytical + baseline, each with 5-fold CV
                times.append(time.perf_counter() - t0)
            print(f"fit {f} :: {m}: median {statistics.median(times) * 1000:.0f} ms over {args.repeats} "
                  "(analytical + linear, 5-fold CV)")
    ds = dataset.load(ROOT / FILES[1])
    for k in (6, 8, 12):
        times = []
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            design.evaluate_design(ds, k)  # D-optimal choice + fit on k cells + held-out MAPE
            times.append(time.perf_counter() - t0)
        print(f"design + fit, budget {k} of 20 cells: median {statistics.median(times) * 1000:.0f} ms")
    long_tail_memory()
    cal = dataset.load(ROOT / FILES[0])
    t0 = time.perf_counter()
    hw = hardware.calibrate(cal)
    hw.draws(200)
    print(f"hardware model calibration + 200 bootstrap draws: {(time.perf_counter() - t0) * 1000:.0f} ms")
    if not args.no_report:
        report_build()


def report_build(goal_s: float = 25.0) -> None:
    """Wall time of what ``make report`` runs for the default parameters: one ``energykit report`` process
    (interpreter start, one load and fit, one kernel for every notebook, HTML), into a temporary folder."""
    import os
    import subprocess
    import sys

    with tempfile.TemporaryDirectory() as out:
        t0 = time.perf_counter()
        p = subprocess.run([sys.executable, "-m", "energykit", "report", "--params", "params/report.yaml", "--out", out],
                           capture_output=True, text=True, cwd=ROOT)
        total = time.perf_counter() - t0
    if p.returncode != 0:
        print(f"report build failed: {p.stderr.strip().splitlines()[-1] if p.stderr.strip() else p.returncode}")
        return
    for line in p.stdout.splitlines():
        if line.startswith(("fitted once", "rendered")):
            print(f"report {line}")
    print(f"report build (make report, params/report.yaml): {total:.1f} s on {os.cpu_count()} CPUs "
          f"(goal <= {goal_s:.0f} s on 2 cores{'' if total <= goal_s else '; MISSED'})")

if __name__ == "__main__":
    main()
