"""The GPU device: every NVML call the kit makes, wrapped into typed errors, vendor units in, SI out.

:class:`NvmlDevice` opens the GPUs a meter reads (NVML indices or UUIDs, by default the first of
``CUDA_VISIBLE_DEVICES``) and reads them: the total-energy counter (mJ → J), board power (mW → W, the
instant field where the driver has it), name, UUID, driver, power limit, clocks, temperature; it refuses a
MIG slice or a GPU another process computes on (:meth:`NvmlDevice.check_exclusive`).

It also holds the setters NVML allows — the power limit (``nvmlDeviceSetPowerManagementLimit``) and locked
GPU clocks (``nvmlDeviceSetGpuLockedClocks`` / ``nvmlDeviceResetGpuLockedClocks``) — for a user who means to
measure at a cap or at fixed clocks. They need root (NVML answers ``NVML_ERROR_NO_PERMISSION`` otherwise),
they change the GPU for every process until reset or reboot, and the kit never calls them on its own: a
sweep records the limit and clocks it found (``info()``, in ``provenance.json``). Zeus draws the same line
between its device layer (``zeus/device/gpu/nvidia.py``) and its monitor.
"""

from __future__ import annotations

import os

from ..errors import MeterError

__all__ = ["NvmlDevice", "visible_devices", "visible_device"]


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


def _text(v) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


class NvmlDevice:
    """One or more GPUs read through NVML (``pynvml``, from nvidia-ml-py), identified by UUID.

    Parameters
    ----------
    device : int or str or list, optional
        NVML index(es) or GPU UUID(s); by default the first ``gpus`` GPUs of ``CUDA_VISIBLE_DEVICES``.
    gpus : int
        How many GPUs to open when ``device`` is not given.

    Attributes ``nvml`` (the module), ``handles``, ``uuids``, ``names``; ``handle``, ``uuid``, ``name`` of
    the first GPU. Getters return SI units; ``NVMLError`` of a read goes up to the caller (the window
    protocol turns it into a :class:`~energykit.errors.MeterError` that keeps every finished window).
    """

    def __init__(self, device=None, gpus: int = 1):
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

    # -- reads ----------------------------------------------------------------------------------------
    def energies_j(self) -> list[float]:
        """Each GPU's total-energy counter since driver load [J]."""
        return [self.nvml.nvmlDeviceGetTotalEnergyConsumption(h) / 1000.0 for h in self.handles]  # mJ -> J

    def powers_w(self, instant: bool) -> list[float]:
        """Each GPU's board power [W]: the instant field where ``instant`` and the driver answers it, else
        ``nvmlDeviceGetPowerUsage`` (a 1 s average on Hopper)."""
        nv = self.nvml
        out = []
        for h in self.handles:
            if instant:
                fv = nv.nvmlDeviceGetFieldValues(h, [nv.NVML_FI_DEV_POWER_INSTANT])[0]
                if fv.nvmlReturn == nv.NVML_SUCCESS:
                    out.append(fv.value.uiVal / 1000.0)  # mW -> W
                    continue
            out.append(nv.nvmlDeviceGetPowerUsage(h) / 1000.0)  # mW -> W
        return out

    def counter_supported(self) -> bool:
        """Whether every GPU has the total-energy counter."""
        try:
            self.energies_j()
            return True
        except self.nvml.NVMLError:
            return False

    def instant_supported(self) -> bool:
        """Whether every GPU answers the instant power field ``NVML_FI_DEV_POWER_INSTANT``."""
        nv = self.nvml
        field_id = getattr(nv, "NVML_FI_DEV_POWER_INSTANT", None)
        if field_id is None:
            return False
        try:
            return all(nv.nvmlDeviceGetFieldValues(h, [field_id])[0].nvmlReturn == nv.NVML_SUCCESS for h in self.handles)
        except nv.NVMLError:
            return False

    def identity(self) -> dict:
        """Name and UUID(s) of the GPUs."""
        return {"gpu_name": self.name, "gpu_uuid": self.uuid, "gpu_uuids": self.uuids}

    def state(self) -> dict:
        """Driver, power limit [W], clocks [MHz] and temperature [°C] of the first GPU; an unreadable one says why."""
        nv, h = self.nvml, self.handle
        probes = {
            "driver_version": lambda: _text(nv.nvmlSystemGetDriverVersion()),
            "power_limit_w": lambda: nv.nvmlDeviceGetEnforcedPowerLimit(h) / 1000.0,
            "sm_clock_mhz": lambda: nv.nvmlDeviceGetClockInfo(h, nv.NVML_CLOCK_SM),
            "mem_clock_mhz": lambda: nv.nvmlDeviceGetClockInfo(h, nv.NVML_CLOCK_MEM),
            "temperature_c": lambda: nv.nvmlDeviceGetTemperature(h, nv.NVML_TEMPERATURE_GPU),
        }
        out = {}
        for key, probe in probes.items():
            try:
                out[key] = probe()
            except nv.NVMLError as e:
                out[key] = f"unavailable ({e})"
        return out

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

    # -- setters (root only; never called by the kit on its own) ---------------------------------------
    def power_limit_range_w(self) -> tuple[float, float]:
        """``(min, max)`` power limit each GPU accepts [W] (``nvmlDeviceGetPowerManagementLimitConstraints``)."""
        nv = self.nvml
        try:
            lo, hi = nv.nvmlDeviceGetPowerManagementLimitConstraints(self.handle)
        except nv.NVMLError as e:
            raise MeterError(f"NVML cannot read the power limit range of {self.name} ({e}); "
                             "this GPU may not support power management") from e
        return lo / 1000.0, hi / 1000.0  # mW -> W

    def set_power_limit_w(self, watts: float) -> None:
        """Cap every GPU's board power at ``watts`` [W] (``nvmlDeviceSetPowerManagementLimit``; needs root).

        The limit holds for every process until reset (``nvidia-smi -rpl``) or reboot. Checked against
        :meth:`power_limit_range_w` first, so that a bad value is one line naming the range.
        """
        lo, hi = self.power_limit_range_w()
        if not lo <= watts <= hi:
            raise MeterError(f"power limit {watts!r} W is outside what {self.name} accepts ({lo:g}-{hi:g} W); "
                             "give a value in that range")
        for h, uuid in zip(self.handles, self.uuids):
            self._set(f"set the power limit of {uuid} to {watts:g} W", f"nvidia-smi -i {uuid} -pl {watts:g}",
                      self.nvml.nvmlDeviceSetPowerManagementLimit, h, int(round(watts * 1000)))  # W -> mW

    def lock_gpu_clocks(self, min_mhz: int, max_mhz: int) -> None:
        """Lock every GPU's graphics clock to ``[min_mhz, max_mhz]`` [MHz] (``nvmlDeviceSetGpuLockedClocks``;
        needs root); undone by :meth:`reset_gpu_clocks`."""
        if not (isinstance(min_mhz, int) and isinstance(max_mhz, int) and 0 < min_mhz <= max_mhz):
            raise MeterError(f"locked clocks {min_mhz!r}-{max_mhz!r} MHz: give whole MHz with 0 < min <= max, "
                             "e.g. 1410, 1410")
        for h, uuid in zip(self.handles, self.uuids):
            self._set(f"lock the clocks of {uuid} to {min_mhz}-{max_mhz} MHz",
                      f"nvidia-smi -i {uuid} -lgc {min_mhz},{max_mhz}", self.nvml.nvmlDeviceSetGpuLockedClocks,
                      h, min_mhz, max_mhz)

    def reset_gpu_clocks(self) -> None:
        """Let every GPU's graphics clock float again (``nvmlDeviceResetGpuLockedClocks``; needs root)."""
        for h, uuid in zip(self.handles, self.uuids):
            self._set(f"reset the locked clocks of {uuid}", f"nvidia-smi -i {uuid} -rgc",
                      self.nvml.nvmlDeviceResetGpuLockedClocks, h)

    def _set(self, what: str, shell: str, setter, *args) -> None:
        nv = self.nvml
        try:
            setter(*args)
        except getattr(nv, "NVMLError_NoPermission", ()) as e:
            raise MeterError(f"cannot {what}: NVML needs root for it ({e}); run as root, or `sudo {shell}`") from e
        except nv.NVMLError as e:
            raise MeterError(f"cannot {what} ({e}); check the value against nvidia-smi -q -d POWER,CLOCK") from e

    def close(self) -> None:
        """Shut NVML down (errors ignored: the device may be gone)."""
        try:
            self.nvml.nvmlShutdown()
        except self.nvml.NVMLError:
            pass
