"""Energy meters: the GPU device apart from the window protocol (Zeus's split of device and monitor).

- :mod:`~energykit.meters.base`: the interface (:class:`Meter`: begin/end/cancel a window), its
  :class:`WindowReading` (SI units), the :class:`NullMeter` (durations only, with a warning);
- :mod:`~energykit.meters.device`: :class:`NvmlDevice`, every NVML call (energy counter, power, name, UUID,
  MIG and busy-GPU checks, driver, limits, clocks) and the root-only setters (power limit, locked clocks)
  that the kit never calls on its own;
- :mod:`~energykit.meters.nvml`: :class:`NvmlMeter`, the window protocol over a device: alignment to the
  counter's ticks, the end padding's idle power, the power sampling thread;
- :mod:`~energykit.meters.cpu`: :class:`ProcessCpuMeter`, a CPU-time proxy where there is no energy counter.

:func:`make_meter` builds one by name (:data:`METERS`). NVML's vendor units (mJ, mW) are converted to SI in
the device and nowhere else.
"""

from __future__ import annotations

from ..errors import MeterError
from .base import COUNTER, NONE, PADDING_IDLES, POWER_AVERAGE, POWER_INSTANT, Meter, NullMeter, WindowReading
from .cpu import PROCESS_CPU, ProcessCpuMeter, process_cpu_s
from .device import NvmlDevice, visible_device, visible_devices
from .nvml import ALIGN_IDLE_S, TICK_POLL_S, NvmlMeter

__all__ = ["COUNTER", "POWER_INSTANT", "POWER_AVERAGE", "NONE", "WindowReading", "Meter", "NullMeter",
           "visible_devices", "visible_device", "NvmlDevice", "NvmlMeter", "METERS", "make_meter", "TICK_POLL_S",
           "ALIGN_IDLE_S", "PADDING_IDLES", "PROCESS_CPU", "ProcessCpuMeter", "process_cpu_s"]

METERS = ("nvml", "none", "process_cpu")
"""The meters :func:`make_meter` builds, by name."""


def make_meter(name: str, sync=None, **kwargs) -> Meter:
    """A meter by name: ``"nvml"``, ``"none"`` or ``"process_cpu"`` (a CPU-time proxy, no hardware energy)."""
    if name == "nvml":
        return NvmlMeter(sync=sync, **kwargs)
    if name == "none":
        return NullMeter(sync=sync)
    if name == "process_cpu":
        return ProcessCpuMeter(sync=sync, **kwargs)
    raise MeterError(f"unknown meter {name!r}; use one of {', '.join(METERS)}")
