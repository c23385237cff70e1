"""Crash-safe measurement sweeps: ``python -m energykit measure PARAMS.yaml``.

Parameters are validated before any model is loaded and before anything is written. Every window
is appended to ``OUTPUT/windows.jsonl`` and flushed to disk as soon as it completes, so a crash or
``kill -9`` loses at most the window in flight; running the same command again resumes, skipping
every (cell, repeat) already recorded. A failing cell (out of memory, an engine error) is recorded
with its error and the sweep goes on. At the end the log becomes ``OUTPUT/measurements.nc``.
"""

from __future__ import annotations

import os
import random
import re
import subprocess
import time
import socket
import math
import sys
from collections import Counter
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import pandas as pd
from tqdm.auto import tqdm

from .dataset import from_frame, write_netcdf
from .engines import ENGINES, engine_class
from .errors import DataError, EnergykitError, EngineError, MeterError, ParamsError
from .iotools import read_window_log
from .meters import make_meter
from .params import MeasureParams
from .physics import param_count
from .schema import DIMS, GEOMETRY_KEYS
from .shards import all_windows, shard_folder, shard_of
from .state import RawLog, WriterLock, atomic_write_json, check_output, read_json
from .windows import measure

__all__ = ["ModelTiming", "remaining_estimate_s", "timing_line", "LOG", "DATASET", "LOG_ONLY", "dataset_frame", "merge", "status", "window_key", "git_commit", "plan", "check_engine_installed",
           "FINGERPRINT", "LIBRARIES", "library_versions", "fingerprint", "fingerprint_difference",
           "check_device", "meter_kwargs", "MIN_COUNTER_PERIODS", "check_window", "SweepFailures", "run", "engine_gpus",
           "finalize", "engine_label", "LibraryCounter", "library_difference_line", "check_shard_setups",
           "merged_provenance", "allocation_of", "read_fingerprint", "read_provenance", "read_shard"]


LOG = "windows.jsonl"
DATASET = "measurements.nc"


def window_key(rec: dict) -> tuple:
    """(model, batch_size, input_len, output_len, repeat) of a log record."""
    return tuple(rec[d] for d in DIMS)


def git_commit() -> str:
    """The energykit checkout's commit, or "unknown" outside a git checkout."""
    try:
        p = subprocess.run(["git", "rev-parse", "--verify", "HEAD"], capture_output=True, text=True, timeout=5,
                           cwd=Path(__file__).resolve().parent)
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return p.stdout.strip() if p.returncode == 0 and p.stdout.strip() else "unknown"


def plan(params: MeasureParams, done: set) -> list[tuple]:
    """The (model, batch, i, o, repeat) windows still to measure, shuffled within each model."""
    rng = random.Random(params.seed)
    by_batch = engine_class(params.engine).loads_per_batch_size
    todo = []
    for name, _, _ in params.resolved:
        cells = [(name, b, i, o, r) for b in params.batch_sizes for (i, o) in params.grid for r in range(params.repeats)]
        rng.shuffle(cells)
        if by_batch:  # an engine that loads one executor per batch size: each batch's windows together
            order = list(dict.fromkeys(c[1] for c in cells))
            cells.sort(key=lambda c: order.index(c[1]))
        todo += [c for c in cells if c not in done]
    return todo


def check_engine_installed(engine: str) -> None:
    """Fail in one line, naming the pip extra, when the engine's libraries are not installed."""
    engine_class(engine).check_installed()


FINGERPRINT = "fingerprint.json"
HOST = socket.gethostname()
LIBRARIES = ("torch", "transformers", "tensorrt_llm", "tensorrt-llm", "nvidia-ml-py")
SETUP = ("engine", "dtype", "min_window_s", "meter", "device")
"""Fields of the params that enter every fingerprint; an engine adds its own."""


def library_versions() -> dict:
    """Installed versions of the libraries that shape a measurement (read without importing them)."""
    out = {}
    for name in LIBRARIES:
        try:
            out[name.replace("-", "_")] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return out


def fingerprint(params: MeasureParams, meter_info: dict) -> dict:
    """Everything that changes what a window measures: the setup, and each model's geometry.

    Cells, repeats, batch sizes and new models may be added to a folder; anything here may not change.
    The setup is the core's fields (:data:`SETUP`) and the engine's own (``Engine.fingerprint``).
    """
    setup = {k: getattr(params, k) for k in SETUP}
    if params.meter == "process_cpu":  # the stated power scales every window of the proxy
        setup["cpu_core_power_w"] = params.cpu_core_power_w
    setup.update(engine_class(params.engine).fingerprint(params.engine_options))
    setup["gpu_uuids"] = meter_info.get("gpu_uuids") or ([meter_info["gpu_uuid"]] if "gpu_uuid" in meter_info
                                                         else ["none"])
    setup["libraries"] = library_versions()
    # what the engine allocates once per sweep: its static KV cache holds the longest request, and an
    # engine may size itself by the sweep too (its max_* arguments): a longer cell measures another setup
    engine = engine_class(params.engine)
    setup["max_len"] = params.max_len
    setup.update({k: v for k, v in engine.engine_kwargs(params).items() if k.startswith("max_")})
    models = {name: {"geometry": geom, "checkpoint": ckpt} for name, geom, ckpt in params.resolved}
    return {"setup": setup, "models": models}


def allocation_of(params: dict) -> dict:
    """The allocations (``max_len``, ``max_batch_size``, ``max_input_len``) of a folder's recorded ``params.json``,
    for fingerprints written before they were recorded; ``{}`` when the file does not tell."""
    try:
        cells = params.get("cells") or [(i, o) for i in params["input_lens"] for o in params["output_lens"]]
        return {"max_len": max(int(i) + int(o) for i, o in cells), "max_input_len": max(int(i) for i, _ in cells),
                "max_batch_size": max(int(b) for b in params["batch_sizes"])}
    except (KeyError, TypeError, ValueError):
        return {}


def fingerprint_difference(old: dict, new: dict) -> list[str]:
    """What differs between a folder's fingerprint and this run's, as ``key: old -> new`` strings.

    Every key of this run's setup is compared. A key only the folder has is an option of another
    engine (fingerprints written before engines owned their options recorded every engine's) and
    does not change what this engine measures; a different engine differs in ``engine``.
    """
    diffs = []
    o_setup, n_setup = old.get("setup", {}), new["setup"]
    for k in sorted(n_setup):
        if k.startswith("max_") and k not in o_setup:
            continue  # an allocation the folder did not record (and its params.json could not tell)
        if k == "libraries":
            lo, ln = o_setup.get(k, {}), n_setup.get(k, {})
            diffs += [f"{lib} {lo.get(lib)} -> {ln.get(lib)}" for lib in sorted(set(lo) | set(ln))
                      if lo.get(lib) != ln.get(lib)]
        elif o_setup.get(k) != n_setup.get(k):
            diffs.append(f"{k}: {o_setup.get(k)!r} -> {n_setup.get(k)!r}")
    for m, spec in new["models"].items():
        if m in old.get("models", {}) and old["models"][m] != spec:
            og, ng = old["models"][m].get("geometry", {}), spec.get("geometry", {})
            keys = sorted(k for k in set(og) | set(ng) if og.get(k) != ng.get(k))
            what = ", ".join(f"{k} {og.get(k)!r} -> {ng.get(k)!r}" for k in keys) or "checkpoint"
            diffs.append(f"model {m!r}: {what}")
    return diffs


def check_device(params: MeasureParams) -> None:
    """The engine's checks of this machine, e.g. no GPU metered while it runs on the CPU (before anything is written)."""
    engine_class(params.engine).preflight(params)


MIN_COUNTER_PERIODS = 5
"""A window must span at least this many energy-counter periods (one step is then ≤ 20 % of it)."""


def check_window(params: MeasureParams, meter) -> None:
    period = getattr(meter, "counter_period_s", float("nan"))
    if meter.measures_energy and period == period and params.min_window_s < MIN_COUNTER_PERIODS * period:
        raise ParamsError(
            f"min_window_s {params.min_window_s:g} s is under {MIN_COUNTER_PERIODS} periods of this GPU's energy "
            f"counter ({period * 1e3:.0f} ms): one counter step would be over 20 % of a window; "
            f"use min_window_s: {max(2.0, MIN_COUNTER_PERIODS * period):g} or more")


class SweepFailures(EnergykitError):
    """Windows of the sweep failed; the dataset (``dataset``: its path, or None when no window completed and
    none was written) holds the others and a rerun retries the failed ones."""

    def __init__(self, message: str, dataset: Path | None = None):
        super().__init__(message)
        self.dataset = dataset


def run(params: MeasureParams, params_path: str = "", progress: bool = True,
        shard: tuple[int, int] | None = None) -> Path:
    """Run (or resume) a sweep; returns the path of the NetCDF dataset.

    Order: every check that can fail runs before anything is written — engine installed, device,
    the folder's writer lock, the meter, the counter period against ``min_window_s``, the folder's
    fingerprint. Then windows are measured and logged one by one; failed windows are retried by
    the next run. Raises :class:`SweepFailures` (after writing the dataset of the good windows)
    when windows failed.

    With ``shard=(K, N)`` only shard K of the plan of :func:`energykit.shards.plan_shards` is measured,
    into ``OUTPUT/shard-K-of-N``; each window records its host, GPU, shard and attempt.
    """
    check_engine_installed(params.engine)  # before anything is written or measured
    check_device(params)

    out = Path(params.output)
    my_shard = None
    if shard is not None:
        my_shard = shard_of(params, *shard)
        out = shard_folder(out, *shard)
        os.environ.setdefault("CUDA_DEVICE_ORDER", "PCI_BUS_ID")  # CUDA indices = nvidia-smi/NVML indices
    if out.exists() and not out.is_dir():
        raise ParamsError(f"output {out} is a file; give a folder path")
    foreign = _foreign_entries(out)
    if foreign:
        raise ParamsError(f"output {params.output!r} is an existing folder that energykit did not write (it holds "
                          f"{foreign[0]!r}); the sweep's files would land among them — give a new or empty folder, "
                          f"e.g. {Path(params.output) / 'sweep'}")
    lock = WriterLock(out).acquire() if out.is_dir() else None  # a running writer is refused at once
    current = {"engine": None}

    def sync():
        if current["engine"] is not None:
            current["engine"].synchronize()

    meter = None
    log = None
    try:
        meter = make_meter(params.meter, sync=sync, **meter_kwargs(params))
        check_window(params, meter)
        if hasattr(meter, "check_exclusive"):
            meter.check_exclusive()
        info = meter.info()
        new_print = fingerprint(params, info)
        old_print = read_fingerprint(out)
        if old_print and "max_len" not in old_print.get("setup", {}):  # written before allocations were recorded
            old_print["setup"].update(allocation_of(read_json(out / "params.json")))
        diffs = fingerprint_difference(old_print, new_print) if old_print else []
        if diffs:
            raise ParamsError(f"{out} holds windows measured with another setup ({'; '.join(diffs)}); "
                              "measure into a new output folder, or restore those settings")
        if not old_print and (out / LOG).exists() and read_window_log(out / LOG)[0]:
            raise ParamsError(f"{out} holds windows but no {FINGERPRINT} (measured by an older energykit); "
                              "measure into a new output folder")
        # the run goes ahead: from here on, state is written
        try:
            out.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise EnergykitError(f"cannot create output folder {out} ({e.strerror}); choose a writable path") from None
        if lock is None:
            lock = WriterLock(out).acquire()
        lock.claim()
        merged = {"setup": new_print["setup"], "models": {**old_print.get("models", {}), **new_print["models"]}}
        atomic_write_json(out / FINGERPRINT, merged)
        atomic_write_json(out / "params.json", params.model_dump())
        log_path = out / LOG
        records = read_window_log(log_path)[0]
        done = {window_key(r) for r in records if r.get("status") == "ok"}  # failed windows are measured again
        todo = plan(params, done)
        attempts = {}
        for r in records:
            attempts[window_key(r)] = attempts.get(window_key(r), 0) + 1
        if my_shard is not None:
            wanted = set(my_shard.windows)
            todo = [w for w in todo if w in wanted]
            atomic_write_json(out / "shard.json", {"index": my_shard.index, "count": my_shard.count,
                                                   "cost": my_shard.cost,
                                                   "windows": [list(w) for w in my_shard.windows]})
        state_path = out / "provenance.json"
        provenance = read_provenance(out)
        if not provenance:
            provenance = {"meter": info, "energykit_commit": git_commit(), "params_file": str(params_path),
                          "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
            if params.idle_s > 0 and meter.measures_energy:
                provenance["idle_power_w"] = meter.idle_power_w(params.idle_s)
            atomic_write_json(state_path, provenance)

        log = RawLog(log_path)
        failed = []
        timing = []
        bar = tqdm(total=len(todo), desc="windows", disable=not progress, unit="win")
        try:
            for model_name, geom, ckpt in params.resolved:
                mine = [c for c in todo if c[0] == model_name]
                if not mine:
                    continue
                t_model = time.perf_counter()
                engine = engine_class(params.engine).from_params(params, model_name, geom, ckpt)
                try:
                    engine.load()
                except EnergykitError:
                    raise
                except Exception as e:  # e.g. CUDA out of memory while building the model: one line
                    first = str(e).strip().splitlines()[0] if str(e).strip() else ""
                    raise EngineError(f"model {model_name!r} failed to load ({type(e).__name__}: {first[:200]}); "
                                      f"the windows measured so far are kept in {out}; free the GPU or drop the "
                                      "model from models:, then rerun to resume") from None
                current["engine"] = engine
                provenance.setdefault("engines", {})[model_name] = {"engine": params.engine, **engine.versions()}
                atomic_write_json(state_path, provenance)
                mid_i, mid_o = params.grid[len(params.grid) // 2]
                warm = engine.request(params.batch_sizes[0], mid_i, mid_o)
                warm.prepare(params.warmup)
                for _ in range(params.warmup):
                    warm()
                t_ready = time.perf_counter()
                pilots = {}  # (batch, i, o) -> seconds per call: pilot calls run once per cell, not per repeat
                for key in mine:
                    rec = _measure_window(params, key, engine, meter, measure, provenance, pilots)
                    rec.update(host=HOST, gpu_uuid=provenance["meter"].get("gpu_uuid", "cpu"),
                               cuda_visible_devices=os.environ.get("CUDA_VISIBLE_DEVICES", ""),
                               slurm_job=os.environ.get("SLURM_ARRAY_JOB_ID", os.environ.get("SLURM_JOB_ID", "")),
                               slurm_task=os.environ.get("SLURM_ARRAY_TASK_ID", ""),
                               shard=f"{my_shard.index}/{my_shard.count}" if my_shard else "",
                               attempt=attempts.get(key, 0) + 1)
                    log.append(rec)
                    if rec["status"] != "ok":
                        failed.append(rec)
                    bar.update(1)
                    if params.cooldown_s:
                        time.sleep(params.cooldown_s)
                engine.close()
                current["engine"] = None
                timing.append(ModelTiming(model_name, param_count(geom), len(mine), t_ready - t_model,
                                          time.perf_counter() - t_ready))
                left = [(m, g) for m, g, _ in params.resolved if any(c[0] == m for c in todo)]
                left = [(m, g, sum(c[0] == m for c in todo)) for m, g in left[left.index((model_name, geom)) + 1:]]
                tqdm.write(timing_line(timing[0], timing[-1], left), file=sys.stderr)
        finally:
            bar.close()
        line = library_difference_line(read_window_log(log_path)[0])
        if line:
            tqdm.write(line, file=sys.stderr)
            provenance["library_energy"] = line
            atomic_write_json(state_path, provenance)
    finally:
        if log is not None:
            log.close()
        if meter is not None:
            meter.close()
        if lock is not None:
            lock.release()
    try:
        path = finalize(out, params)
    except EnergykitError as e:
        if failed:  # no window completed: no dataset was written, and the message says so
            raise SweepFailures(f"{_failure_summary(failed, len(todo), out, written=False)} ({e})", None) from None
        raise
    if failed:
        raise SweepFailures(_failure_summary(failed, len(todo), out), path)
    return path


class LibraryCounter:
    """A meter that also reads the engine library's own energy counter over each of its windows.

    Wraps the kit's meter: each meter window opens, then a new library counter (``counter()``, from
    ``engine.energy_counter()``: e.g. TensorRT-LLM's ``EnergyMonitor``) starts; it stops before the
    meter's window ends.
    ``library_energy_j`` sums the library's energy over the valid windows [J] (windows the protocol
    drops as too short are invalid, and left out here too).
    """

    def __init__(self, meter, counter):
        self._meter, self._counter = meter, counter
        self._open = None
        self.library_energy_j = 0.0

    def __getattr__(self, name):
        return getattr(self._meter, name)

    def begin_window(self) -> None:
        self._meter.begin_window()
        self._open = self._counter()
        self._open.__enter__()

    def end_window(self):
        counter, self._open = self._open, None
        counter.__exit__(None, None, None)
        reading = self._meter.end_window()
        if reading.valid and counter.total_energy is not None:
            self.library_energy_j += float(counter.total_energy)
        return reading

    def cancel_window(self) -> None:
        if self._open is not None:
            self._open.__exit__(None, None, None)
            self._open = None
        self._meter.cancel_window()


def library_difference_line(records: list[dict]) -> str:
    """One line: the engine library's energy counter against the kit's meter over a sweep's windows."""
    diffs = sorted(r["library_energy_diff"] for r in records
                   if r.get("status") == "ok" and r.get("library_energy_diff") == r.get("library_energy_diff")
                   and "library_energy_diff" in r)
    if not diffs:
        return ""
    mid = diffs[len(diffs) // 2] if len(diffs) % 2 else 0.5 * (diffs[len(diffs) // 2 - 1] + diffs[len(diffs) // 2])
    return (f"engine's own energy counter vs the kit's meter over {len(diffs)} windows: median {mid:+.2%}, "
            f"range {diffs[0]:+.2%} to {diffs[-1]:+.2%} (library_energy_diff per window)")


def _measure_window(params, key, engine, meter, measure, provenance, pilots=None) -> dict:
    """Measure one (cell, repeat) and return its log record; engine failures are recorded, not raised.

    ``pilots`` maps (batch, i, o) to the seconds per call that the cell's first repeat measured, so
    that its other repeats skip the pilot calls.
    """
    _, b, i, o, r = key
    counter = engine.energy_counter()
    if meter.measures_energy and counter is not None:
        meter = LibraryCounter(meter, counter)
    rec = dict(zip(DIMS, key))
    rec.update(engine=f"{params.engine}", dtype=params.dtype, gpu=provenance["meter"].get("gpu_name", "cpu"),
               time=time.time())
    pilots = {} if pilots is None else pilots
    try:
        if (b, i, o) in pilots:
            w = measure(meter, engine.request(b, i, o), params.min_window_s, pilot_s=pilots[(b, i, o)])
        else:
            w = measure(meter, engine.request(b, i, o), params.min_window_s)
            pilots[(b, i, o)] = w.pilot_s
        rec.update(
            status="ok" if w.reading.valid else "invalid",
            energy_j=w.energy_j, duration_s=w.duration_s, iterations=w.iterations,
            window_energy_j=w.reading.energy_j, window_duration_s=w.reading.duration_s,
            energy_method=w.reading.method, reason=w.reading.reason,
            output_tokens=w.last_result.output_tokens, ttft_s=w.last_result.ttft_s,
            segments=w.segments, padding_s=w.reading.padding_s, step_s=w.step_s, pilot_step_s=w.pilot_step_s,
        )
        if w.reading.padding_idle:  # which idle power the end padding subtracted (warm: right after the work)
            rec.update(padding_idle=w.reading.padding_idle, padding_idle_w=w.reading.padding_idle_w)
        rec.update({k: v for k, v in w.last_result.extra.items() if isinstance(v, (int, float, str, bool))})
        library_j = getattr(meter, "library_energy_j", None)
        if library_j is not None and w.reading.valid:  # the engine library's own counter, same window
            rec["library_energy_j"] = library_j / w.iterations
            rec["library_energy_diff"] = (library_j - w.reading.energy_j) / w.reading.energy_j \
                if w.reading.energy_j else float("nan")
        if len(w.reading.per_gpu_j) > 1:
            rec["gpu_energy_j"] = {u: e / w.iterations for u, e in w.reading.per_gpu_j.items()}
        if params.timeline:
            rec["timeline"] = w.reading.timeline
    except MeterError:
        raise  # the meter is gone (NVML lost): stop, keeping every finished window
    except EnergykitError as e:
        rec.update(status="error", error=str(e))
    except Exception as e:  # engine failure (OOM, kernel error): record it and go on
        rec.update(status="error", error=f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}")
        engine.recover()
    return rec


@dataclass
class ModelTiming:
    """Seconds one model of a sweep took: loading, compiling and warming up, then its windows."""

    model: str
    params: int
    windows: int
    ready_s: float
    measure_s: float


def remaining_estimate_s(first: ModelTiming, left: list[tuple[str, dict, int]]) -> float:
    """Seconds the models ``left`` [(name, geometry, windows)] should take, from the first model's.

    Decode at a fixed batch reads the weights every step, so a window's time is scaled by the
    parameter count; loading and compiling take the first model's time again.

    >>> from energykit.presets import resolve
    >>> _, geom, _ = resolve("llama3.2-1b")
    >>> first = ModelTiming("a", param_count(geom) // 2, 10, ready_s=30.0, measure_s=60.0)
    >>> round(remaining_estimate_s(first, [("b", geom, 5)]))  # 30 s + 60 s x 2 (params) x 0.5 (windows)
    90
    """
    total = 0.0
    for _, geom, windows in left:
        scale = param_count(geom) / max(first.params, 1) * windows / max(first.windows, 1)
        total += first.ready_s + first.measure_s * scale
    return total


def timing_line(first: ModelTiming, last: ModelTiming, left: list[tuple[str, dict, int]]) -> str:
    """One line after each model: its windows and seconds, and the estimate for the models left."""
    line = (f"{last.model}: {last.windows} windows in {last.measure_s:.0f} s "
            f"(+{last.ready_s:.0f} s to load, compile and warm up)")
    if left:
        line += (f"; estimate for the {len(left)} model(s) left, from {first.model}: "
                 f"~{remaining_estimate_s(first, left):.0f} s")
    return line


def _failure_summary(failed: list[dict], planned: int, out: Path, written: bool = True) -> str:
    why = Counter(r.get("error") or r.get("reason") or r["status"] for r in failed)
    top = "; ".join(f"{n}x {w[:80]}" for w, n in why.most_common(3))
    held = (f"the dataset in {out} holds the others" if written
            else f"no window completed, so no dataset was written in {out}")
    return f"{len(failed)} of {planned} windows failed ({top}); {held}, and running the same command again retries the failed ones"


def meter_kwargs(params: MeasureParams) -> dict:
    """The meter's arguments: the GPUs the engine runs on (NVML), or the process it runs in (``process_cpu``)."""
    engine = engine_class(params.engine)
    if params.meter == "nvml":
        kw = {"timeline": params.timeline, "gpus": engine_gpus(params)}
        devices = engine.metered_gpus(params.engine_options)
        return {**kw, "device": devices} if devices else kw
    if params.meter == "process_cpu":
        return {"pid": engine.metered_pid(params.engine_options), "core_power_w": params.cpu_core_power_w}
    return {}


def engine_gpus(params: MeasureParams) -> int:
    """GPUs one engine of this sweep runs on, which the meter reads and sums."""
    return engine_class(params.engine).gpu_count(params.engine_options)


LOG_ONLY = ("status", "time", "timeline", "reason", "error", "gpu_energy_j", "shard_folder")
"""Log fields that do not go into a dataset."""


def finalize(out: Path, params: MeasureParams | None = None) -> Path:
    """Turn the raw log of ``out`` into ``out/measurements.nc`` (one record per (cell, repeat))."""
    records = read_window_log(out / LOG)[0]
    ok = [r for r in records if r.get("status") == "ok"]
    if not ok:
        raise EnergykitError(f"{out / LOG}: no completed window to turn into a dataset")
    df = pd.DataFrame(ok).drop_duplicates(list(DIMS), keep="last")
    df, attrs = dataset_frame(df, read_provenance(out), params)
    attrs.update(errors=sum(r.get("status") == "error" for r in records),
                 invalid_windows=sum(r.get("status") == "invalid" for r in records))
    ds = from_frame(df, source=str(out / LOG), attrs=attrs)
    return write_netcdf(ds, out / DATASET)  # atomic: temp file, then rename


def dataset_frame(df: pd.DataFrame, provenance: dict, params: MeasureParams | None = None) -> tuple[pd.DataFrame, dict]:
    """Good log records as a tidy frame (engine labels, geometry columns) and the dataset's attributes."""
    df = df.drop(columns=list(LOG_ONLY), errors="ignore")
    labels = {m: engine_label(v) for m, v in provenance.get("engines", {}).items()}
    df["engine"] = [labels.get(m, e) for m, e in zip(df["model"], df["engine"])]
    if params is not None:
        geoms = {name: geom for name, geom, _ in params.resolved}
        for col in GEOMETRY_KEYS:
            df[col] = df["model"].map(lambda m: geoms.get(m, {}).get(col))
        df["params"] = df["model"].map(lambda m: param_count(geoms[m]) if m in geoms else None)
    meter = provenance.get("meter", {})
    attrs = {
        "gpu_uuid": meter.get("gpu_uuid", ""),
        "driver_version": meter.get("driver_version", ""),
        "power_limit_w": meter.get("power_limit_w", float("nan")),
        "counter_period_s": meter.get("counter_period_s", float("nan")),
        "meter_at_start": meter,
        "idle_power_w": provenance.get("idle_power_w", float("nan")),
        "engine_versions": provenance.get("engines", {}),
        "energykit_commit": provenance.get("energykit_commit", ""),
        "library_energy": provenance.get("library_energy", ""),
        "params": params.model_dump() if params is not None else {},
    }
    if meter.get("note"):  # a proxy meter (process_cpu): its energy is not measured joules, and says so
        attrs["energy_method"] = f"{meter.get('meter', '')}: {meter['note']}"
    return df, attrs


def engine_label(versions: dict) -> str:
    """A readable engine label from recorded versions, e.g. ``hf transformers-5.17.0 compiled``."""
    cls = ENGINES.get(versions.get("engine"))
    return cls.label(versions) if cls is not None else str(versions.get("engine", "unknown"))


def _damaged(path: Path, what: str) -> DataError:
    return DataError(f"{path}: damaged ({what}); it was edited by hand or torn — restore it from a copy, or measure "
                     "into a new output folder")


def read_fingerprint(folder: Path) -> dict:
    """A folder's ``fingerprint.json`` (``{}`` when absent), its shape checked: ``setup`` and ``models`` objects."""
    path = Path(folder) / FINGERPRINT
    p = read_json(path)
    if not p:
        return p
    setup, models = p.get("setup"), p.get("models")
    if not isinstance(setup, dict) or not isinstance(models, dict):
        raise _damaged(path, "expected the objects 'setup' and 'models'")
    if not isinstance(setup.get("libraries", {}), dict):
        raise _damaged(path, "setup.libraries is not an object")
    for m, spec in models.items():
        if not isinstance(spec, dict) or not isinstance(spec.get("geometry", {}), dict):
            raise _damaged(path, f"model {m[:60]!r} is not an object with a geometry")
    return p


def read_provenance(folder: Path) -> dict:
    """A folder's ``provenance.json`` (``{}`` when absent), its shape checked: ``meter`` and ``engines`` objects."""
    path = Path(folder) / "provenance.json"
    p = read_json(path)
    if not isinstance(p.get("meter", {}), dict):
        raise _damaged(path, "meter is not an object")
    engines = p.get("engines", {})
    if not isinstance(engines, dict) or not all(isinstance(v, dict) for v in engines.values()):
        raise _damaged(path, "engines is not an object of objects")
    limit = p.get("meter", {}).get("power_limit_w")
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, (int, float))):
        raise _damaged(path, f"meter.power_limit_w {str(limit)[:40]!r} is not a number")
    for k in ("idle_power_w",):
        if k in p and (isinstance(p[k], bool) or not isinstance(p[k], (int, float))):
            raise _damaged(path, f"{k} {str(p[k])[:40]!r} is not a number")
    return p


def read_shard(folder: Path) -> dict:
    """A shard folder's ``shard.json`` (``{}`` when absent), its windows checked as (model, B, i, o, repeat) lists."""
    path = Path(folder) / "shard.json"
    p = read_json(path)
    windows = p.get("windows")
    if windows is None:
        return p
    if not isinstance(windows, list):
        raise _damaged(path, "windows is not a list")
    for w in windows:
        if not (isinstance(w, list) and len(w) == 5 and isinstance(w[0], str)
                and all(isinstance(x, int) and not isinstance(x, bool) and x >= 0 for x in w[1:])):
            raise _damaged(path, f"window {str(w)[:60]} is not [model, batch_size, input_len, output_len, repeat]")
    return p


def _shard_folders(outputs) -> list[Path]:
    found = []
    for out in map(Path, outputs):
        if not out.exists():
            raise DataError(f"{out}: no such output folder; check the path")
        if (out / "windows.jsonl").exists():
            found.append(out)
        found += sorted(p for p in out.glob("shard-*-of-*") if (p / "windows.jsonl").exists())
    if not found:
        raise DataError(f"no windows.jsonl under {', '.join(map(str, outputs))}; give sweep or shard folders")
    return found


KIT_ENTRIES = re.compile(r"^(?:windows\.jsonl|fingerprint\.json|params\.json|provenance\.json|"
                         r"\.lock|slurm|shard-\d+-of-\d+|\..+\.tmp)$")
"""What a sweep writes into its output folder (a folder holding anything else is not the kit's)."""


def _foreign_entries(out: Path) -> list[str]:
    """Names in the existing folder ``out`` that no sweep writes, sorted; ``[]`` when it is new, empty or the kit's.

    A folder the kit wrote (it holds its log, fingerprint or shard folders) is resumed as it is."""
    if not out.is_dir():
        return []
    names = sorted(p.name for p in out.iterdir())
    if any(n in (LOG, FINGERPRINT) or n.startswith("shard-") for n in names):
        return []
    return [n for n in names if not KIT_ENTRIES.match(n)]


def merge(outputs, destination: str | Path, params: MeasureParams | None = None) -> tuple[Path, dict]:
    """One dataset from shard folders: one record per (cell, repeat), the last good attempt.

    Returns the NetCDF path and a completeness report: windows found, retried, and — when the
    sweep's params are given — missing ones.
    """
    folders = _shard_folders(outputs)
    check_output(destination, [f / LOG for f in folders] + folders + [Path(o) for o in outputs], "measurements", "-o")
    check_shard_setups(folders, params)
    records = []
    for f in folders:
        known = read_fingerprint(f).get("models", {})
        for rec in read_window_log(f / "windows.jsonl")[0]:
            if rec.get("status") == "ok" and rec["model"] not in known:  # a line from another sweep, or edited
                raise DataError(f"{f / LOG} holds a window of model {str(rec['model'])[:60]!r}, which {f / FINGERPRINT} "
                                f"does not list ({', '.join(map(repr, known)) or 'none'}); its setup is unknown — "
                                "remove those lines or merge only folders measured by this sweep")
            records.append(dict(rec, shard_folder=f.name))
    ok = [r for r in records if r.get("status") == "ok"]
    if not ok:
        raise DataError(f"no completed window in {len(folders)} folder(s); measure first")
    df = pd.DataFrame(ok)
    df["time"] = df["time"].fillna("").astype(str) if "time" in df else ""
    df = df.sort_values("time", kind="stable")
    retried = int(df.duplicated(list(DIMS)).sum())
    df = df.drop_duplicates(list(DIMS), keep="last")
    provenance = {f.name: read_provenance(f) for f in folders}
    check_shard_meters(provenance)
    frame, attrs = dataset_frame(df, merged_provenance(provenance), params)
    gpus = sorted({str(g) for g in frame["gpu"]}) if "gpu" in frame else []
    if len(gpus) > 1:  # shards on different GPU models: never average them; one entry per (model, GPU)
        frame["model"] = frame["model"].astype(str) + " [" + frame["gpu"].astype(str) + "]"
    attrs.update({"shards": sorted(provenance), "shard_provenance": provenance, "gpus": gpus,
                  "retried_windows": retried})
    ds = from_frame(frame, source=", ".join(f.name for f in folders), attrs=attrs)
    path = write_netcdf(ds, destination)
    report = {"folders": len(folders), "windows": len(df), "retried": retried, "gpus": gpus}
    if params is not None:
        want = set(all_windows(params))
        have = {tuple(k) for k in df[list(DIMS)].itertuples(index=False)}
        report["missing"] = len(want - have)
        report["planned"] = len(want)
    return path, report


SHARD_LOCAL = ("gpu_uuids",)
"""Fingerprint fields that differ between shards by design (each shard runs on its own GPU)."""


def check_shard_setups(folders: list[Path], params: MeasureParams | None = None) -> None:
    """Refuse, naming the field, to merge folders measured with different setups.

    Every folder's ``fingerprint.json`` must equal the first one's (and the params', when given),
    except the GPU each shard ran on; a model measured in two folders must have one geometry.
    """
    prints = {f: read_fingerprint(f) for f in folders}
    missing = [f for f, p in prints.items() if not p]
    if missing:
        raise DataError(f"{missing[0]} has no {FINGERPRINT}: its setup is unknown and cannot be checked against "
                        "the other folders; merge only folders measured by this energykit")

    def setup_of(p):
        return {"setup": {k: v for k, v in p.get("setup", {}).items() if k not in SHARD_LOCAL},
                "models": p.get("models", {})}

    first, ref = folders[0], setup_of(prints[folders[0]])
    if params is not None:
        want = setup_of(fingerprint(params, {}))
        want["setup"].pop("libraries", None)  # the versions of where the shards ran, not of this machine
        for f, p in prints.items():
            have = setup_of(p)
            have["setup"].pop("libraries", None)
            diffs = fingerprint_difference(have, want)
            if diffs:
                raise DataError(f"{f} was measured with another setup than the params give ({'; '.join(diffs)}); "
                                "merge only the shards of this sweep")
    for f in folders[1:]:  # both ways: a field one shard lacks is a difference too, whichever folder comes first
        diffs = fingerprint_difference(ref, setup_of(prints[f])) or fingerprint_difference(setup_of(prints[f]), ref)
        if diffs:
            raise DataError(f"{f} and {first} were measured with different setups ({'; '.join(diffs)}); "
                            "merge only shards of one sweep, or fit them as separate datasets")


def check_shard_meters(provenance: dict[str, dict]) -> None:
    """Refuse shards whose GPUs of one model ran at different power limits: the merged dataset records one limit
    (the first shard's meter), and a capped GPU draws less energy per window."""
    seen = {}
    for name, p in provenance.items():
        meter = p.get("meter") or {}
        if meter.get("power_limit_w") is None:
            continue
        gpu = meter.get("gpu_name", "")
        if gpu in seen and seen[gpu][1] != meter["power_limit_w"]:
            raise DataError(f"{name} ran its {gpu or 'GPU'} at power_limit_w {meter['power_limit_w']}, {seen[gpu][0]} at "
                            f"{seen[gpu][1]}; merge only shards measured at one power limit (nvidia-smi -pl), or fit "
                            "them as separate datasets")
        seen.setdefault(gpu, (name, meter["power_limit_w"]))


def merged_provenance(provenance: dict[str, dict]) -> dict:
    """One provenance of several shard folders: the first's meter, and every shard's engines and versions."""
    first = next(iter(provenance.values()))
    engines = {}
    for p in provenance.values():
        engines.update(p.get("engines", {}))
    return {**first, "engines": engines}


def status(outputs) -> pd.DataFrame:
    """Per shard folder: planned, done, failed and missing windows."""
    rows = []
    for f in _shard_folders(outputs):
        recs = read_window_log(f / "windows.jsonl")[0]
        ok = {tuple(r[d] for d in DIMS) for r in recs if r.get("status") == "ok"}
        failed = {tuple(r[d] for d in DIMS) for r in recs if r.get("status") != "ok"} - ok
        planned = read_shard(f).get("windows")
        planned = {tuple(w) for w in planned} if planned else None
        rows.append({"folder": str(f), "planned": len(planned) if planned else math.nan, "done": len(ok),
                     "failed": len(failed), "missing": len(planned - ok) if planned else math.nan})
    return pd.DataFrame(rows)
