import math
import sys
import time
import warnings

import pytest

from energykit import meters, windows
from energykit.errors import MeterError
from energykit.testing import FakeNvml, fake_api_names


@pytest.fixture
def fake_nvml(monkeypatch):
    def install(**kw):
        fake = FakeNvml(**kw)
        monkeypatch.setitem(sys.modules, "pynvml", fake)
        return fake

    return install


def test_fake_matches_real_pynvml_api():
    import pynvml  # the real nvidia-ml-py module

    missing = [n for n in fake_api_names() if not hasattr(pynvml, n)]
    assert not missing
    assert pynvml.NVML_FI_DEV_POWER_INSTANT == FakeNvml.NVML_FI_DEV_POWER_INSTANT


def test_counter_window_energy_and_period(fake_nvml):
    fake = fake_nvml(power_w=400.0, counter_period_s=0.1)
    synced = []
    m = meters.NvmlMeter(sync=lambda: synced.append(1), probe_counter_s=0.6)
    assert m.method == meters.COUNTER
    assert m.counter_period_s == pytest.approx(0.1, abs=0.03)
    w = windows.measure(m, lambda: time.sleep(0.05), min_window_s=1.0)
    # counter steps of 0.1 s: energy within one step (40 J) of P·t
    assert w.reading.valid
    assert abs(w.reading.energy_j - 400.0 * w.reading.duration_s) <= 40.0 + 1e-6
    assert w.reading.duration_s >= 1.0 and w.iterations >= 2  # the window spans min_window_s, however slow a call
    assert w.energy_j == pytest.approx(w.reading.energy_j / w.iterations)
    assert len(synced) >= 2  # synchronised before each counter read
    assert "nvmlDeviceGetTotalEnergyConsumption" in fake.calls
    info = m.info()
    assert info["gpu_uuid"] == "GPU-fake-0" and info["power_limit_w"] == 700.0


def test_no_counter_falls_back_to_instant_power(fake_nvml):
    fake_nvml(power_w=250.0, has_counter=False)
    with pytest.warns(UserWarning, match="no energy counter"):
        m = meters.NvmlMeter(sample_period_s=0.005)
    assert m.method == meters.POWER_INSTANT
    m.begin_window()
    time.sleep(0.2)
    r = m.end_window()
    assert r.valid and r.method == meters.POWER_INSTANT and r.samples >= 5
    assert r.energy_j == pytest.approx(250.0 * r.duration_s, rel=1e-9)  # however late the sampler thread


def test_no_counter_no_instant_field_uses_average_power(fake_nvml):
    fake_nvml(has_counter=False, instant_field=False)
    with pytest.warns(UserWarning):
        m = meters.NvmlMeter()
    assert m.method == meters.POWER_AVERAGE


def test_counter_going_down_invalidates_window(fake_nvml):
    fake = fake_nvml(counter_period_s=0.01)
    m = meters.NvmlMeter(probe_counter_s=0.05)
    time.sleep(0.05)
    m.begin_window()
    fake.counter_drop_after = fake.counter_reads + 1  # the reads at end_window see a reset counter
    time.sleep(0.05)
    r = m.end_window()
    assert not r.valid and math.isnan(r.energy_j) and "went down" in r.reason


def test_zero_energy_window_warns_and_is_invalid(fake_nvml):
    fake_nvml(counter_period_s=10.0)
    m = meters.NvmlMeter(probe_counter_s=0.01)
    m.begin_window()
    with pytest.warns(UserWarning, match="zero-energy"):
        r = m.end_window()
    assert not r.valid and math.isnan(r.energy_j)


def test_no_gpu(fake_nvml):
    fake_nvml(gpus=0)
    with pytest.raises(MeterError, match="meter: none"):
        meters.NvmlMeter()


def test_cuda_visible_devices_uuid_and_index(fake_nvml, monkeypatch):
    fake = fake_nvml(gpus=2)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "GPU-fake-1,GPU-fake-0")
    m = meters.NvmlMeter(probe_counter_s=0.01)
    assert m.uuid == "GPU-fake-1" and "nvmlDeviceGetHandleByUUID" in fake.calls
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1")
    assert meters.NvmlMeter(probe_counter_s=0.01).uuid == "GPU-fake-1"
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "5")
    with pytest.raises(MeterError, match="index 5 does not exist"):
        meters.NvmlMeter()


def test_timeline_samples(fake_nvml):
    fake_nvml(power_w=123.0)
    m = meters.NvmlMeter(timeline=True, sample_period_s=0.005, probe_counter_s=0.01)
    m.begin_window()
    time.sleep(0.1)
    r = m.end_window()
    assert len(r.timeline) >= 5 and all(p == pytest.approx(123.0) for _, p in r.timeline)


def test_null_meter_records_durations_only():
    with pytest.warns(UserWarning, match="energy is NaN"):
        m = meters.make_meter("none")
    w = windows.measure(m, lambda: time.sleep(0.01), min_window_s=0.05)
    assert math.isnan(w.energy_j) and w.duration_s > 0 and not m.measures_energy


def test_idle_power(fake_nvml):
    fake_nvml(power_w=84.0, counter_period_s=0.01)
    m = meters.NvmlMeter(probe_counter_s=0.05)
    assert m.idle_power_w(0.3) == pytest.approx(84.0, rel=0.1)


def test_unknown_meter():
    with pytest.raises(MeterError, match="unknown meter 'rapl'"):
        meters.make_meter("rapl")


def test_failing_calls_close_their_windows_and_leave_no_thread(fake_nvml):
    import threading

    from energykit.engines import Request

    fake_nvml(power_w=200.0, counter_period_s=0.01)
    m = meters.NvmlMeter(timeline=True, sample_period_s=0.002, probe_counter_s=0.03)
    before = threading.active_count()
    calls = {"n": 0}

    def boom(_prompts):
        calls["n"] += 1
        if calls["n"] > windows.PILOT_CALLS:  # the pilots pass, the first call inside the window fails
            raise RuntimeError("CUDA out of memory")

    for _ in range(2):  # two failing windows in a row
        calls["n"] = 0
        with pytest.raises(RuntimeError, match="out of memory"):
            windows.measure(m, Request(lambda: object(), boom), min_window_s=0.5)
        assert m._sampler is None and m._t0 is None
    time.sleep(0.05)
    assert threading.active_count() == before
    # the meter still measures afterwards
    w = windows.measure(m, lambda: time.sleep(0.02), min_window_s=0.1)
    assert w.reading.valid


def test_several_gpus_are_metered_per_gpu_and_summed(fake_nvml, monkeypatch):
    fake_nvml(power_w=[100.0, 300.0, 50.0], gpus=3, counter_period_s=0.01)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "GPU-fake-0,GPU-fake-1,GPU-fake-2")
    m = meters.NvmlMeter(gpus=2, probe_counter_s=0.05)
    assert m.uuids == ["GPU-fake-0", "GPU-fake-1"] and m.info()["gpu_uuids"] == m.uuids
    w = windows.measure(m, lambda: time.sleep(0.02), min_window_s=0.5)
    per = w.reading.per_gpu_j
    assert set(per) == {"GPU-fake-0", "GPU-fake-1"}
    assert sum(per.values()) == pytest.approx(w.reading.energy_j)
    assert per["GPU-fake-1"] / per["GPU-fake-0"] == pytest.approx(3.0, rel=0.1)
    assert w.reading.energy_j == pytest.approx(400.0 * w.reading.duration_s, rel=0.1)


def test_several_gpus_without_counter_integrate_each(fake_nvml, monkeypatch):
    fake_nvml(power_w=[100.0, 300.0], gpus=2, has_counter=False)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1")
    with pytest.warns(UserWarning):
        m = meters.NvmlMeter(gpus=2, sample_period_s=0.005)
    m.begin_window()
    time.sleep(0.2)
    r = m.end_window()
    assert r.per_gpu_j["GPU-fake-1"] == pytest.approx(3 * r.per_gpu_j["GPU-fake-0"], rel=0.01)
    assert r.energy_j == pytest.approx(400.0 * r.duration_s, rel=1e-9)  # integrated over the window exactly


def test_too_few_visible_gpus_for_the_engine(fake_nvml, monkeypatch):
    fake_nvml(gpus=2)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0")
    with pytest.raises(MeterError, match="uses 2 GPUs"):
        meters.NvmlMeter(gpus=2)


def test_windows_sum_when_prompts_run_out(fake_nvml):
    """A pilot slower than the calls: prompts run out, a second window continues, readings add up."""
    from energykit.engines import Request

    fake_nvml(power_w=100.0, counter_period_s=0.01)
    m = meters.NvmlMeter(probe_counter_s=0.05)
    durations = iter([0.3, 0.3] + [0.01] * 1000)  # the pilots are slow (compilation), then the calls are fast
    w = windows.measure(m, Request(lambda: None, lambda _: time.sleep(next(durations))), min_window_s=0.3)
    assert w.segments >= 2 and w.reading.duration_s >= 0.3
    assert w.reading.energy_j == pytest.approx(100.0 * w.reading.duration_s, abs=2 * w.segments)


def test_no_sliver_window_when_the_call_budget_runs_out(fake_nvml):
    """At max_iterations the measurement stops; it never opens a window too short for the counter."""
    from energykit.engines import Request

    fake_nvml(power_w=100.0, counter_period_s=0.01)
    m = meters.NvmlMeter(probe_counter_s=0.05)
    durations = iter([0.2, 0.2] + [0.001] * 1000)  # slow pilots, fast calls: a 2-call first window is too short
    w = windows.measure(m, Request(lambda: None, lambda _: time.sleep(next(durations))), min_window_s=0.3,
                        max_iterations=50)
    assert w.iterations <= 50 and w.reading.valid


class VirtualClock:
    """Seconds that pass only when slept (no wall-clock assertions)."""

    def __init__(self, t=0.0):
        self.t = t

    def __call__(self):
        return self.t

    def sleep(self, s):
        self.t += s


def _work_window(fake, clock, meter, phase_s, work_s=1.0, busy_w=400.0, idle_w=60.0):
    """One window of ``work_s`` at ``busy_w`` starting ``phase_s`` into the counter period."""
    fake.set_power(idle_w)
    period = fake.counter_period_s
    clock.sleep((phase_s - clock.t) % period + period)  # idle until the wanted phase of the counter
    meter.begin_window()
    fake.set_power(busy_w)
    clock.sleep(work_s)
    fake.set_power(idle_w)
    return meter.end_window()


@pytest.mark.parametrize("align, bound", [(True, 0.003), (False, 0.10)])
def test_windows_aligned_to_the_counter_leave_under_03_percent(monkeypatch, align, bound):
    """A 100 ms counter, 1 s of work at 400 W, idle 60 W, at 20 phases of the counter.

    Unaligned, a window is off by up to one counter step at each end (up to 4 %, 3 % here at worst
    phases); aligned it starts just after a tick and subtracts idle power over the end padding.
    """
    clock = VirtualClock(0.0123)
    fake = FakeNvml(power_w=60.0, counter_period_s=0.1, clock=clock)
    monkeypatch.setitem(sys.modules, "pynvml", fake)
    m = meters.NvmlMeter(probe_counter_s=1.0, align=align, clock=clock, sleep=clock.sleep)
    assert m.counter_period_s == pytest.approx(0.1, abs=0.002)
    if align:
        assert m.idle_power_w(1.0) == pytest.approx(60.0, rel=1e-3)
    errors = []
    for k in range(20):
        r = _work_window(fake, clock, m, phase_s=0.005 * k)
        assert r.valid
        errors.append(abs(r.energy_j - 400.0) / 400.0)  # the work drew 400 W x 1 s
        if align:
            assert 0 <= r.padding_s <= 0.1 + 2 * meters.TICK_POLL_S
    assert max(errors) <= 0.003 if align else max(errors) > 0.02  # the old way is off by a counter step
    assert max(errors) <= bound


def test_aligned_windows_of_two_gpus_ticking_at_different_phases(monkeypatch):
    """Tensor parallelism: each GPU's counter ticks at its own phase; each gets its own idle padding."""
    clock = VirtualClock(0.0123)
    fake = FakeNvml(power_w=[60.0, 50.0], counter_period_s=0.1, clock=clock, gpus=2, counter_phase_s=[0.0, 0.063])
    monkeypatch.setitem(sys.modules, "pynvml", fake)
    m = meters.NvmlMeter(device=[0, 1], probe_counter_s=1.0, clock=clock, sleep=clock.sleep)
    assert m.idle_power_w(1.0) == pytest.approx(110.0, rel=1e-3)
    for k in range(10):
        fake.set_power([60.0, 50.0])
        clock.sleep(0.013 * k + 0.1)
        m.begin_window()
        fake.set_power([400.0, 300.0])
        clock.sleep(1.0)
        fake.set_power([60.0, 50.0])
        r = m.end_window()
        assert r.energy_j == pytest.approx(700.0, rel=0.003)
        assert r.per_gpu_j["GPU-fake-1"] == pytest.approx(300.0, rel=0.003)


@pytest.mark.parametrize("padding_idle", ["warm", "cold"])
def test_end_padding_subtracts_warm_idle(monkeypatch, padding_idle):
    """After work the board idles warm (here 120 W; cold idle before any work 60 W). The end padding runs
    at the warm power: subtracting the cold idle leaves up to 60 W x one counter step (6 J) in the
    window; the warm figure, measured over the counter step right after the work, removes it."""
    clock = VirtualClock(0.0123)
    fake = FakeNvml(power_w=60.0, counter_period_s=0.1, clock=clock)
    monkeypatch.setitem(sys.modules, "pynvml", fake)
    m = meters.NvmlMeter(probe_counter_s=1.0, padding_idle=padding_idle, clock=clock, sleep=clock.sleep)
    assert m.idle_power_w(1.0) == pytest.approx(60.0, rel=1e-3)
    errors = []
    for k in range(10):
        fake.set_power(60.0)
        clock.sleep(0.0093 * k + 0.1)
        m.begin_window()
        fake.set_power(400.0)
        clock.sleep(1.0)
        fake.set_power(120.0)  # warm idle after the work
        r = m.end_window()
        assert r.valid and r.padding_idle == padding_idle
        assert r.padding_idle_w == pytest.approx(120.0 if padding_idle == "warm" else 60.0, rel=1e-3)
        errors.append(abs(r.energy_j - 400.0))
    if padding_idle == "warm":
        assert max(errors) < 0.5
    else:
        assert max(errors) > 2.0  # the cold figure leaves (120 - 60) W x padding in the window
    assert m.info()["padding_idle"].startswith(padding_idle)


def test_padding_idle_is_checked(monkeypatch):
    clock = VirtualClock(0.0)
    monkeypatch.setitem(sys.modules, "pynvml", FakeNvml(power_w=60.0, counter_period_s=0.1, clock=clock))
    with pytest.raises(MeterError, match="padding_idle 'hot' is not one of warm, cold"):
        meters.NvmlMeter(probe_counter_s=1.0, padding_idle="hot", clock=clock, sleep=clock.sleep)


def test_the_device_setters_need_root_check_their_range_and_are_never_called_by_a_window(fake_nvml):
    """Setters as nvidia-ml-py 13.615.71's pynvml.py has them (nvmlDeviceSetPowerManagementLimit(handle, limit [mW])
    through c_uint, nvmlDeviceSetGpuLockedClocks, nvmlDeviceResetGpuLockedClocks; NVMLError_NoPermission without root)."""
    from energykit.meters.device import NvmlDevice
    from energykit.testing import FakeNVMLErrorInvalidArgument, FakeNVMLErrorNoPermission

    fake = fake_nvml(counter_period_s=0.05)
    m = meters.NvmlMeter(probe_counter_s=0.3)
    windows.measure(m, lambda: time.sleep(0.01), min_window_s=0.3)
    m.info()
    assert not [c for c in fake.calls if c.startswith("nvmlDeviceSet") or c.startswith("nvmlDeviceReset")]
    with pytest.raises(MeterError, match="needs root.*sudo nvidia-smi -i GPU-fake-0 -pl 300"):
        m.device.set_power_limit_w(300)
    m.close()

    fake = fake_nvml(root=True, gpus=2)
    dev = NvmlDevice(device=[0, 1])
    assert dev.power_limit_range_w() == (200.0, 700.0)
    with pytest.raises(MeterError, match=r"power limit 800 W is outside .*\(200-700 W\)"):
        dev.set_power_limit_w(800)
    assert "nvmlDeviceSetPowerManagementLimit" not in fake.calls  # refused before NVML is asked
    dev.set_power_limit_w(350.5)
    assert fake.calls.count("nvmlDeviceSetPowerManagementLimit") == 2 and dev.state()["power_limit_w"] == 350.5
    dev.lock_gpu_clocks(1410, 1410)
    assert dev.state()["sm_clock_mhz"] == 1410
    with pytest.raises(MeterError, match="locked clocks 1500-1410 MHz"):
        dev.lock_gpu_clocks(1500, 1410)
    dev.reset_gpu_clocks()
    assert dev.state()["sm_clock_mhz"] == 1980
    dev.close()

    # the fake rejects what the real one rejects: watts where NVML takes mW, a float (c_uint), no root
    h = fake.nvmlDeviceGetHandleByIndex(0)
    with pytest.raises(FakeNVMLErrorInvalidArgument):
        fake.nvmlDeviceSetPowerManagementLimit(h, 300)  # 300 mW: under the 200 W minimum
    with pytest.raises(TypeError):
        fake.nvmlDeviceSetPowerManagementLimit(h, 300_000.0)
    with pytest.raises(FakeNVMLErrorInvalidArgument):
        fake.nvmlDeviceSetGpuLockedClocks(h, 1500, 1410)
    fake.root = False
    with pytest.raises(FakeNVMLErrorNoPermission):
        fake.nvmlDeviceResetGpuLockedClocks(h)


def test_the_fakes_errors_are_the_real_modules_classes_by_name():
    import pynvml  # the real nvidia-ml-py module: the error classes its return codes map to

    for name in ("NVMLError_NotSupported", "NVMLError_NoPermission", "NVMLError_InvalidArgument"):
        assert hasattr(pynvml, name) and hasattr(FakeNvml, name)
    assert (pynvml.NVML_ERROR_NO_PERMISSION, pynvml.NVML_ERROR_INVALID_ARGUMENT) == (
        FakeNvml.NVML_ERROR_NO_PERMISSION, FakeNvml.NVML_ERROR_INVALID_ARGUMENT)
