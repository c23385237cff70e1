"""A continuous-batching server simulated from a known :math:`E(i, o, B)` (:func:`simulate`), the server of a
measured dataset to simulate (:func:`simulated_server`), and a trace's first requests as a stream
(:func:`trace_stream`): the replay page's default stream, and the test that attribution recovers known
energies.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.optimize import nnls

from ..dataset import from_frame, geometry, measured_cells
from ..errors import DataError
from ..fit import fit_dataset
from ..hardware import calibrate
from ..hardware import simulate as simulate_windows
from ..iotools import read_trace, resolve
from ..model import BATCHED
from .folder import Replay
from .scheduling import StepTime

__all__ = ["simulate", "trace_stream", "SIM_BATCHES", "simulated_server"]


def simulate(arrival_s, input_len, output_len, params: dict, idle_power_w: float, step: StepTime,
             prefill_s_per_token: float = 0.0, window_s: float = 1.0, max_batch: int | None = None,
             noise_pct: float = 0.0, seed: int = 0, lead_s: float = 1.0) -> tuple[Replay, pd.Series]:
    """Replay a trace on a simulated continuous-batching server whose energy is a known :math:`E(i, o, B)`.

    Every step admits the requests that have arrived (up to ``max_batch`` active), prefills them
    (their first token ends the step) and emits one token per active request. Its energy is each
    request's own terms at that token plus θw, plus θ0 if it admits; its duration
    ``step(B) + prefill_s_per_token · Σ i`` of the admitted. The board draws ``idle_power_w`` when no
    request is active. Meter windows of ``window_s`` cover the stream from ``t = 0``, each with
    multiplicative Gaussian noise of ``noise_pct`` %.

    Returns the replay (as the runner would write it, with ``meta["simulated"] = True``) and the
    true energy of each request [J] by ``request_id``: its own terms plus an equal share of the
    shared energy of each step it was in.
    """
    p = {k: float(params.get(k, 0.0)) for k in BATCHED.names}
    arr = np.asarray(arrival_s, dtype=float) + lead_s
    i = np.asarray(input_len, dtype=np.int64)
    o = np.asarray(output_len, dtype=np.int64)
    if len(arr) == 0 or (o < 1).any() or (i < 0).any():
        raise DataError("simulate needs at least one request, output lengths ≥ 1 and input lengths ≥ 0")
    n = len(arr)
    order = np.argsort(arr, kind="stable")
    cap = max_batch or n
    done = np.zeros(n, dtype=np.int64)
    first = np.full(n, np.nan)
    last = np.full(n, np.nan)
    truth = np.zeros(n)
    t, nxt = 0.0, 0
    active: list[int] = []
    segments = []  # (start, end, energy)
    while nxt < n or active:
        if not active and arr[order[nxt]] > t:
            t = float(arr[order[nxt]])
        admitted = []
        while nxt < n and arr[order[nxt]] <= t + 1e-12 and len(active) < cap:
            admitted.append(int(order[nxt]))
            nxt += 1
        active.extend(admitted)
        idx = np.array(active)
        k = done[idx]
        own = p["theta2"] * i[idx] + p["theta4"] * (2 * k + 1) + p["theta5p"]
        own = own + np.where(k == 0, p["theta1"] * i[idx] ** 2 + p["theta3"] * i[idx], 0.0)
        shared = p["thetaw"] + (p["theta0"] if admitted else 0.0)
        truth[idx] += own + shared / len(idx)
        dt = step(len(idx)) + prefill_s_per_token * float(i[admitted].sum() if admitted else 0)
        segments.append((t, t + dt, float(own.sum() + shared)))
        t += dt
        done[idx] += 1
        first[idx[k == 0]] = t
        fin = idx[done[idx] >= o[idx]]
        last[fin] = t
        active = [r for r in active if done[r] < o[r]]
    end = math.ceil((t + lead_s) / window_s) * window_s
    edges = np.arange(0.0, end + window_s / 2, window_s)
    seg = np.array(segments)
    energy = np.zeros(len(edges) - 1)
    busy_s = np.zeros(len(edges) - 1)
    for a, b, e in seg:  # spread each step's energy over its duration
        lo = np.clip(edges[:-1], a, b)
        hi = np.clip(edges[1:], a, b)
        energy += e * (hi - lo) / (b - a)
        busy_s += hi - lo
    energy += idle_power_w * (window_s - busy_s)
    rng = np.random.default_rng(seed)
    if noise_pct:
        energy = energy * (1.0 + rng.normal(0.0, noise_pct / 100.0, size=energy.shape))
    requests = pd.DataFrame({"request_id": np.arange(n), "arrival_s": arr, "sent_s": arr, "first_token_s": first,
                             "last_token_s": last, "input_len": i, "output_len": o, "prompt_tokens": i,
                             "completion_tokens": o, "ok": True, "error": None})
    windows = pd.DataFrame({"start_s": edges[:-1], "end_s": edges[1:], "energy_j": energy, "method": "simulated"})
    meta = {"simulated": True, "trace": "simulated", "n_requests": n, "idle_power_w": float(idle_power_w),
            "meter": "simulated", "gpus": [], "max_batch": cap, "step_s": [step.base_s, step.per_request_s],
            "prefill_s_per_token": prefill_s_per_token, "noise_pct": noise_pct, "params": p}
    return Replay(requests, windows, meta), pd.Series(truth, index=requests["request_id"], name="true_energy_j")


def trace_stream(path: str | Path, n_requests: int, time_scale: float = 1.0, skip: int = 0) -> pd.DataFrame:
    """The first ``n_requests`` (after ``skip``) of a trace as a stream: ``arrival_s`` [s] from the first
    (the trace's ``TIMESTAMP`` divided by ``time_scale``; one per second when it has none),
    ``input_len`` and ``output_len`` [tokens] (outputs of 0 become 1: a served request emits a token)."""
    if n_requests < 1 or not (time_scale > 0 and math.isfinite(time_scale)):
        raise DataError(f"n_requests {n_requests} must be ≥ 1 and time_scale {time_scale} positive")
    lengths, _ = read_trace(path)
    rows = lengths.iloc[skip: skip + n_requests].reset_index(drop=True)
    if len(rows) == 0:
        raise DataError(f"{path}: no request after skipping {skip}; lower replay skip")
    stamps = pd.read_csv(resolve(path), usecols=lambda c: c == "TIMESTAMP").iloc[skip: skip + n_requests]
    if "TIMESTAMP" in stamps:
        t = pd.to_datetime(stamps["TIMESTAMP"], errors="coerce")
        if t.isna().any():
            raise DataError(f"{path}: TIMESTAMP row {int(np.flatnonzero(t.isna())[0]) + skip + 2} is not a time")
        arrival = (t - t.iloc[0]).dt.total_seconds().to_numpy()
    else:
        arrival = np.arange(len(rows), dtype=float)
    return pd.DataFrame({"arrival_s": arrival / time_scale, "input_len": rows["input_len"].to_numpy(),
                         "output_len": np.maximum(rows["output_len"].to_numpy(), 1)})


SIM_BATCHES = (1, 4, 16, 64)
"""Batch sizes of the isolated-batch windows simulated to fit E(i, o, B) when no measured fit exists [requests]."""


def simulated_server(cal, noise_pct: float = 3.0, seed: int = 0) -> tuple:
    """A simulated server of the GPU and engine of the measured dataset ``cal``: its E(i, o, B) and timing.

    The hardware model is calibrated on ``cal`` (:func:`energykit.hardware.calibrate`), isolated-batch
    windows are simulated from the per-step physics at :data:`SIM_BATCHES` with ``noise_pct`` % noise
    (as the batching page does) and :data:`~energykit.model.BATCHED` is fitted on them. The step time
    is the shortest measured time per output token; the prefill time per prompt token the slope of
    the windows' durations in ``B·i`` (non-negative least squares with ``o`` and a constant); idle
    power the one stored with ``cal``.

    Returns ``(fit, step, prefill_s_per_token, idle_power_w, note)``.
    """
    hw = calibrate(cal)
    name = hw.calibrated_on[0]
    windows = simulate_windows(geometry(cal, name), hw.coef, SIM_BATCHES, (64, 256, 1024, 4096), (16, 64, 256, 1024),
                               noise_pct=noise_pct, seed=seed, name=f"{name} (SIMULATED)")
    fit = fit_dataset(from_frame(windows), loss="l1", cv_folds=5).batched[f"{name} (SIMULATED)"]
    cells = measured_cells(cal, name)
    per_token = (cells["duration_s"] / cells["output_len"]).to_numpy(dtype=float)
    step = StepTime(float(np.nanmin(per_token)), 0.0)
    # duration of a window ≈ prefill · B·i + step · o + c: the prefill time per prompt token from the cells
    d = cells["duration_s"].to_numpy(dtype=float)
    X = np.column_stack([cells["batch_size"].to_numpy(dtype=float) * cells["input_len"].to_numpy(dtype=float),
                         cells["output_len"].to_numpy(dtype=float), np.ones(len(d))])
    ok = np.isfinite(d)
    prefill = float(nnls(X[ok], d[ok])[0][0]) if ok.sum() >= 3 else 0.0
    idle = float(cal.attrs.get("idle_power_w", 0.0) or 0.0)
    note = (f"E(i, o, B) fitted on isolated-batch windows simulated (±{noise_pct:g} % noise) at B ∈ "
            f"{{{', '.join(map(str, SIM_BATCHES))}}} from the hardware model calibrated on {name} ({hw.gpu}, {hw.engine}); "
            f"step {step.base_s * 1e3:.1f} ms, prefill {prefill * 1e6:.2f} µs per prompt token, idle {idle:.0f} W")
    return fit, step, prefill, idle, note
