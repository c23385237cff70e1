"""Energy meters: NVML (counter, or power integration where there is no counter) and a null meter.

A meter measures *windows*: :meth:`Meter.begin_window` → work → :meth:`Meter.end_window`, which
returns a :class:`WindowReading`.

NVML's energy counter advances in steps (every 100 ms on an H100/H200), so a window that starts and
ends at arbitrary phases of it is off by up to one step at each end. The NVML meter therefore aligns
its windows to the counter (``align``): it begins the work just after a counter tick (reading the
counter as it changes), and at the end synchronises the device, waits for the next tick and subtracts
idle power × that padding. What is left is the idle-power estimate's error over the padding. NVML's vendor units (mJ, mW) are converted to SI here and nowhere
else. A window whose counter went down (driver reload) or that holds too few power samples is
flagged invalid with a reason; it is never stored as zero.
"""

from __future__ import annotations

import os
import threading
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from .errors import MeterError

__all__ = ["COUNTER", "POWER_INSTANT", "POWER_AVERAGE", "NONE", "WindowReading", "Meter", "NullMeter",
           "visible_devices", "visible_device", "NvmlMeter", "METERS", "make_meter", "TICK_POLL_S",
           "ALIGN_IDLE_S", "PROCESS_CPU", "ProcessCpuMeter", "process_cpu_s"]

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

    def __add__(self, other: "WindowReading") -> "WindowReading":
        """Two consecutive windows of one measurement as one: energies, durations and samples add."""
        gpus = {u: self.per_gpu_j.get(u, 0.0) + other.per_gpu_j.get(u, 0.0) for u in {**self.per_gpu_j, **other.per_gpu_j}}
        return WindowReading(self.energy_j + other.energy_j, self.duration_s + other.duration_s, self.method,
                             self.valid and other.valid, "; ".join(r for r in (self.reason, other.reason) if r),
                             self.samples + other.samples, self.timeline + other.timeline, gpus,
                             self.padding_s + other.padding_s)


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


def _pynvml():
    try:
        import pynvml
    except ImportError as e:  # nvidia-ml-py is a core dependency; this only triggers in broken installs
        raise MeterError("the pynvml module is missing; install nvidia-ml-py (pip install nvidia-ml-py)") from e
    return pynvml


def visible_devices(env: str | None = None, count: int = 1) -> list[str | int]:
    """The first ``count`` GPUs of ``CUDA_VISIBLE_DEVICES`` (NVML indices or UUIDs), in CUDA order."""
    env = os.environ.get("CUDA_VISIBLE_DEVICES") if env is None else env
    if env is None:
        return list(range(count))
    if env.strip() == "":
        raise MeterError('CUDA_VISIBLE_DEVICES="" hides every GPU, so the engine runs on the CPU; '
                         "unset it to meter a GPU, or use meter: none")
    out = []
    for item in (x.strip() for x in env.split(",")[:count]):
        if item.isdigit():
            out.append(int(item))
        elif item.startswith(("GPU-", "MIG-")):
            out.append(item)
        else:
            raise MeterError(f"CUDA_VISIBLE_DEVICES={env!r}: cannot tell which GPU to meter; use an index or a GPU UUID")
    if len(out) < count:
        raise MeterError(f"the engine uses {count} GPUs but CUDA_VISIBLE_DEVICES={env!r} shows {len(out)}; "
                         "make that many visible")
    return out


def visible_device(env: str | None = None) -> str | int:
    """The GPU that CUDA device 0 is, from ``CUDA_VISIBLE_DEVICES``: an NVML index or a UUID."""
    return visible_devices(env, 1)[0]


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
    clock, sleep : callable
        Time source [s] and sleep (tests pass a virtual clock).
    """

    measures_energy = True

    def __init__(self, device=None, sync=None, timeline=False, sample_period_s=0.01, probe_counter_s=1.5, gpus=1,
                 align=True, idle_power_w=None, clock=time.perf_counter, sleep=time.sleep):
        super().__init__(sync)
        self._clock, self._sleep = clock, sleep
        self.idle_w = idle_power_w
        self.idle_gpu_w = None
        """Each GPU's idle power [W], when measured by :meth:`idle_power_w`."""
        self.nvml = nv = _pynvml()
        try:
            nv.nvmlInit()
        except nv.NVMLError as e:
            raise MeterError(f"NVML cannot start ({e}); is an NVIDIA driver installed? use meter: none to skip energy") from e
        if device is None:
            devices = visible_devices(count=gpus)
        else:
            devices = list(device) if isinstance(device, (list, tuple)) else [device]
        self.handles = [self._open(d) for d in devices]
        try:
            self.uuids = [_text(nv.nvmlDeviceGetUUID(h)) for h in self.handles]
            self.names = [_text(nv.nvmlDeviceGetName(h)) for h in self.handles]
        except nv.NVMLError as e:
            raise MeterError(f"NVML cannot read GPU {devices!r} ({e}); check CUDA_VISIBLE_DEVICES") from e
        self.handle, self.uuid, self.name = self.handles[0], self.uuids[0], self.names[0]
        self.timeline = timeline
        self.sample_period_s = sample_period_s
        self.has_counter = self._counter_supported()
        self.instant_field = self._instant_supported()
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

    def _open(self, device):
        nv = self.nvml
        try:
            if isinstance(device, str):
                return nv.nvmlDeviceGetHandleByUUID(device)
            count = nv.nvmlDeviceGetCount()
            if device >= count:
                raise MeterError(f"GPU index {device} does not exist; NVML sees {count} GPU(s)")
            return nv.nvmlDeviceGetHandleByIndex(device)
        except nv.NVMLError as e:
            raise MeterError(f"NVML cannot open GPU {device!r} ({e}); check CUDA_VISIBLE_DEVICES") from e

    # -- device boundary: vendor units in, SI out ---------------------------------------------
    def _energies_j(self) -> list[float]:
        """Each GPU's counter [J]."""
        return [self.nvml.nvmlDeviceGetTotalEnergyConsumption(h) / 1000.0 for h in self.handles]  # mJ -> J

    def _energy_j(self) -> float:
        return sum(self._energies_j())

    def _powers_w(self) -> list[float]:
        nv = self.nvml
        out = []
        for h in self.handles:
            if self.instant_field:
                fv = nv.nvmlDeviceGetFieldValues(h, [nv.NVML_FI_DEV_POWER_INSTANT])[0]
                if fv.nvmlReturn == nv.NVML_SUCCESS:
                    out.append(fv.value.uiVal / 1000.0)  # mW -> W
                    continue
            out.append(nv.nvmlDeviceGetPowerUsage(h) / 1000.0)  # mW -> W
        return out

    def _power_w(self) -> float:
        return sum(self._powers_w())

    def _counter_supported(self) -> bool:
        try:
            self._energies_j()
            return True
        except self.nvml.NVMLError:
            return False

    def _instant_supported(self) -> bool:
        nv = self.nvml
        field_id = getattr(nv, "NVML_FI_DEV_POWER_INSTANT", None)
        if field_id is None:
            return False
        try:
            return all(nv.nvmlDeviceGetFieldValues(h, [field_id])[0].nvmlReturn == nv.NVML_SUCCESS for h in self.handles)
        except nv.NVMLError:
            return False

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
        try:
            self.sync()
            if self._t0 is None:
                raise MeterError("end_window() called without begin_window(); start a window first")
            t_end = self._clock()
            dt = t_end - self._t0
            padding_s = 0.0
            if self.align:  # wait for the tick that closes the window; idle power over the padding is subtracted
                end, t_ticks = self._next_tick()
                # each GPU's idle time in its counter window: from its start tick to the work, and from
                # the work to its end tick (GPUs' counters tick at their own phases)
                idle_s = [(self._t0 - a) + (b - t_end) for a, b in zip(self._ticks, t_ticks)]
                padding_s = max(idle_s)
            else:
                end = self._energies_j() if self.has_counter else None
        except self.nvml.NVMLError as e:
            self.cancel_window()
            raise self._lost(e) from e
        except BaseException:
            self.cancel_window()
            raise
        t_begin, self._t0 = self._t0, None
        sampler, self._sampler = self._sampler, None
        try:
            samples = sampler.stop(since=t_begin, until=t_end) if sampler else []
        except self.nvml.NVMLError as e:
            raise self._lost(e) from e
        timeline = [(t, sum(p)) for t, p in samples] if self.timeline else []
        n = len(samples)
        if self.has_counter:
            deltas = [b - a for a, b in zip(self._start, end)]
            per_gpu = dict(zip(self.uuids, deltas))
            if any(d < 0 for d in deltas):
                return WindowReading(float("nan"), dt, self.method, False,
                                     "energy counter went down (driver reload?); window invalid", n, timeline)
            if any(d == 0 for d in deltas):
                warnings.warn(f"zero-energy window of {dt:.3f} s: shorter than the counter period; marked invalid")
                return WindowReading(float("nan"), dt, self.method, False,
                                     "counter did not advance; lengthen min_window_s", n, timeline)
            if self.align and not self.idle_w == self.idle_w:
                return WindowReading(float("nan"), dt, self.method, False,
                                     "idle power unknown: cannot subtract the padding to the counter tick; "
                                     "check the driver, or rerun", n, timeline)
            if self.align:
                idle = self.idle_gpu_w or [self.idle_w / len(deltas)] * len(deltas)
                per_gpu = {u: d - w * s for (u, d), w, s in zip(per_gpu.items(), idle, idle_s)}
            return WindowReading(sum(per_gpu.values()), dt, self.method, True, "", n, timeline, per_gpu, padding_s)
        if n < 2:
            return WindowReading(float("nan"), dt, self.method, False,
                                 f"only {n} power sample(s); lengthen the window", n, timeline)
        per_gpu = {u: _integrate([(t, p[k]) for t, p in samples]) for k, u in enumerate(self.uuids)}
        return WindowReading(sum(per_gpu.values()), dt, self.method, True, "", n, timeline, per_gpu)

    def check_exclusive(self) -> None:
        """Refuse a MIG slice, or a GPU another process is computing on (its energy would be counted)."""
        nv = self.nvml
        for h, uuid in zip(self.handles, self.uuids):
            if uuid.startswith("MIG-"):
                raise MeterError(f"{uuid} is a MIG slice: its energy counter covers the whole GPU; measure on a whole GPU")
            try:
                current, _pending = nv.nvmlDeviceGetMigMode(h)
            except nv.NVMLError:
                current = 0  # no MIG support on this GPU
            if current:
                raise MeterError(f"GPU {uuid} has MIG enabled: energy cannot be told apart per slice; "
                                 "measure on a GPU with MIG disabled")
            try:
                procs = nv.nvmlDeviceGetComputeRunningProcesses(h)
            except nv.NVMLError:
                continue
            others = sorted({p.pid for p in procs if p.pid != os.getpid()})
            if others:
                raise MeterError(f"GPU {uuid} is in use by process(es) {', '.join(map(str, others))}: their energy "
                                 "would be counted; wait for them or choose a free GPU")

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
        nv, h = self.nvml, self.handle
        out = {"meter": self.method, "gpu_name": self.name, "gpu_uuid": self.uuid, "gpu_uuids": self.uuids,
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
        self.cancel_window()
        try:
            self.nvml.nvmlShutdown()
        except self.nvml.NVMLError:
            pass


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


def _text(v) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


TICK_POLL_S = 0.0005
"""How often an aligned window polls the counter for its tick [s]."""
ALIGN_IDLE_S = 1.0
"""Idle power is measured over this long before the first aligned window when not measured before [s]."""

METERS = ("nvml", "none", "process_cpu")


def make_meter(name: str, sync=None, **kwargs) -> Meter:
    """A meter by name: ``"nvml"``, ``"none"`` or ``"process_cpu"`` (a CPU-time proxy, no hardware energy)."""
    if name == "nvml":
        return NvmlMeter(sync=sync, **kwargs)
    if name == "none":
        return NullMeter(sync=sync)
    if name == "process_cpu":
        return ProcessCpuMeter(sync=sync, **kwargs)
    raise MeterError(f"unknown meter {name!r}; use one of {', '.join(METERS)}")



# --- A CPU-time proxy meter (issue 28): no GPU, no RAPL; kept apart from the NVML meter above. -------------

PROCESS_CPU = "process_cpu_time_x_nominal_power_proxy"
"""The method of :class:`ProcessCpuMeter`'s readings: CPU seconds × a stated power, not measured joules."""


def process_cpu_s(pid: int) -> float:
    """CPU time [s] (user + system) of process ``pid``, its threads and its live descendants, from ``/proc``.

    ``/proc/PID/stat`` fields 14 and 15 (``utime``, ``stime``) are in clock ticks (``SC_CLK_TCK``, 100 Hz on
    Linux); they count every thread of the process. Children that exited and were waited for count in
    fields 16 and 17 (``cutime``, ``cstime``).
    """
    tick = os.sysconf("SC_CLK_TCK")

    def stat(p):
        text = Path(f"/proc/{p}/stat").read_text()
        fields = text[text.rindex(")") + 2:].split()  # after "(comm)": field 3 is fields[0]
        return int(fields[1]), sum(int(x) for x in fields[11:15])  # ppid; utime stime cutime cstime

    try:
        _, total = stat(pid)
    except (OSError, ValueError) as e:
        raise MeterError(f"cannot read /proc/{pid}/stat ({e}); the metered process is gone or not on this "
                         "machine") from None
    try:  # the descendants from each thread's children list (Linux >= 3.5): a few small reads
        seen, todo = {pid}, [pid]
        while todo:
            for task in Path(f"/proc/{todo.pop()}/task").iterdir():
                for child in (task / "children").read_text().split():
                    if int(child) not in seen:
                        seen.add(int(child))
                        todo.append(int(child))
                        try:
                            total += stat(child)[1]
                        except (OSError, ValueError):
                            pass  # exited since: counted in its parent's cutime once waited for
        return total / tick
    except OSError:
        pass  # no children lists (kernel without CONFIG_PROC_CHILDREN): walk every process's parent
    _, total = stat(pid)
    parents = {}
    for d in Path("/proc").iterdir():
        if d.name.isdigit() and int(d.name) != pid:
            try:
                parents[int(d.name)] = stat(d.name)
            except (OSError, ValueError):
                continue
    family, grew = {pid}, True
    while grew:
        grew = False
        for p, (ppid, ticks) in parents.items():
            if ppid in family and p not in family:
                family.add(p)
                total += ticks
                grew = True
    return total / tick


class ProcessCpuMeter(Meter):
    """A proxy for machines with no energy counter: the metered process's CPU time × a stated power.

    Energy of a window = (CPU seconds the process and its descendants used in it) × ``core_power_w``, the
    nominal power of one fully busy core. It measures CPU *time*; the watts are an assumption the user
    states, recorded in every reading's method and in :meth:`info`. Never hardware joules: use it to
    exercise the pipeline (and the fit's shape) where no GPU or RAPL exists, not to report energy.

    Parameters
    ----------
    pid : int
        The process to meter (e.g. the inference server).
    core_power_w : float
        Nominal power of one busy core [W].
    """

    measures_energy = True
    method = PROCESS_CPU

    def __init__(self, pid: int, core_power_w: float = 10.0, sync=None):
        super().__init__(sync)
        if not (isinstance(pid, int) and pid > 0):
            raise MeterError(f"process_cpu meter: pid {pid!r} is not a process id; give the server's pid")
        if not (core_power_w > 0 and core_power_w < 1e4):
            raise MeterError(f"process_cpu meter: core_power_w {core_power_w!r} must be a power in W (0 < P < 1e4)")
        self.pid, self.core_power_w = int(pid), float(core_power_w)
        self.counter_period_s = 1.0 / os.sysconf("SC_CLK_TCK")
        process_cpu_s(self.pid)  # fail now if the process is not there
        self._cpu0 = None

    def begin_window(self) -> None:
        super().begin_window()
        self._cpu0 = process_cpu_s(self.pid)

    def end_window(self) -> WindowReading:
        self.sync()
        if self._t0 is None:
            raise MeterError("end_window() called without begin_window(); start a window first")
        cpu = process_cpu_s(self.pid) - self._cpu0
        dt = time.perf_counter() - self._t0
        self._t0 = self._cpu0 = None
        if cpu < 0:
            return WindowReading(float("nan"), dt, PROCESS_CPU, False, "process CPU time went down (process restarted)")
        valid = cpu > 0
        return WindowReading(cpu * self.core_power_w, dt, PROCESS_CPU, valid,
                             "" if valid else "the process used no CPU tick in the window")

    def cancel_window(self) -> None:
        self._t0 = self._cpu0 = None

    def idle_power_w(self, duration_s: float = 5.0) -> float:
        """The process's CPU time at idle over ``duration_s`` × ``core_power_w`` [W] (proxy)."""
        c0, t0 = process_cpu_s(self.pid), time.perf_counter()
        time.sleep(duration_s)
        return (process_cpu_s(self.pid) - c0) * self.core_power_w / (time.perf_counter() - t0)

    def info(self) -> dict:
        return {"meter": PROCESS_CPU, "pid": self.pid, "core_power_w": self.core_power_w,
                "counter_period_s": self.counter_period_s, "gpu_name": "cpu", "gpu_uuid": "cpu",
                "note": "proxy: CPU seconds of the process x a nominal power per core; not measured joules"}
