"""Crash-safe measurement sweeps: ``python -m energykit measure PARAMS.yaml``.

Parameters are validated before any model is loaded and before anything is written. Every window
is appended to ``OUTPUT/windows.jsonl`` and flushed to disk as soon as it completes, so a crash or
``kill -9`` loses at most the window in flight; running the same command again resumes, skipping
every (cell, repeat) already recorded. A failing cell (out of memory, an engine error) is recorded
with its error and the sweep goes on. At the end the log becomes ``OUTPUT/measurements.nc``.

:func:`run` reads top to bottom: :func:`_prepare` (engine, device, output folder, writer lock), the meter,
:func:`_open_folder` (fingerprint check, then the folder's files and :func:`_plan`), per model
:func:`_measure_model` (:func:`_load_engine`: load, versions, warm-up; then its windows), :func:`_finish`.
The window plan is :mod:`energykit.shards`'s; the folder's files and their readers live in
:mod:`energykit.provenance`; the log into a dataset, shard merges and status in :mod:`energykit.merge`.
"""

from __future__ import annotations

import os
import re
import sys
import textwrap
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from tqdm.auto import tqdm

from .engines import engine_class
from .errors import EnergykitError, EngineError, MeterError, ParamsError
from .iotools import read_window_log
from .merge import finalize
from .meters import make_meter
from .params import MeasureParams
from .physics import param_count
from .provenance import (FINGERPRINT, HOST, LOG, PROVENANCE, SHARD, allocation_of, fingerprint, fingerprint_difference,
                         git_commit, read_fingerprint, read_provenance)
from .shards import Shard, cell_of, run_order, shard_folder, shard_of, window_key
from .state import RawLog, WriterLock, atomic_write_json, read_json
from .windows import LibraryCounter, measure
# kept importable from here for callers written before the folder readers and the merge moved out
from .merge import dataset_frame, merge, status  # noqa: F401
from .provenance import DATASET, engine_label, read_shard  # noqa: F401

__all__ = ["ModelTiming", "remaining_estimate_s", "timing_line", "check_engine_installed", "check_device",
           "meter_kwargs", "MIN_COUNTER_PERIODS", "check_window", "SweepFailures", "run", "engine_gpus",
           "library_difference_line", "KIT_ENTRIES"]


def check_engine_installed(engine: str) -> None:
    """Fail in one line, naming the pip extra, when the engine's libraries are not installed."""
    engine_class(engine).check_installed()


def check_device(params: MeasureParams) -> None:
    """The engine's checks of this machine, e.g. no GPU metered while it runs on the CPU (before anything is written)."""
    engine_class(params.engine).preflight(params)


MIN_COUNTER_PERIODS = 5
"""A window must span at least this many energy-counter periods (one step is then ≤ 20 % of it)."""


def check_window(params: MeasureParams, meter) -> None:
    """Refuse a ``min_window_s`` shorter than :data:`MIN_COUNTER_PERIODS` periods of the meter's energy counter."""
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


@dataclass
class _Sweep:
    """One run's state, shared by its steps: the folder, the engine class, the meter, the log, the plan."""

    params: MeasureParams
    engine: type
    out: Path
    shard: Shard | None = None
    lock: WriterLock | None = None
    meter: object = None
    log: RawLog | None = None
    todo: list = field(default_factory=list)
    attempts: dict = field(default_factory=dict)
    provenance: dict = field(default_factory=dict)
    failed: list = field(default_factory=list)
    timing: list = field(default_factory=list)
    current: object = None
    """The engine being measured (the meter synchronises it)."""

    def sync(self) -> None:
        if self.current is not None:
            self.current.synchronize()


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
    s = _prepare(params, shard)
    try:
        s.meter = make_meter(params.meter, sync=s.sync, **meter_kwargs(params, s.engine))
        check_window(params, s.meter)
        if hasattr(s.meter, "check_exclusive"):
            s.meter.check_exclusive()
        _open_folder(s, params_path)
        s.log = RawLog(s.out / LOG)
        bar = tqdm(total=len(s.todo), desc="windows", disable=not progress, unit="win")
        try:
            for model_name, geom, ckpt in params.resolved:
                if any(w[0] == model_name for w in s.todo):
                    _measure_model(s, model_name, geom, ckpt, bar)
        finally:
            bar.close()
        _record_library_energy(s)
    finally:
        for thing in (s.log, s.meter):
            if thing is not None:
                thing.close()
        if s.lock is not None:
            s.lock.release()
    return _finish(s)


def _prepare(params: MeasureParams, shard: tuple[int, int] | None) -> _Sweep:
    """The checks before anything is written: engine installed, device, output folder, its writer lock."""
    engine = engine_class(params.engine)  # looked up once per run
    engine.check_installed()  # before anything is written or measured
    engine.preflight(params)
    out, my_shard = Path(params.output), None
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
    return _Sweep(params, engine, out, my_shard, lock)


def _open_folder(s: _Sweep, params_path: str) -> None:
    """Check the folder's fingerprint against this run's, then write it, the params, the plan and the provenance."""
    params, out = s.params, s.out
    info = s.meter.info()
    new_print = fingerprint(params, info, s.engine)
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
    if s.lock is None:
        s.lock = WriterLock(out).acquire()
    s.lock.claim()
    merged = {"setup": new_print["setup"], "models": {**old_print.get("models", {}), **new_print["models"]}}
    atomic_write_json(out / FINGERPRINT, merged)
    atomic_write_json(out / "params.json", params.model_dump())
    _plan(s)
    s.provenance = read_provenance(out)
    if not s.provenance:
        s.provenance = {"meter": info, "energykit_commit": git_commit(), "params_file": str(params_path),
                        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        if params.idle_s > 0 and s.meter.measures_energy:
            s.provenance["idle_power_w"] = s.meter.idle_power_w(params.idle_s)
        atomic_write_json(out / PROVENANCE, s.provenance)


def _plan(s: _Sweep) -> None:
    """The windows still to measure (failed ones are measured again), and the attempts each had."""
    records = read_window_log(s.out / LOG)[0]
    done = {window_key(r) for r in records if r.get("status") == "ok"}
    s.todo = run_order(s.params, done, by_batch=s.engine.loads_per_batch_size)
    for r in records:
        s.attempts[window_key(r)] = s.attempts.get(window_key(r), 0) + 1
    if s.shard is not None:
        wanted = set(s.shard.windows)
        s.todo = [w for w in s.todo if w in wanted]
        atomic_write_json(s.out / SHARD, {"index": s.shard.index, "count": s.shard.count, "cost": s.shard.cost,
                                         "windows": [list(w) for w in s.shard.windows]})


def _load_engine(s: _Sweep, model_name: str, geom: dict, ckpt):
    """Build and load one model's engine, record its versions, warm it up; a load failure is one line."""
    params = s.params
    engine = s.engine.from_params(params, model_name, geom, ckpt)
    try:
        engine.load()
    except EnergykitError:
        raise
    except Exception as e:  # e.g. CUDA out of memory while building the model: one line
        first = str(e).strip().splitlines()[0] if str(e).strip() else ""
        raise EngineError(f"model {model_name!r} failed to load ({type(e).__name__}: {first[:200]}); "
                          f"the windows measured so far are kept in {s.out}; free the GPU or drop the "
                          "model from models:, then rerun to resume") from None
    s.current = engine
    s.provenance.setdefault("engines", {})[model_name] = {"engine": params.engine, **engine.versions()}
    atomic_write_json(s.out / PROVENANCE, s.provenance)
    mid_i, mid_o = params.grid[len(params.grid) // 2]
    warm = engine.request(params.batch_sizes[0], mid_i, mid_o)
    warm.prepare(params.warmup)
    for _ in range(params.warmup):
        warm()
    return engine


def _measure_model(s: _Sweep, model_name: str, geom: dict, ckpt, bar) -> None:
    """One model's windows: load and warm its engine, measure and log each window, close it, say how long it took."""
    params, mine = s.params, [w for w in s.todo if w[0] == model_name]
    t_model = time.perf_counter()
    engine = _load_engine(s, model_name, geom, ckpt)
    t_ready = time.perf_counter()
    pilots = {}  # (batch, i, o) -> seconds per call: pilot calls run once per cell, not per repeat
    for key in mine:
        rec = _measure_window(params, key, engine, s.meter, measure, s.provenance, pilots)
        rec.update(host=HOST, gpu_uuid=s.provenance["meter"].get("gpu_uuid", "cpu"),
                   cuda_visible_devices=os.environ.get("CUDA_VISIBLE_DEVICES", ""),
                   slurm_job=os.environ.get("SLURM_ARRAY_JOB_ID", os.environ.get("SLURM_JOB_ID", "")),
                   slurm_task=os.environ.get("SLURM_ARRAY_TASK_ID", ""),
                   shard=f"{s.shard.index}/{s.shard.count}" if s.shard else "",
                   attempt=s.attempts.get(key, 0) + 1)
        s.log.append(rec)
        if rec["status"] != "ok":
            s.failed.append(rec)
        bar.update(1)
        if params.cooldown_s:
            time.sleep(params.cooldown_s)
    engine.close()
    s.current = None
    s.timing.append(ModelTiming(model_name, param_count(geom), len(mine), t_ready - t_model,
                                time.perf_counter() - t_ready))
    left = [(m, g) for m, g, _ in params.resolved if any(w[0] == m for w in s.todo)]
    left = [(m, g, sum(w[0] == m for w in s.todo)) for m, g in left[left.index((model_name, geom)) + 1:]]
    tqdm.write(timing_line(s.timing[0], s.timing[-1], left), file=sys.stderr)


def _record_library_energy(s: _Sweep) -> None:
    """Say (and record in the provenance) how the engine library's own energy counter compares with the meter."""
    line = library_difference_line(read_window_log(s.out / LOG)[0])
    if line:
        tqdm.write(line, file=sys.stderr)
        s.provenance["library_energy"] = line
        atomic_write_json(s.out / PROVENANCE, s.provenance)


def _finish(s: _Sweep) -> Path:
    """The dataset of the good windows; :class:`SweepFailures` when windows failed."""
    try:
        path = finalize(s.out, s.params)
    except EnergykitError as e:
        if s.failed:  # no window completed: no dataset was written, and the message says so
            summary = _failure_summary(s.failed, len(s.todo), s.out, written=False)
            raise SweepFailures(f"{summary} ({e})", None) from None
        raise
    if s.failed:
        raise SweepFailures(_failure_summary(s.failed, len(s.todo), s.out), path)
    return path


def _measure_window(params, key, engine, meter, measure, provenance, pilots=None) -> dict:
    """Measure one (cell, repeat) and return its log record; engine failures are recorded, not raised.

    ``pilots`` maps (batch, i, o) to the seconds per call that the cell's first repeat measured, so
    that its other repeats skip the pilot calls.
    """
    cell = cell_of(key)
    b, i, o = cell["batch_size"], cell["input_len"], cell["output_len"]
    counter = engine.energy_counter()
    if meter.measures_energy and counter is not None:
        meter = LibraryCounter(meter, counter)
    rec = {"model": key[0], **cell, "repeat": key[-1]}
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
    top = "; ".join(f"{n}x {textwrap.shorten(w, 120, placeholder=' …')}" for w, n in why.most_common(3))
    held = (f"the dataset in {out} holds the others" if written
            else f"no window completed, so no dataset was written in {out}")
    return f"{len(failed)} of {planned} windows failed ({top}); {held}, and running the same command again retries the failed ones"


def meter_kwargs(params: MeasureParams, engine: type | None = None) -> dict:
    """The meter's arguments: the GPUs the engine runs on (NVML), or the process it runs in (``process_cpu``).

    ``engine``: the engine class when the caller already looked it up (else from the registry)."""
    engine = engine or engine_class(params.engine)
    if params.meter == "nvml":
        kw = {"timeline": params.timeline, "gpus": engine.gpu_count(params.engine_options)}
        devices = engine.metered_gpus(params.engine_options)
        return {**kw, "device": devices} if devices else kw
    if params.meter == "process_cpu":
        return {"pid": engine.metered_pid(params.engine_options), "core_power_w": params.cpu_core_power_w}
    return {}


def engine_gpus(params: MeasureParams) -> int:
    """GPUs one engine of this sweep runs on, which the meter reads and sums."""
    return engine_class(params.engine).gpu_count(params.engine_options)


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
