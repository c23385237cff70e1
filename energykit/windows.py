"""The window protocol: synchronise, read, run, synchronise, read — repeated until long enough.

NVML's energy counter advances in steps (every 100 ms on an H200), so a window under about 1 s
carries up to one step of error. :func:`measure` repeats the same call inside one window until the
window lasts at least ``min_window_s`` and divides by the number of calls.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Callable

from .meters import Meter, WindowReading


@dataclass
class Window:
    """One measured window of ``iterations`` identical calls."""

    reading: WindowReading
    iterations: int
    last_result: Any

    @property
    def energy_j(self) -> float:
        """Energy per call [J] (window energy / iterations)."""
        return self.reading.energy_j / self.iterations

    @property
    def duration_s(self) -> float:
        """Wall time per call [s]."""
        return self.reading.duration_s / self.iterations


def measure(meter: Meter, call: Callable[[], Any], min_window_s: float = 2.0, max_iterations: int = 10_000) -> Window:
    """Run ``call`` repeatedly inside one meter window until it lasts ``min_window_s`` [s]."""
    meter.begin_window()
    t0 = time.perf_counter()
    n = 0
    result = None
    while True:
        result = call()
        n += 1
        if n >= max_iterations:
            break
        meter.sync()
        if time.perf_counter() - t0 >= min_window_s:
            break
    return Window(meter.end_window(), n, result)
