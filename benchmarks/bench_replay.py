"""Benchmark: the replay analysis (energykit.replay) on a simulated stream of N requests.

Run: .venv/bin/python benchmarks/bench_replay.py [--requests 2000] [--no-shapley]
Prints one line per step (seconds) and the largest error of the attribution against the simulator's
known per-request energies; docs/replay.md quotes it.
"""

import argparse
import platform
import time

import numpy as np

from energykit import replay
from energykit.fit import ModelFit, fit_cells
from energykit.model import BATCHED

THETA = dict(theta1=2e-6, theta2=1e-5, theta3=0.01, theta4=5e-6, theta5p=0.05, thetaw=0.6, theta0=3.0)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--requests", type=int, default=2000)
    ap.add_argument("--rate-rps", type=float, default=2.5)
    ap.add_argument("--no-shapley", action="store_true")
    args = ap.parse_args()
    i, o, b = (a.ravel() for a in np.meshgrid([64, 256, 1024, 2048], [16, 64, 256, 512], [1, 4, 16, 64]))
    E = BATCHED.energy(i, o, b, **THETA)
    fit = ModelFit("sim", "batched", fit_cells(E, i, o, kind="batched", batch_size=b),
                   {"input_len": i, "output_len": o, "batch_size": b}, E, np.full(len(E), np.nan))
    rng = np.random.default_rng(0)
    n = args.requests
    arr = np.sort(rng.uniform(0, n / args.rate_rps, n))
    t0 = time.perf_counter()
    rep, truth = replay.simulate(arr, rng.integers(32, 2048, n), rng.integers(8, 300, n), THETA, 80.0,
                                 replay.StepTime(0.02, 0.0005), 2e-5, window_s=1.0, max_batch=64)
    print(f"{platform.node()}: simulate {n} requests, {len(rep.windows)} windows: {time.perf_counter() - t0:.1f} s")
    t0 = time.perf_counter()
    _, whole = replay.predict(rep, fit, window_s=10)
    print(f"predict: {time.perf_counter() - t0:.1f} s (error {whole['error_pct']:+.2f} %)")
    t0 = time.perf_counter()
    table, totals = replay.attribute(rep, fit, with_shapley=not args.no_shapley)
    err = np.max(np.abs(table.set_index("request_id")["energy_j"] / truth - 1)) * 100
    print(f"attribute{'' if args.no_shapley else ' + Shapley'}: {time.perf_counter() - t0:.1f} s; "
          f"{totals['busy_periods']} busy periods; largest error vs the simulator's truth {err:.2f} %"
          + ("" if args.no_shapley else f"; Shapley {', '.join(totals['shapley_methods'])}"))


if __name__ == "__main__":
    main()
