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
    assert w.iterations >= 15
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
    assert r.energy_j == pytest.approx(250.0 * r.duration_s, rel=0.05)


def test_no_counter_no_instant_field_uses_average_power(fake_nvml):
    fake_nvml(has_counter=False, instant_field=False)
    with pytest.warns(UserWarning):
        m = meters.NvmlMeter()
    assert m.method == meters.POWER_AVERAGE


def test_counter_going_down_invalidates_window(fake_nvml):
    fake = fake_nvml(counter_period_s=0.01)
    m = meters.NvmlMeter(probe_counter_s=0.05)
    fake.counter_drop_after = fake.counter_reads + 1  # the read at end_window sees a reset counter
    time.sleep(0.05)
    m.begin_window()
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
