"""The window protocol: synchronise, read, run, synchronise, read — repeated until long enough.

NVML's energy counter advances in steps (every 100 ms on an H200), so a window under about 1 s
carries up to one step of error. :func:`measure` repeats the request inside one window until the
window lasts at least ``min_window_s`` and divides by the number of calls.

Every call sends fresh prompts, drawn before the window opens (so that drawing them is not
metered). For an engine :class:`~energykit.engines.Request`, two unmetered pilot calls first warm
the cell's shapes and time it; then enough prompts are drawn for ``min_window_s``. A sweep runs the
pilots once per (model, batch, cell) and hands their time (``pilot_s``) to the cell's other repeats. If the calls
run faster than the pilot said and the prompts run out, the window closes, more are drawn, and a
further window (of at least half ``min_window_s``) continues the measurement: the readings add up
(energy, duration, calls).

:class:`LibraryCounter` wraps a meter so that each of its windows also reads the engine library's own energy
counter (e.g. TensorRT-LLM's), for the sweep's comparison of the two.

A window always closes: if a call raises, the window is cancelled (its sampling thread stops) and
the error goes on to the caller.

A window fails (:class:`~energykit.errors.EngineError`, recorded by the sweep and measured again by its
next run) when what it timed is not the engine's work: a call whose engine reports a decode step that
waited in its request queue (:attr:`~energykit.engines.Generation.queue_waits`), or a step time
(seconds per call over its forward steps) over :data:`PLAUSIBLE_STEP_FACTOR` times the pilot's in two
consecutive stretches: a stretch slowed once (a host stall on a shared machine) is measured again; a
wait in the engine's queue slows every stretch.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any, Callable

from .errors import EngineError
from .meters import Meter, WindowReading

__all__ = ["PILOT_MARGIN", "PLAUSIBLE_STEP_FACTOR", "Window", "measure", "LibraryCounter"]

PILOT_MARGIN = 1.25
"""Prompts drawn for a window: this many times what the pilot calls' duration says is needed."""
PILOT_CALLS = 2
"""Unmetered calls before a window: the first warms the cell's shapes, the faster one times it."""
MAX_DISCARDED = 3
"""Windows cut short by too few prompts and too short for the counter that are measured again."""
PLAUSIBLE_STEP_FACTOR = 10.0
"""A window whose step time exceeds this many times the pilot's per-step estimate fails."""
MIN_EXCESS_S = 0.3
"""...and exceeds it by at least this much per call [s], so that a host stall of a tenth of a second (seen in
CI on a loaded 2-core machine, failing a CPU sweep's window of millisecond calls) never fails a window of
short calls; a step stalled in a queue adds its whole wait (TensorRT-LLM's: about 1 s) to every step."""
IMPLAUSIBLE_RETRIES = 1
"""Implausibly slow stretches measured again before the window fails: a host stall is transient (CI on a loaded
2-core machine once stalled a single-call window by over 0.3 s); a queue wait recurs on every call."""


@dataclass
class Window:
    """One measurement of ``iterations`` calls, in one or more consecutive meter windows."""

    reading: WindowReading
    iterations: int
    last_result: Any
    segments: int = 1
    """Meter windows the measurement took (more than one when prompts ran out)."""
    pilot_s: float = float("nan")
    """Seconds per call the pilots measured (or that were given), for the cell's next repeats."""

    @property
    def energy_j(self) -> float:
        """Energy per call [J] (window energy / iterations)."""
        return self.reading.energy_j / self.iterations

    @property
    def duration_s(self) -> float:
        """Wall time per call [s]."""
        return self.reading.duration_s / self.iterations

    @property
    def step_s(self) -> float:
        """Wall time per forward step of a call [s] (the engine's step count, else one per new token); NaN
        without either."""
        return _per_step(self.duration_s, self.last_result)

    @property
    def pilot_step_s(self) -> float:
        """The pilot's per-step estimate [s] (:attr:`pilot_s` over the new tokens per call)."""
        return _per_step(self.pilot_s, self.last_result)


def _per_step(per_call_s: float, result) -> float:
    steps = getattr(result, "steps", 0) or getattr(result, "output_tokens", None)
    return per_call_s / steps if isinstance(steps, int) and steps > 0 else float("nan")


def _check_call(result) -> None:
    """Fail a call whose engine reports decode steps that waited in its request queue."""
    waits = getattr(result, "queue_waits", 0) or 0
    if waits > 0:
        raise EngineError(f"{waits} decode step(s) of a call waited in the engine's request queue: the window would "
                          "meter the wait, not the GPU's work; it is failed and the next run measures it again")


def _check_steps(per_call_s: float, pilot_s: float, result) -> None:
    """Fail a window whose step time is implausible next to the pilot's (see :data:`PLAUSIBLE_STEP_FACTOR`)."""
    if per_call_s > PLAUSIBLE_STEP_FACTOR * pilot_s and per_call_s - pilot_s > MIN_EXCESS_S:
        step, pilot = _per_step(per_call_s, result), _per_step(pilot_s, result)
        what = (f"step time {step * 1e3:.3g} ms is {per_call_s / pilot_s:.0f}x the pilot's per-step estimate "
                f"{pilot * 1e3:.3g} ms") if math.isfinite(step) else \
            f"call time {per_call_s * 1e3:.3g} ms is {per_call_s / pilot_s:.0f}x the pilot's {pilot_s * 1e3:.3g} ms"
        raise EngineError(f"implausible window: {what} (over {PLAUSIBLE_STEP_FACTOR:g}x): something other than the "
                          "GPU's work was timed; the window is failed and the next run measures it again")


def _segment(meter: Meter, call: Callable[[], Any], budget: int, t_needed_s: float, more: Callable[[], bool]):
    """One meter window: call until ``t_needed_s`` passed, ``budget`` calls ran or ``more()`` is false."""
    meter.begin_window()
    t0 = time.perf_counter()
    n, result = 0, None
    try:
        while True:
            result = call()
            _check_call(result)
            n += 1
            if n >= budget or not more():
                break
            meter.sync()
            if time.perf_counter() - t0 >= t_needed_s:
                break
    except BaseException:
        meter.cancel_window()
        raise
    return meter.end_window(), n, result


def measure(meter: Meter, call: Callable[[], Any], min_window_s: float = 2.0, max_iterations: int = 10_000,
            pilot_s: float | None = None) -> Window:
    """Run ``call`` repeatedly inside meter windows until they last ``min_window_s`` [s] together.

    ``call`` is an engine :class:`~energykit.engines.Request` (fresh prompts per call, prepared
    outside the window) or any plain callable. Windows that ended early because the prompts ran out,
    too short for the energy counter to move, are measured again (at most :data:`MAX_DISCARDED`).
    ``pilot_s`` [s per call], from an earlier measurement of the same cell, skips the pilot calls.
    """
    prepare = getattr(call, "prepare", None)
    if prepare is None:
        reading, n, result = _segment(meter, call, max_iterations, min_window_s, lambda: True)
        return Window(reading, n, result)

    if pilot_s is not None and pilot_s > 0:
        per_call_s = float(pilot_s)
    else:
        prepare(PILOT_CALLS)
        per_call_s = float("inf")
        for _ in range(PILOT_CALLS):  # pilots: time the cell, warm its shapes; not metered
            t0 = time.perf_counter()
            _check_call(call())
            meter.sync()
            per_call_s = min(per_call_s, max(time.perf_counter() - t0, 1e-6))
    pilot = per_call_s
    reading, iterations, result, segments, discarded, retried = None, 0, None, 0, 0, 0
    while True:
        left_s = min_window_s - (reading.duration_s if reading else 0.0)
        if reading is not None:  # a continuation spans half a window at least, never a sliver of a counter step
            left_s = max(left_s, 0.5 * min_window_s)
            if max_iterations - iterations < math.ceil(left_s / per_call_s):
                return Window(reading, iterations, result, segments, pilot)  # the call budget cannot fill it
        want = min(max_iterations - iterations, max(1, math.ceil(PILOT_MARGIN * left_s / per_call_s)))
        prepare(want - call.prepared)
        r, n, result = _segment(meter, call, want, left_s, lambda: call.prepared > 0)
        per_call_s = max(r.duration_s / n, 1e-6)
        try:
            _check_steps(per_call_s, pilot, result)
        except EngineError:
            if retried >= IMPLAUSIBLE_RETRIES:
                raise
            retried += 1  # once slow: measure this stretch again; slow again, and the window fails
            per_call_s = pilot
            continue
        if not r.valid and r.duration_s < left_s and discarded < MAX_DISCARDED:
            discarded += 1  # prompts ran out before the counter moved: measure that stretch again
            continue
        reading = r if reading is None else reading + r
        iterations += n
        segments += 1
        if reading.duration_s >= min_window_s or iterations >= max_iterations:
            return Window(reading, iterations, result, segments, pilot)


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
