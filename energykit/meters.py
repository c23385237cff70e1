"""Energy meters: NVML (counter, or power integration where there is no counter) and a null meter.

A meter measures *windows*: :meth:`Meter.begin_window` → work → :meth:`Meter.end_window`, which
returns a :class:`WindowReading`. NVML's vendor units (mJ, mW) are converted to SI here and nowhere
else. A window whose counter went down (driver reload) or that holds too few power samples is
flagged invalid with a reason; it is never stored as zero.
"""

from __future__ import annotations

import os
import threading
import time
import warnings
from dataclasses import dataclass, field
from typing import Callable

from .errors import MeterError

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


def _pynvml():
    try:
        import pynvml
    except ImportError as e:  # nvidia-ml-py is a core dependency; this only triggers in broken installs
        raise MeterError("the pynvml module is missing; install nvidia-ml-py (pip install nvidia-ml-py)") from e
    return pynvml


def visible_device(env: str | None = None) -> str | int:
    """The GPU that CUDA device 0 is, from ``CUDA_VISIBLE_DEVICES``: an NVML index or a UUID."""
    env = os.environ.get("CUDA_VISIBLE_DEVICES") if env is None else env
    if env is None or env.strip() == "":
        return 0
    first = env.split(",")[0].strip()
    if first.isdigit():
        return int(first)
    if first.startswith(("GPU-", "MIG-")):
        return first
    raise MeterError(f"CUDA_VISIBLE_DEVICES={env!r}: cannot tell which GPU to meter; use an index or a GPU UUID")


class NvmlMeter(Meter):
    """NVML meter of one GPU, identified by UUID.

    Uses the total-energy counter (``nvmlDeviceGetTotalEnergyConsumption``, mJ since driver load)
    where the GPU has one, else integrates power: the instant field ``NVML_FI_DEV_POWER_INSTANT``
    where the driver has it, else ``nvmlDeviceGetPowerUsage`` (a 1 s average on Hopper). The method
    is recorded on every window.

    Parameters
    ----------
    device : int or str, optional
        NVML index or GPU UUID; by default the first GPU of ``CUDA_VISIBLE_DEVICES``.
    sync : callable, optional
        Synchronises the device (e.g. ``torch.cuda.synchronize``) before each counter read.
    timeline : bool
        Sample power in a thread during every window and keep the (t, W) pairs.
    sample_period_s : float
        Power sampling period [s].
    probe_counter_s : float
        How long to poll the counter at start to measure its update period [s].
    """

    measures_energy = True

    def __init__(self, device=None, sync=None, timeline=False, sample_period_s=0.01, probe_counter_s=1.5):
        super().__init__(sync)
        self.nvml = nv = _pynvml()
        try:
            nv.nvmlInit()
        except nv.NVMLError as e:
            raise MeterError(f"NVML cannot start ({e}); is an NVIDIA driver installed? use meter: none to skip energy") from e
        device = visible_device() if device is None else device
        try:
            if isinstance(device, str):
                self.handle = nv.nvmlDeviceGetHandleByUUID(device)
            else:
                count = nv.nvmlDeviceGetCount()
                if device >= count:
                    raise MeterError(f"GPU index {device} does not exist; NVML sees {count} GPU(s)")
                self.handle = nv.nvmlDeviceGetHandleByIndex(device)
            self.uuid = _text(nv.nvmlDeviceGetUUID(self.handle))
            self.name = _text(nv.nvmlDeviceGetName(self.handle))
        except nv.NVMLError as e:
            raise MeterError(f"NVML cannot open GPU {device!r} ({e}); check CUDA_VISIBLE_DEVICES") from e
        self.timeline = timeline
        self.sample_period_s = sample_period_s
        self.has_counter = self._counter_supported()
        self.instant_field = self._instant_supported()
        if self.has_counter:
            self.method = COUNTER
            self.counter_period_s = self._probe_counter(probe_counter_s)
        else:
            self.method = POWER_INSTANT if self.instant_field else POWER_AVERAGE
            self.counter_period_s = float("nan")
            warnings.warn(
                f"GPU {self.name} has no energy counter; integrating {'instant' if self.instant_field else 'average'} "
                "power instead (recorded as the window method)",
                stacklevel=2,
            )
        self._start_mj = None
        self._sampler = None

    # -- device boundary: vendor units in, SI out ---------------------------------------------
    def _energy_j(self) -> float:
        return self.nvml.nvmlDeviceGetTotalEnergyConsumption(self.handle) / 1000.0  # mJ -> J

    def _power_w(self) -> float:
        nv = self.nvml
        if self.instant_field:
            fv = nv.nvmlDeviceGetFieldValues(self.handle, [nv.NVML_FI_DEV_POWER_INSTANT])[0]
            if fv.nvmlReturn == nv.NVML_SUCCESS:
                return fv.value.uiVal / 1000.0  # mW -> W
        return nv.nvmlDeviceGetPowerUsage(self.handle) / 1000.0  # mW -> W

    def _counter_supported(self) -> bool:
        try:
            self._energy_j()
            return True
        except self.nvml.NVMLError:
            return False

    def _instant_supported(self) -> bool:
        nv = self.nvml
        field_id = getattr(nv, "NVML_FI_DEV_POWER_INSTANT", None)
        if field_id is None:
            return False
        try:
            fv = nv.nvmlDeviceGetFieldValues(self.handle, [field_id])[0]
            return fv.nvmlReturn == nv.NVML_SUCCESS
        except nv.NVMLError:
            return False

    def _probe_counter(self, duration_s: float) -> float:
        """Median time between counter changes [s], polled for ``duration_s``."""
        changes = []
        last = self._energy_j()
        t_end = time.perf_counter() + duration_s
        while time.perf_counter() < t_end:
            v = self._energy_j()
            if v != last:
                changes.append(time.perf_counter())
                last = v
            time.sleep(0.002)
        if len(changes) < 2:
            return float("nan")
        gaps = sorted(b - a for a, b in zip(changes, changes[1:]))
        return gaps[len(gaps) // 2]

    # -- windows ---------------------------------------------------------------------------------
    def begin_window(self) -> None:
        self.sync()
        if self.timeline or not self.has_counter:
            self._sampler = _PowerSampler(self._power_w, self.sample_period_s)
            self._sampler.start()
        self._t0 = time.perf_counter()
        self._start_j = self._energy_j() if self.has_counter else None

    def end_window(self) -> WindowReading:
        self.sync()
        if self._t0 is None:
            raise MeterError("end_window() called without begin_window(); start a window first")
        end_j = self._energy_j() if self.has_counter else None
        dt = time.perf_counter() - self._t0
        self._t0 = None
        samples = self._sampler.stop() if self._sampler else []
        self._sampler = None
        timeline = samples if self.timeline else []
        if self.has_counter:
            delta = end_j - self._start_j
            if delta < 0:
                return WindowReading(float("nan"), dt, self.method, False,
                                     "energy counter went down (driver reload?); window invalid", len(samples), timeline)
            if delta == 0:
                warnings.warn(f"zero-energy window of {dt:.3f} s: shorter than the counter period; marked invalid")
                return WindowReading(float("nan"), dt, self.method, False,
                                     "counter did not advance; lengthen min_window_s", len(samples), timeline)
            return WindowReading(delta, dt, self.method, True, "", len(samples), timeline)
        if len(samples) < 2:
            return WindowReading(float("nan"), dt, self.method, False,
                                 f"only {len(samples)} power sample(s); lengthen the window", len(samples), timeline)
        return WindowReading(_integrate(samples), dt, self.method, True, "", len(samples), timeline)

    def idle_power_w(self, duration_s: float = 5.0) -> float:
        self.begin_window()
        time.sleep(duration_s)
        r = self.end_window()
        return r.energy_j / r.duration_s if r.valid else float("nan")

    def info(self) -> dict:
        nv, h = self.nvml, self.handle
        out = {"meter": self.method, "gpu_name": self.name, "gpu_uuid": self.uuid,
               "counter_period_s": self.counter_period_s}
        probes = {
            "driver_version": lambda: _text(nv.nvmlSystemGetDriverVersion()),
            "power_limit_w": lambda: nv.nvmlDeviceGetEnforcedPowerLimit(h) / 1000.0,
            "sm_clock_mhz": lambda: nv.nvmlDeviceGetClockInfo(h, nv.NVML_CLOCK_SM),
            "mem_clock_mhz": lambda: nv.nvmlDeviceGetClockInfo(h, nv.NVML_CLOCK_MEM),
            "temperature_c": lambda: nv.nvmlDeviceGetTemperature(h, nv.NVML_TEMPERATURE_GPU),
        }
        for key, probe in probes.items():
            try:
                out[key] = probe()
            except nv.NVMLError as e:
                out[key] = f"unavailable ({e})"
        return out

    def close(self) -> None:
        if self._sampler:
            self._sampler.stop()
        try:
            self.nvml.nvmlShutdown()
        except self.nvml.NVMLError:
            pass


class _PowerSampler:
    """Samples a power reader [W] in a daemon thread; ``stop()`` returns (t [s], W) pairs."""

    def __init__(self, read: Callable[[], float], period_s: float):
        self.read = read
        self.period_s = period_s
        self.samples: list[tuple[float, float]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._t0 = 0.0

    def start(self):
        self._t0 = time.perf_counter()
        self.samples.append((0.0, self.read()))
        self._thread.start()

    def _run(self):
        while not self._stop.wait(self.period_s):
            self.samples.append((time.perf_counter() - self._t0, self.read()))

    def stop(self) -> list[tuple[float, float]]:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()
        self.samples.append((time.perf_counter() - self._t0, self.read()))
        return self.samples


def _integrate(samples: list[tuple[float, float]]) -> float:
    """Trapezoidal integral of (t [s], P [W]) samples [J]."""
    return sum((t1 - t0) * (p0 + p1) / 2.0 for (t0, p0), (t1, p1) in zip(samples, samples[1:]))


def _text(v) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


METERS = ("nvml", "none")


def make_meter(name: str, sync=None, **kwargs) -> Meter:
    """A meter by name: ``"nvml"`` or ``"none"``."""
    if name == "nvml":
        return NvmlMeter(sync=sync, **kwargs)
    if name == "none":
        return NullMeter(sync=sync)
    raise MeterError(f"unknown meter {name!r}; use one of {', '.join(METERS)}")

