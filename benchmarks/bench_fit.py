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

from energykit import dataset, design, fitting, hardware, report

ROOT = Path(__file__).resolve().parent.parent
FILES = ["data/h200_hf_energykit/measurements.nc", "data/h200_transformers_compiled_b16.csv",
         "data/h200_transformers_eager_b16.csv"]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--no-report", action="store_true")
    args = ap.parse_args()
    print(f"machine: {platform.processor() or platform.machine()}, python {platform.python_version()}")
    for f in FILES:
        ds = dataset.load(ROOT / f)
        for m in ds["model"].values:
            times = []
            for _ in range(args.repeats):
                t0 = time.perf_counter()
                fitting.fit_dataset(ds, models=[str(m)])  # analytical + baseline, each with 5-fold CV
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
    cal = dataset.load(ROOT / FILES[0])
    t0 = time.perf_counter()
    hw = hardware.calibrate(cal)
    hw.draws(200)
    print(f"hardware model calibration + 200 bootstrap draws: {(time.perf_counter() - t0) * 1000:.0f} ms")
    if not args.no_report:
        with tempfile.TemporaryDirectory() as out:
            t0 = time.perf_counter()
            timings = report.build(ROOT / "params" / "report.yaml", out)
            total = time.perf_counter() - t0
        for k, v in timings.items():
            print(f"report {k}: {v:.1f} s")
        print(f"report total (execute + render {len(timings)} notebooks): {total:.1f} s")


if __name__ == "__main__":
    main()
