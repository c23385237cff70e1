"""Replay a request trace against an OpenAI-compatible server, metering the whole replay (issue 29, part 1).

Each request of the trace is sent at its arrival time (the trace's times × ``time_scale``, or evenly at
``rate_rps``) through the ``serve`` engine — fresh random token ids, exact lengths checked, streamed —
while a meter thread measures back-to-back windows of ``window_s`` from the replay's start (t = 0)
until its last request ended. One folder holds the result (the contract the analysis in
``energykit.replay`` reads):

- ``requests.jsonl``: one object per request: ``request_id``, ``arrival_s`` (scheduled), ``sent_s``,
  ``first_token_s``, ``last_token_s``, ``input_len``, ``output_len`` (requested), ``prompt_tokens``,
  ``completion_tokens`` (the server's usage), ``ok``, ``error`` (null or the one-line reason);
- ``energy.jsonl``: one object per meter window: ``start_s``, ``end_s``, ``energy_j``, ``method``;
- ``replay.json``: ``trace``, ``time_scale`` or ``rate_rps``, ``n_requests``, ``idle_power_w``, ``meter``,
  ``gpus``, ``server`` (the server's fingerprint), ``started_at``, ``energykit_version``, and more.

All times are seconds since the replay's start on one monotonic clock (``time.perf_counter``), the same
for requests and meter windows. Both JSONL files are appended and fsynced as requests end and windows
close, so a crash keeps what was measured; a replay is not resumed (its timing cannot be), so a rerun
goes to a new folder.
"""

from __future__ import annotations

import asyncio
import math
import threading
import time
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from . import __version__
from .engines.serve import ServeEngine
from .errors import ParamsError
from .iotools import read_arrival_trace
from .meters import make_meter
from .params import ReplayParams
from .state import RawLog, atomic_write_json

__all__ = ["REQUESTS", "ENERGY", "REPLAY", "schedule", "run_replay"]

REQUESTS = "requests.jsonl"
ENERGY = "energy.jsonl"
REPLAY = "replay.json"


def schedule(arrival_s, time_scale: float | None = None, rate_rps: float | None = None) -> np.ndarray:
    """Send times [s since start] of requests whose trace arrivals are ``arrival_s`` [s].

    >>> schedule([0.0, 1.0, 4.0], time_scale=0.5).tolist()
    [0.0, 0.5, 2.0]
    >>> schedule([0.0, 1.0, 4.0], rate_rps=2.0).tolist()
    [0.0, 0.5, 1.0]
    """
    t = np.asarray(arrival_s, dtype=float)
    if rate_rps is not None:
        return np.arange(len(t)) / float(rate_rps)
    return (t - (t[0] if len(t) else 0.0)) * (1.0 if time_scale is None else float(time_scale))


def _finite(v):
    return None if isinstance(v, float) and not math.isfinite(v) else v


class _MeterThread(threading.Thread):
    """Back-to-back meter windows of ``window_s`` from ``t0`` until :meth:`finish`, each logged as it closes."""

    def __init__(self, meter, window_s: float, log: RawLog):
        super().__init__(daemon=True)
        self.meter, self.window_s, self.log = meter, window_s, log
        self.started = threading.Event()
        self._done = threading.Event()
        self.t0 = math.nan
        self.windows: list[dict] = []
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self.meter.begin_window()
            self.t0 = time.perf_counter()
            start = 0.0
            self.started.set()
            while True:
                stop = self._done.wait(timeout=max(0.0, start + self.window_s - (time.perf_counter() - self.t0)))
                reading = self.meter.end_window()
                end = time.perf_counter() - self.t0
                if not stop:  # the next window opens at once, before logging: windows back to back
                    self.meter.begin_window()
                    next_start = time.perf_counter() - self.t0
                rec = {"start_s": start, "end_s": end, "energy_j": _finite(float(reading.energy_j)),
                       "method": reading.method, "valid": bool(reading.valid)}
                if reading.reason:
                    rec["reason"] = reading.reason
                self.windows.append(rec)
                self.log.append(rec)
                if stop:
                    return
                start = next_start
        except BaseException as e:  # reported by run_replay; the requests' log is kept
            self.error = e
            self.started.set()

    def finish(self) -> None:
        self._done.set()
        self.join()


def run_replay(params: ReplayParams, progress: bool = True) -> Path:
    """Replay ``params.trace`` against the server; returns the output folder (see the module's contract)."""
    trace, meta = read_arrival_trace(params.trace)
    trace = trace.iloc[: params.max_requests].reset_index(drop=True)
    send_at = schedule(trace["arrival_s"].to_numpy(), params.time_scale, params.rate_rps)
    name, geometry, _ = params.geometry
    out = Path(params.output)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ParamsError(f"output {params.output!r} exists and is not an empty folder; a replay is not resumed "
                          "(its timing cannot be): give a new folder")
    options = params.serve
    engine = ServeEngine(name, geometry, seed=params.seed, **options.model_dump())
    engine.load()  # asks the server: it answers, serves the model, its dialect is known
    server = ServeEngine.fingerprint(options)
    if params.meter == "nvml":
        kw = {"gpus": ServeEngine.gpu_count(options)}
        devices = ServeEngine.metered_gpus(options)
        meter = make_meter("nvml", **({**kw, "device": devices} if devices else kw))
    elif params.meter == "process_cpu":
        meter = make_meter("process_cpu", pid=ServeEngine.metered_pid(options), core_power_w=params.cpu_core_power_w)
    else:
        meter = make_meter("none")
    out.mkdir(parents=True, exist_ok=True)
    info = meter.info()
    header = {"trace": str(params.trace), "trace_source": meta.get("source"), "n_requests": int(len(trace)),
              "window_s": params.window_s, "meter": info.get("meter", params.meter), "meter_info": info,
              "gpus": info.get("gpu_uuids") or ([info["gpu_uuid"]] if "gpu_uuid" in info else []),
              "server": server, "model": name, "energykit_version": __version__,
              "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    if params.rate_rps is not None:
        header["rate_rps"] = params.rate_rps
    else:
        header["time_scale"] = 1.0 if params.time_scale is None else params.time_scale
    try:
        header["idle_power_w"] = _finite(float(meter.idle_power_w(params.idle_s))) if params.idle_s > 0 else None
        prompts = [engine._prompt(int(i)) for i in trace["input_len"]]  # drawn before t = 0, never metered
        atomic_write_json(out / REPLAY, header)
        requests_log, energy_log = RawLog(out / REQUESTS), RawLog(out / ENERGY)
        meter_thread = _MeterThread(meter, params.window_s, energy_log)
        try:
            meter_thread.start()
            meter_thread.started.wait()
            if meter_thread.error is not None:
                raise meter_thread.error
            t0 = meter_thread.t0
            bar = tqdm(total=len(trace), desc="requests", unit="req", disable=not progress)
            records = engine._loop.run_until_complete(
                _replay(engine, trace, send_at, prompts, t0, requests_log, bar))
            bar.close()
            meter_thread.finish()
            if meter_thread.error is not None:
                raise meter_thread.error
        finally:
            if meter_thread.is_alive():  # interrupted: the open window is closed and logged, then the files
                meter_thread.finish()
            requests_log.close()
            energy_log.close()
        ok = sum(r["ok"] for r in records)
        header.update(duration_s=meter_thread.windows[-1]["end_s"], requests_ok=ok,
                      energy_j=_finite(float(sum(w["energy_j"] for w in meter_thread.windows
                                                 if w["energy_j"] is not None))),
                      windows=len(meter_thread.windows))
        atomic_write_json(out / REPLAY, header)
    finally:
        engine.close()
        meter.close()
    return out


async def _replay(engine, trace, send_at, prompts, t0, log, bar) -> list[dict]:
    async def one(k: int) -> dict:
        delay = t0 + send_at[k] - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        i, o = int(trace["input_len"].iat[k]), int(trace["output_len"].iat[k])
        r = await engine.send(prompts[k], i, o)
        rec = {"request_id": k, "arrival_s": float(send_at[k]),
               **{key: _finite(r[key] - t0) for key in ("sent_s", "first_token_s", "last_token_s")},
               "input_len": i, "output_len": o, "prompt_tokens": r["prompt_tokens"],
               "completion_tokens": r["completion_tokens"], "ok": r["error"] is None, "error": r["error"]}
        log.append(rec)
        bar.update(1)
        return rec

    return list(await asyncio.gather(*(one(k) for k in range(len(trace)))))
