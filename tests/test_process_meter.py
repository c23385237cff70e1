"""The process CPU-time proxy meter (``meter: process_cpu``): CPU seconds × a stated power, from /proc."""

import subprocess
import sys
import time

import pytest

from energykit.errors import MeterError
from energykit.meters import PROCESS_CPU, ProcessCpuMeter, make_meter, process_cpu_s

BUSY = "import time\nt = time.process_time()\nwhile time.process_time() - t < {s}: pass\n"


def test_a_busy_child_is_counted_in_its_parent_and_scaled_by_the_stated_power():
    # the metered process is a shell whose child burns 0.5 s of CPU: the meter follows descendants
    parent = subprocess.Popen(["bash", "-c", f"sleep 0.3; {sys.executable} -c '{BUSY.format(s=0.5)}'; sleep 30"])
    try:
        meter = make_meter("process_cpu", pid=parent.pid, core_power_w=20.0)
        meter.begin_window()
        time.sleep(2.0)
        r = meter.end_window()
    finally:
        parent.kill()
        parent.wait()
    assert r.method == PROCESS_CPU and r.valid
    assert 0.4 * 20.0 <= r.energy_j <= 0.8 * 20.0  # 0.5 s of CPU (± ticks and interpreter start) × 20 W
    assert "proxy" in meter.info()["note"]


def test_an_idle_process_gives_an_invalid_window_never_a_silent_zero():
    p = subprocess.Popen(["sleep", "30"])
    try:
        meter = ProcessCpuMeter(p.pid, 10.0)
        meter.begin_window()
        time.sleep(0.1)
        r = meter.end_window()
    finally:
        p.kill()
        p.wait()
    assert not r.valid and "no CPU tick" in r.reason


def test_a_missing_process_or_a_bad_power_is_one_line():
    p = subprocess.Popen(["true"])
    p.wait()
    with pytest.raises(MeterError, match=rf"/proc/{p.pid}/stat"):
        ProcessCpuMeter(p.pid)
    with pytest.raises(MeterError, match="core_power_w -1"):
        ProcessCpuMeter(1, -1)


def test_own_cpu_time_matches_the_interpreter():
    import os
    t0, c0 = time.process_time(), process_cpu_s(os.getpid())
    x = 0
    while time.process_time() - t0 < 0.3:
        x += 1
    assert abs((process_cpu_s(os.getpid()) - c0) - (time.process_time() - t0)) < 0.05
