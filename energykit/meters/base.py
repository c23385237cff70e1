"""What every meter is: the window protocol's interface (:class:`Meter`), its reading, the null meter.

A meter measures *windows*: :meth:`Meter.begin_window` → work → :meth:`Meter.end_window`, which returns a
:class:`WindowReading` in SI units (energy [J], duration [s]); :meth:`Meter.cancel_window` abandons an open
window. ``measures_energy`` is the capability flag: :class:`NullMeter` (durations only) says no, with a
warning, and never invents energy.
"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass, field
from typing import Callable

from ..errors import MeterError

__all__ = ["PADDING_IDLES", "COUNTER", "POWER_INSTANT", "POWER_AVERAGE", "NONE", "WindowReading", "Meter",
           "NullMeter"]

PADDING_IDLES = ("warm", "cold")
"""Idle power subtracted over an aligned window's end padding: measured right after the work, or before any."""

COUNTER = "nvml_energy_counter"
POWER_INSTANT = "nvml_power_instant_integrated"
POWER_AVERAGE = "nvml_power_average_integrated"
NONE = "none"


@dataclass
class WindowReading:
    """What a meter measured over one window."""

    energy_j: float
    """Energy over the window [J]; NaN when the meter measures none or the window is invalid."""
    duration_s: float
    """Wall time of the window [s]."""
    method: str
    """How the energy was obtained (``nvml_energy_counter``, ``nvml_power_*_integrated``, ``none``)."""
    valid: bool = True
    reason: str = ""
    samples: int = 0
    """Power samples taken in the window (power integration and timelines)."""
    timeline: list = field(default_factory=list, repr=False)
    """(t [s since window start], power [W]) pairs when a timeline was asked for."""
    per_gpu_j: dict = field(default_factory=dict)
    """Energy of each metered GPU [J], by UUID (their sum is ``energy_j``)."""
    padding_s: float = 0.0
    """Idle time between the end of the work and the counter tick that closed the window [s]; idle
    power × this was subtracted from ``energy_j``."""
    padding_idle: str = ""
    """Which idle power was subtracted over the end padding: ``warm`` (measured right after the work)
    or ``cold`` (measured before any work); empty where nothing was subtracted."""
    padding_idle_w: float = float("nan")
    """The idle power subtracted over the end padding [W] (all metered GPUs)."""

    def __add__(self, other: "WindowReading") -> "WindowReading":
        """Two consecutive windows of one measurement as one: energies, durations and samples add."""
        gpus = {u: self.per_gpu_j.get(u, 0.0) + other.per_gpu_j.get(u, 0.0) for u in {**self.per_gpu_j, **other.per_gpu_j}}
        return WindowReading(self.energy_j + other.energy_j, self.duration_s + other.duration_s, self.method,
                             self.valid and other.valid, "; ".join(r for r in (self.reason, other.reason) if r),
                             self.samples + other.samples, self.timeline + other.timeline, gpus,
                             self.padding_s + other.padding_s, self.padding_idle or other.padding_idle,
                             _mean_w(self, other))


def _mean_w(a: "WindowReading", b: "WindowReading") -> float:
    """The padding idle power of two consecutive readings, weighted by their paddings [W]."""
    pairs = [(r.padding_idle_w, r.padding_s) for r in (a, b) if r.padding_idle_w == r.padding_idle_w]
    total = sum(s for _, s in pairs)
    if not pairs:
        return float("nan")
    return sum(w * s for w, s in pairs) / total if total > 0 else pairs[0][0]


class Meter:
    """Interface of a meter. ``measures_energy`` is the capability flag."""

    measures_energy = False
    method = NONE

    def __init__(self, sync: Callable[[], None] | None = None):
        self.sync = sync or (lambda: None)
        self._t0 = None

    def begin_window(self) -> None:
        self.sync()
        self._t0 = time.perf_counter()

    def end_window(self) -> WindowReading:
        self.sync()
        if self._t0 is None:
            raise MeterError("end_window() called without begin_window(); start a window first")
        dt = time.perf_counter() - self._t0
        self._t0 = None
        return WindowReading(float("nan"), dt, NONE)

    def cancel_window(self) -> None:
        """Abandon the open window (the measured call failed); a new window can begin."""
        self._t0 = None

    def idle_power_w(self, duration_s: float = 5.0) -> float:
        """Board power at idle [W] averaged over ``duration_s``; NaN for a meter without energy."""
        return float("nan")

    def info(self) -> dict:
        """Provenance of the measuring device (name, UUID, driver, limits, clocks, temperature)."""
        return {"meter": self.method}

    def close(self) -> None:
        pass


class NullMeter(Meter):
    """Durations only: energy is NaN, with a warning — never invented energy."""

    def __init__(self, sync=None):
        super().__init__(sync)
        warnings.warn("meter 'none': windows record durations only; energy is NaN", stacklevel=2)
