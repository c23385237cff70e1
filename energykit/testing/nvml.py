"""A counter-driven fake of ``pynvml`` (nvidia-ml-py): the API :mod:`energykit.meters` calls, on a clock.

An energy counter that advances in steps of ``counter_period_s`` at a constant power, optionally missing,
optionally going down; several GPUs at their own phases; or no GPU at all. :func:`fake_api_names` lists what
it fakes, so a test can check each name exists in the real module.

The setters (power limit, locked GPU clocks) follow nvidia-ml-py 13.615.71's ``pynvml.py``: each passes its
arguments through ``ctypes.c_uint`` (a float raises ``TypeError``) and raises the ``NVMLError`` subclass of the
return code (``_extractNVMLErrorsAsClasses``: ``NVML_ERROR_NO_PERMISSION`` = 4 → ``NVMLError_NoPermission``,
``NVML_ERROR_INVALID_ARGUMENT`` = 2 → ``NVMLError_InvalidArgument``); NVML's API reference gives the codes:
no permission unless root, an invalid argument for a limit outside
``nvmlDeviceGetPowerManagementLimitConstraints`` (mW) or locked clocks with min > max.
"""

from __future__ import annotations

import ctypes
import time
import types
from dataclasses import dataclass

__all__ = ["FakeNVMLError", "FakeNVMLErrorNotSupported", "FakeNVMLErrorNoPermission", "FakeNVMLErrorInvalidArgument",
           "FakeNvml", "fake_api_names"]


class FakeNVMLError(Exception):
    """Stands for ``pynvml.NVMLError``."""


class FakeNVMLErrorNotSupported(FakeNVMLError):
    """Stands for ``pynvml.NVMLError_NotSupported``."""


class FakeNVMLErrorNoPermission(FakeNVMLError):
    """Stands for ``pynvml.NVMLError_NoPermission`` (a setter called without root)."""


class FakeNVMLErrorInvalidArgument(FakeNVMLError):
    """Stands for ``pynvml.NVMLError_InvalidArgument``."""


def _c_uint(value) -> int:
    """What ``ctypes.c_uint(value)`` passes to NVML: ``TypeError`` for a non-integer, wrapped modulo 2**32."""
    return ctypes.c_uint(value).value


@dataclass
class _FieldValue:
    nvmlReturn: int
    value: types.SimpleNamespace


class FakeNvml:
    """Counter-driven fake of ``pynvml``.

    Parameters
    ----------
    power_w : float or list of float
        Constant board power [W]; a list gives each GPU its own.
    counter_period_s : float
        The energy counter advances every this many seconds (0.1 on an H200).
    has_counter : bool
        False: ``nvmlDeviceGetTotalEnergyConsumption`` raises NotSupported (fallback path).
    counter_drop_after : int, optional
        After this many counter reads the counter goes back to zero (driver reload).
    gpus : int
        Number of GPUs; 0 makes ``nvmlInit`` fail as on a machine without a driver.
    counter_phase_s : float or list of float
        When each GPU's counter ticks within its period [s] (GPUs tick at their own phases).
    root : bool
        Whether the setters are allowed (NVML refuses them to other users with ``NVMLError_NoPermission``).
    power_limit_range_w : tuple of float
        ``(min, max)`` power limit the GPUs accept [W] (an H200 SXM: 200-700 W).
    """

    NVMLError = FakeNVMLError
    NVMLError_NotSupported = FakeNVMLErrorNotSupported
    NVMLError_NoPermission = FakeNVMLErrorNoPermission
    NVMLError_InvalidArgument = FakeNVMLErrorInvalidArgument
    NVML_SUCCESS = 0
    NVML_ERROR_INVALID_ARGUMENT = 2
    NVML_ERROR_NO_PERMISSION = 4
    NVML_ERROR_NOT_SUPPORTED = 3
    NVML_FI_DEV_POWER_INSTANT = 186
    NVML_CLOCK_SM = 1
    NVML_CLOCK_MEM = 2
    NVML_TEMPERATURE_GPU = 0

    def __init__(self, power_w=300.0, counter_period_s=0.1, has_counter=True, counter_drop_after=None, gpus=1,
                 instant_field=True, clock=time.perf_counter, counter_phase_s=0.0, root=False,
                 power_limit_range_w=(200.0, 700.0)):
        self.power_w = power_w
        self.counter_period_s = counter_period_s
        self.has_counter = has_counter
        self.counter_drop_after = counter_drop_after
        self.gpus = gpus
        self.instant_field = instant_field
        self.clock = clock
        self.counter_phase_s = counter_phase_s
        self.t0 = clock()
        self._energy = {}  # handle index -> (t [s since t0], energy [J] at t, energy [J] at the last tick)
        self.calls: list[str] = []
        self.counter_reads = 0
        self.initialised = False
        self.busy_pids: dict = {}
        self.mig = False
        self.root = root
        self.limit_range_mw = tuple(int(w * 1000) for w in power_limit_range_w)
        self.limit_mw = self.limit_range_mw[1]
        self.locked_clocks_mhz = None  # (min, max) while locked

    def _log(self, name):
        self.calls.append(name)

    def nvmlInit(self):
        self._log("nvmlInit")
        if self.gpus == 0:
            raise FakeNVMLError("Driver Not Loaded")
        self.initialised = True

    def nvmlShutdown(self):
        self._log("nvmlShutdown")
        self.initialised = False

    def nvmlDeviceGetCount(self):
        self._log("nvmlDeviceGetCount")
        return self.gpus

    def nvmlDeviceGetHandleByIndex(self, index):
        self._log("nvmlDeviceGetHandleByIndex")
        if index >= self.gpus:
            raise FakeNVMLError("Invalid Argument")
        return ("handle", index)

    def nvmlDeviceGetHandleByUUID(self, uuid):
        self._log("nvmlDeviceGetHandleByUUID")
        if not str(uuid).startswith("GPU-fake-"):
            raise FakeNVMLError("Not Found")
        return ("handle", int(str(uuid).rsplit("-", 1)[1]))

    def _power(self, handle) -> float:
        return self.power_w[handle[1]] if isinstance(self.power_w, (list, tuple)) else self.power_w

    def nvmlDeviceGetUUID(self, handle):
        return f"GPU-fake-{handle[1]}"

    def nvmlDeviceGetName(self, handle):
        return "Fake H200"

    def nvmlDeviceGetTotalEnergyConsumption(self, handle):
        """Energy since 'driver load' [mJ], advancing in steps of ``counter_period_s``."""
        self._log("nvmlDeviceGetTotalEnergyConsumption")
        if not self.has_counter:
            raise FakeNVMLErrorNotSupported("Not Supported")
        self.counter_reads += 1
        if self.counter_drop_after is not None and self.counter_reads > self.counter_drop_after:
            self.t0 = self.clock()  # driver reload: the counter starts from zero again
            self.counter_drop_after = None
            self._energy = {}
        return int(self._advance(handle)[2] * 1000) + 10_000_000

    def _advance(self, handle):
        """Integrate this GPU's power up to now; the counter shows the energy at the last tick."""
        now = self.clock() - self.t0
        t, e, at_tick = self._energy.get(handle[1], (0.0, 0.0, 0.0))
        if now > t:
            p = self._power(handle)
            phase = (self.counter_phase_s[handle[1]] if isinstance(self.counter_phase_s, (list, tuple))
                     else self.counter_phase_s)
            tick = int((now - phase) / self.counter_period_s) * self.counter_period_s + phase
            if tick > t:
                at_tick = e + p * (tick - t)
            e += p * (now - t)
            t = now
        self._energy[handle[1]] = (t, e, at_tick)
        return self._energy[handle[1]]

    def set_power(self, power_w) -> None:
        """Change the board power from now on (what was drawn so far is integrated first)."""
        for i in range(max(self.gpus, 1)):
            self._advance(("handle", i))
        self.power_w = power_w

    def nvmlDeviceGetPowerUsage(self, handle):
        """Average power [mW]."""
        self._log("nvmlDeviceGetPowerUsage")
        return int(self._power(handle) * 1000)

    def nvmlDeviceGetFieldValues(self, handle, field_ids):
        self._log("nvmlDeviceGetFieldValues")
        out = []
        for fid in field_ids:
            ok = fid == self.NVML_FI_DEV_POWER_INSTANT and self.instant_field
            out.append(_FieldValue(self.NVML_SUCCESS if ok else self.NVML_ERROR_NOT_SUPPORTED,
                                   types.SimpleNamespace(uiVal=int(self._power(handle) * 1000) if ok else 0)))
        return out

    def nvmlDeviceGetComputeRunningProcesses(self, handle):
        """Processes computing on the GPU: ``busy_pids`` (a dict index -> pids) set by a test."""
        return [types.SimpleNamespace(pid=pid, usedGpuMemory=1 << 30) for pid in self.busy_pids.get(handle[1], [])]

    def nvmlDeviceGetMigMode(self, handle):
        """(current, pending) MIG mode; ``mig`` set by a test."""
        return (1, 1) if self.mig else (0, 0)

    def nvmlSystemGetDriverVersion(self):
        return "580.159.04"

    def nvmlDeviceGetEnforcedPowerLimit(self, handle):
        return self.limit_mw

    def nvmlDeviceGetClockInfo(self, handle, clock_type):
        if clock_type == self.NVML_CLOCK_SM:
            return min(1980, self.locked_clocks_mhz[1]) if self.locked_clocks_mhz else 1980
        return 3201

    # -- setters: root only ----------------------------------------------------------------------------
    def _check_root(self):
        if not self.root:
            raise FakeNVMLErrorNoPermission("Insufficient Permissions")

    def nvmlDeviceGetPowerManagementLimit(self, handle):
        """The power limit set [mW]."""
        return self.limit_mw

    def nvmlDeviceGetPowerManagementLimitConstraints(self, handle):
        """``[min, max]`` power limit [mW]."""
        return list(self.limit_range_mw)

    def nvmlDeviceSetPowerManagementLimit(self, handle, limit):
        """Set the power limit [mW]."""
        self._log("nvmlDeviceSetPowerManagementLimit")
        limit = _c_uint(limit)
        self._check_root()
        if not self.limit_range_mw[0] <= limit <= self.limit_range_mw[1]:
            raise FakeNVMLErrorInvalidArgument("Invalid Argument")
        self.limit_mw = limit

    def nvmlDeviceSetGpuLockedClocks(self, handle, minGpuClockMHz, maxGpuClockMHz):
        """Lock the graphics clock to [min, max] MHz."""
        self._log("nvmlDeviceSetGpuLockedClocks")
        lo, hi = _c_uint(minGpuClockMHz), _c_uint(maxGpuClockMHz)
        self._check_root()
        if lo > hi:
            raise FakeNVMLErrorInvalidArgument("Invalid Argument")
        self.locked_clocks_mhz = (lo, hi)

    def nvmlDeviceResetGpuLockedClocks(self, handle):
        """Let the graphics clock float again."""
        self._log("nvmlDeviceResetGpuLockedClocks")
        self._check_root()
        self.locked_clocks_mhz = None

    def nvmlDeviceGetTemperature(self, handle, sensor):
        return 35


def fake_api_names() -> list[str]:
    """Names of the ``pynvml`` API that :class:`FakeNvml` fakes."""
    return [n for n in dir(FakeNvml) if n.startswith(("nvml", "NVML")) and not n.startswith("NVMLError")]
