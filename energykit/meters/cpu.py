"""A CPU-time proxy meter (issue 28) for machines with no GPU and no RAPL: CPU seconds × a stated power.

Not measured joules: every reading's method (:data:`PROCESS_CPU`) and the meter's ``info`` say so. It exercises
the pipeline (and the fit's shape) where no energy counter exists.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from ..errors import MeterError
from .base import Meter, WindowReading

__all__ = ["PROCESS_CPU", "process_cpu_s", "ProcessCpuMeter"]

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
