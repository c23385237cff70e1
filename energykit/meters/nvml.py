"""The NVML meter: the window protocol over a GPU device (counter, or power integration where there is no counter).

The device (:mod:`energykit.meters.device`) reads the GPUs; this module holds what makes a *window* of
them: begin/end/cancel, alignment to the counter's ticks, the end padding's idle power, and the power
sampling thread (timelines, and integration where there is no counter).

NVML's energy counter advances in steps (every 100 ms on an H100/H200), so a window that starts and
ends at arbitrary phases of it is off by up to one step at each end. The NVML meter therefore aligns
its windows to the counter (``align``): it begins the work just after a counter tick (reading the
counter as it changes), and at the end synchronises the device, waits for the next tick and subtracts
idle power × that padding. What is left is the idle-power estimate's error over the padding.

Which idle power (``padding_idle``): the end padding runs right after the work, at *warm* idle (clocks
and temperature still up), well above the *cold* idle measured before any work (70–78 W against more
after work on an H200: +1.5–3 J per window if the cold figure were subtracted). So by default
(``warm``) the meter waits one more tick after the closing one and takes the power over that counter
step, right after the work, as the idle power of the end padding; the few milliseconds between the
start tick and the work keep the cold figure. Each reading records which (``padding_idle``) and the
power it subtracted (``padding_idle_w``). ``cold`` subtracts the cold idle over both.

NVML's vendor units (mJ, mW) are converted to SI in the device and nowhere
else. A window whose counter went down (driver reload) or that holds too few power samples is
flagged invalid with a reason; it is never stored as zero.
"""

from __future__ import annotations

import threading
import time
import warnings
from typing import Callable

from ..errors import MeterError
from .base import COUNTER, PADDING_IDLES, POWER_AVERAGE, POWER_INSTANT, Meter, WindowReading
from .device import NvmlDevice

__all__ = ["NvmlMeter", "TICK_POLL_S", "ALIGN_IDLE_S"]


class NvmlMeter(Meter):
    """NVML meter of one or more GPUs, identified by UUID; energy is summed over them.

    Uses the total-energy counter (``nvmlDeviceGetTotalEnergyConsumption``, mJ since driver load)
    where every metered GPU has one, else integrates power: the instant field
    ``NVML_FI_DEV_POWER_INSTANT`` where the driver has it, else ``nvmlDeviceGetPowerUsage`` (a 1 s
    average on Hopper). The method is recorded on every window, and so is each GPU's energy.

    Parameters
    ----------
    device : int or str or list, optional
        NVML index(es) or GPU UUID(s); by default the first ``gpus`` GPUs of ``CUDA_VISIBLE_DEVICES``.
    gpus : int
        How many GPUs the engine uses (tensor parallelism) when ``device`` is not given.
    sync : callable, optional
        Synchronises the device (e.g. ``torch.cuda.synchronize``) before each counter read.
    timeline : bool
        Sample power in a thread during every window and keep the (t, W) pairs.
    sample_period_s : float
        Power sampling period [s].
    probe_counter_s : float
        How long to poll the counter at start to measure its update period [s].
    align : bool
        Align windows to the counter's ticks (see the module docstring); counter method only.
    idle_power_w : float, optional
        Idle power [W] subtracted over the end padding of aligned windows; measured once (for
        :data:`ALIGN_IDLE_S`) before the first aligned window when not given or measured earlier.
    padding_idle : str
        ``warm`` (default): the end padding subtracts the power over the counter step right after the
        window's closing tick (one more counter period per window); ``cold``: the idle power above.
    clock, sleep : callable
        Time source [s] and sleep (tests pass a virtual clock).
    """

    measures_energy = True

    def __init__(self, device=None, sync=None, timeline=False, sample_period_s=0.01, probe_counter_s=1.5, gpus=1,
                 align=True, idle_power_w=None, padding_idle="warm", clock=time.perf_counter, sleep=time.sleep):
        super().__init__(sync)
        if padding_idle not in PADDING_IDLES:
            raise MeterError(f"padding_idle {padding_idle!r} is not one of {', '.join(PADDING_IDLES)}")
        self.padding_idle = padding_idle
        self._clock, self._sleep = clock, sleep
        self.idle_w = idle_power_w
        self.idle_gpu_w = None
        """Each GPU's idle power [W], when measured by :meth:`idle_power_w`."""
        self.device = dev = NvmlDevice(device, gpus)
        """The GPUs this meter reads (:class:`~energykit.meters.device.NvmlDevice`: reads and root-only setters)."""
        self.nvml, self.handles, self.uuids, self.names = dev.nvml, dev.handles, dev.uuids, dev.names
        self.handle, self.uuid, self.name = dev.handle, dev.uuid, dev.name
        self.timeline = timeline
        self.sample_period_s = sample_period_s
        self.has_counter = dev.counter_supported()
        self.instant_field = dev.instant_supported()
        if self.has_counter:
            self.method = COUNTER
            self.counter_period_s = self._probe_counter(probe_counter_s)
            self.align = bool(align) and self.counter_period_s == self.counter_period_s
        else:
            self.align = False
            self.method = POWER_INSTANT if self.instant_field else POWER_AVERAGE
            self.counter_period_s = float("nan")
            warnings.warn(
                f"GPU {self.name} has no energy counter; integrating {'instant' if self.instant_field else 'average'} "
                "power instead (recorded as the window method)",
                stacklevel=2,
            )
        self._start = None
        self._sampler = None

    # -- the device's reads (vendor units converted there) --------------------------------------
    def _energies_j(self) -> list[float]:
        """Each GPU's counter [J]."""
        return self.device.energies_j()

    def _energy_j(self) -> float:
        return sum(self._energies_j())

    def _powers_w(self) -> list[float]:
        return self.device.powers_w(self.instant_field)

    def _power_w(self) -> float:
        return sum(self._powers_w())

    def _probe_counter(self, duration_s: float) -> float:
        """Mean time between counter changes [s], polled for ``duration_s``: the span from the first
        change seen to the last over the steps between, so that a poll delayed on a loaded machine moves
        one end of the span, not every gap."""
        nv = self.nvml
        changes = []
        try:
            last = self._energy_j()
            t_end = self._clock() + duration_s
            while self._clock() < t_end:
                v = self._energy_j()
                if v != last:
                    changes.append(self._clock())
                    last = v
                self._sleep(0.002)
        except nv.NVMLError as e:
            raise MeterError(f"NVML failed while probing the energy counter of {self.name} ({e}); "
                             "check the driver, or use meter: none") from e
        if len(changes) < 2:
            return float("nan")
        return (changes[-1] - changes[0]) / (len(changes) - 1)

    def _next_tick(self) -> tuple[list[float], list[float]]:
        """Poll until every GPU's counter has changed once: (each counter [J], each change's time [s])."""
        last = self._energies_j()
        values, times = list(last), [None] * len(last)
        limit = self._clock() + 10 * self.counter_period_s + 1.0
        while any(t is None for t in times):
            self._sleep(TICK_POLL_S)
            now, t = self._energies_j(), self._clock()
            for k, (a, b) in enumerate(zip(last, now)):
                if times[k] is None and a != b:
                    values[k], times[k] = b, t
            if t > limit:
                raise MeterError(f"the energy counter of {self.name} stopped advancing; check the driver, "
                                 "or use meter: none")
        return values, times

    # -- windows ---------------------------------------------------------------------------------
    def begin_window(self) -> None:
        self.sync()
        try:
            if self.align and self.idle_w is None:
                self.idle_power_w(ALIGN_IDLE_S)
            if self.timeline or not self.has_counter:
                self._sampler = _PowerSampler(self._powers_w, self.sample_period_s, self._clock)
                self._sampler.start()
            if self.align:  # the work starts just after a tick (of every metered GPU)
                self._start, self._ticks = self._next_tick()
                self._t0 = self._clock()
            else:
                self._t0 = self._clock()
                self._start = self._energies_j() if self.has_counter else None
        except self.nvml.NVMLError as e:
            self.cancel_window()
            raise self._lost(e) from e

    def _lost(self, e) -> MeterError:
        return MeterError(f"NVML stopped answering for {self.name} ({e}); the sweep stops here, every finished "
                          "window is kept: check the driver, then rerun the same command to resume")

    def cancel_window(self) -> None:
        """Abandon the open window: its sampling thread stops, nothing is returned."""
        sampler, self._sampler = self._sampler, None
        self._t0 = None
        self._start = None
        if sampler is not None:
            sampler.stop(final=False)

    def end_window(self) -> WindowReading:
        t_begin, t_end, end, pad = self._close()
        dt = t_end - t_begin
        sampler, self._sampler = self._sampler, None
        try:
            samples = sampler.stop(since=t_begin, until=t_end) if sampler else []
        except self.nvml.NVMLError as e:
            raise self._lost(e) from e
        timeline = [(t, sum(p)) for t, p in samples] if self.timeline else []
        n = len(samples)
        if self.has_counter:
            return self._counter_reading(end, pad, dt, n, timeline)
        if n < 2:
            return WindowReading(float("nan"), dt, self.method, False,
                                 f"only {n} power sample(s); lengthen the window", n, timeline)
        per_gpu = {u: _integrate([(t, p[k]) for t, p in samples]) for k, u in enumerate(self.uuids)}
        return WindowReading(sum(per_gpu.values()), dt, self.method, True, "", n, timeline, per_gpu)

    def _close(self) -> tuple:
        """Synchronise and read the counters that close the window (waiting for the closing tick when aligned).

        Returns ``(t_begin, t_end, counters [J], padding)``; ``padding`` is ``(head_s, tail_s, padding_s,
        warm_w)`` of an aligned window (each GPU's idle seconds before and after the work, the longest, and
        the warm idle power of each GPU or None), else None. A failure cancels the window.
        """
        try:
            self.sync()
            if self._t0 is None:
                raise MeterError("end_window() called without begin_window(); start a window first")
            t_end = self._clock()
            if not self.align:
                end = self._energies_j() if self.has_counter else None
                t_begin, self._t0 = self._t0, None
                return t_begin, t_end, end, None
            end, t_ticks = self._next_tick()  # the tick that closes the window
            # each GPU's idle time in its counter window: from its start tick to the work, and from
            # the work to its end tick (GPUs' counters tick at their own phases)
            head_s = [self._t0 - a for a in self._ticks]
            tail_s = [b - t_end for b in t_ticks]
            padding_s = max(h + t for h, t in zip(head_s, tail_s))
            warm_w = None
            if self.padding_idle == "warm":  # one more counter step, right after the work: warm idle
                after, t_after = self._next_tick()
                warm_w = [(b - a) / (tb - ta) for a, b, ta, tb in zip(end, after, t_ticks, t_after)]
        except self.nvml.NVMLError as e:
            self.cancel_window()
            raise self._lost(e) from e
        except BaseException:
            self.cancel_window()
            raise
        t_begin, self._t0 = self._t0, None
        return t_begin, t_end, end, (head_s, tail_s, padding_s, warm_w)

    def _counter_reading(self, end: list, pad, dt: float, n: int, timeline: list) -> WindowReading:
        """The window's energy from the counters, less idle power over an aligned window's padding."""
        deltas = [b - a for a, b in zip(self._start, end)]
        per_gpu = dict(zip(self.uuids, deltas))
        if any(d < 0 for d in deltas):
            return WindowReading(float("nan"), dt, self.method, False,
                                 "energy counter went down (driver reload?); window invalid", n, timeline)
        if any(d == 0 for d in deltas):
            warnings.warn(f"zero-energy window of {dt:.3f} s: shorter than the counter period; marked invalid")
            return WindowReading(float("nan"), dt, self.method, False,
                                 "counter did not advance; lengthen min_window_s", n, timeline)
        if pad is None:
            return WindowReading(sum(per_gpu.values()), dt, self.method, True, "", n, timeline, per_gpu, 0.0)
        if not self.idle_w == self.idle_w:
            return WindowReading(float("nan"), dt, self.method, False,
                                 "idle power unknown: cannot subtract the padding to the counter tick; "
                                 "check the driver, or rerun", n, timeline)
        head_s, tail_s, padding_s, warm_w = pad
        idle = self.idle_gpu_w or [self.idle_w / len(deltas)] * len(deltas)
        tail_w = idle
        if warm_w is not None and all(w >= 0 for w in warm_w):
            tail_w = warm_w
        which = "warm" if tail_w is warm_w else "cold"
        per_gpu = {u: d - w * h - wt * t for (u, d), w, wt, h, t in zip(per_gpu.items(), idle, tail_w, head_s, tail_s)}
        return WindowReading(sum(per_gpu.values()), dt, self.method, True, "", n, timeline, per_gpu,
                             padding_s, which, float(sum(tail_w)))

    def check_exclusive(self) -> None:
        """Refuse a MIG slice, or a GPU another process is computing on (its energy would be counted)."""
        self.device.check_exclusive()

    def idle_power_w(self, duration_s: float = 5.0) -> float:
        """Board power at idle [W] over ``duration_s``, from counter tick to counter tick where there is
        a counter; kept as the idle power that aligned windows subtract."""
        self.sync()
        if self.has_counter:
            try:
                e0, t0 = self._next_tick()
                self._sleep(duration_s)
                e1, t1 = self._next_tick()
            except self.nvml.NVMLError as e:
                raise self._lost(e) from e
            per_gpu = [(b - a) / (tb - ta) for a, b, ta, tb in zip(e0, e1, t0, t1)]
            if any(w < 0 for w in per_gpu):  # the counter went down (driver reload)
                self.idle_w = float("nan")
                return self.idle_w
            self.idle_gpu_w = per_gpu
            self.idle_w = sum(per_gpu)
            return self.idle_w
        self.begin_window()
        self._sleep(duration_s)
        r = self.end_window()
        return r.energy_j / r.duration_s if r.valid else float("nan")

    def info(self) -> dict:
        """The method, the GPUs, the counter period, the end padding's idle power, and the device's state."""
        return {"meter": self.method, **self.device.identity(), "counter_period_s": self.counter_period_s,
                "padding_idle": (("warm: power over the counter step right after each window's work" if
                                  self.padding_idle == "warm" else "cold: idle power measured before any work")
                                 if self.align else "none (windows not aligned)"),
                **self.device.state()}

    def close(self) -> None:
        self.cancel_window()
        self.device.close()


class _PowerSampler:
    """Samples a power reader (each GPU's W) in a daemon thread; ``stop()`` returns (t [s], [W, ...]) pairs."""

    def __init__(self, read: Callable[[], float], period_s: float, clock: Callable[[], float] = time.perf_counter):
        self.read = read
        self.period_s = period_s
        self.samples: list = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._t0 = 0.0
        self._clock = clock  # the meter's clock: the window's start and end are read on it

    def start(self):
        self._t0 = self._clock()
        self.samples.append((0.0, self.read()))
        self._thread.start()

    def _run(self):
        while not self._stop.wait(self.period_s):
            self.samples.append((self._clock() - self._t0, self.read()))

    def stop(self, final: bool = True, since: float | None = None, until: float | None = None) -> list:
        """Stop the thread (always); with ``final``, take one last sample first.

        ``since``/``until`` (values of the meter's clock, the window's start and end): the samples are
        cut to the window, the first stamped at its start and the last at its end, so that the integral
        spans the window's duration however late the thread starts or is joined (on a loaded machine
        either can lag by tens of ms).
        """
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()
        if final:
            self.samples.append((self._clock() - self._t0, self.read()))
            if since is not None and until is not None and until > since:
                start, end = since - self._t0, until - self._t0
                inner = [(t - start, p) for t, p in self.samples[1:-1] if start < t < end]
                self.samples = [(0.0, self.samples[0][1])] + inner + [(end - start, self.samples[-1][1])]
        return self.samples


def _integrate(samples: list[tuple[float, float]]) -> float:
    """Trapezoidal integral of (t [s], P [W]) samples [J]."""
    return sum((t1 - t0) * (p0 + p1) / 2.0 for (t0, p0), (t1, p1) in zip(samples, samples[1:]))


TICK_POLL_S = 0.0005
"""How often an aligned window polls the counter for its tick [s]."""
ALIGN_IDLE_S = 1.0
"""Idle power is measured over this long before the first aligned window when not measured before [s]."""
