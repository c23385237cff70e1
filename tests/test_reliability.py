"""Reliability of a sweep's output folder: kills at every write, two writers, changed setups, a full disk.

These run the real CLI in subprocesses on the tiny CPU geometry (``meter: none``). Faults are
injected with the kit's hook (``ENERGYKIT_FAULT_KILL_AT``, :func:`energykit.state.fault_point`),
which SIGKILLs the process at a chosen write: mid-line in the log append, before the torn-tail
truncate, between a state file's temp write and its rename, and before the NetCDF rename.
"""

import json
import os
import shutil
import subprocess
import sys
import time

import pytest
import yaml

from energykit.iotools import read_tidy, read_trace, read_window_log
from energykit.errors import ParamsError
from energykit.params import load_measure_params
import energykit.fit as ekfit
from energykit import dataset, sweep
from energykit.errors import FitError
from energykit.state import FAULT_ENV

from conftest import ROOT

pytest.importorskip("transformers")

TINY = dict(name="tiny", arch="llama", num_layers=2, hidden_size=32, num_heads=4, num_kv_heads=2, head_dim=8,
            intermediate_size=64, ffn_gated=1, vocab_size=128, tied_embeddings=1, max_position_embeddings=512)
WINDOWS = 4  # 2 cells x 2 repeats
HANG_S = 3600
"""Subprocess limit: a guard against a hang, never a timing assertion (the suite must pass on a loaded machine)."""


def _params(out, **over):
    p = dict(engine="hf", models=[TINY], dtype="float32", device="cpu", batch_sizes=[2], input_lens=[8],
             output_lens=[2, 4], repeats=2, min_window_s=0.0, meter="none", warmup=0, idle_s=0, output=str(out))
    p.update(over)
    return p


def _write(path, p):
    path.write_text(yaml.safe_dump(p))
    return path


def _measure(params_path, fault=None, timeout=HANG_S):
    env = dict(os.environ)
    env.pop(FAULT_ENV, None)
    if fault:
        env[FAULT_ENV] = fault
    return subprocess.run([sys.executable, "-m", "energykit", "measure", str(params_path), "--no-progress"],
                          capture_output=True, text=True, cwd=ROOT, timeout=timeout, env=env)


def _complete_lines(log):
    if not log.exists():
        return []
    return [line for line in log.read_text().splitlines(keepends=True) if line.endswith("\n")]


def _error_line(stderr: str) -> str:
    """The CLI's one error line (warnings are one line each too); no traceback."""
    assert "Traceback" not in stderr
    errors = [line for line in stderr.splitlines() if line.startswith("energykit: error:")]
    assert len(errors) == 1, stderr
    return errors[0]


def _snapshot(folder):
    return {p.name: (p.stat().st_size, p.stat().st_mtime_ns) for p in folder.iterdir()} if folder.exists() else {}


def _check_complete(out):
    recs = read_window_log(out / sweep.LOG)[0]
    ok = [sweep.window_key(r) for r in recs if r["status"] == "ok"]
    assert len(ok) == len(set(ok)) == WINDOWS, "each (cell, repeat) measured exactly once"
    ds = dataset.load(out / sweep.DATASET)
    assert int(ds["energy_j"].notnull().sum() + ds["energy_j"].isnull().sum()) >= WINDOWS
    assert int(ds["duration_s"].notnull().sum()) == WINDOWS


@pytest.mark.slow
def test_kill_at_every_write_loses_no_finished_window(tmp_path):
    """SIGKILL at write k of a fresh sweep, for every k; then resume: nothing finished is lost."""
    report = {"faults": 0, "lost": 0, "duplicates": 0}
    k = 1
    while True:
        out = tmp_path / f"k{k}"
        params = _write(tmp_path / f"k{k}.yaml", _params(out))
        p = _measure(params, fault=str(k))
        if p.returncode == 0:  # k is past the last write point: every point has been tried
            break
        assert p.returncode == -9, p.stderr[-500:]
        report["faults"] += 1
        before = _complete_lines(out / sweep.LOG)
        # a second fault at the torn-tail truncate of the resuming run, where there is a torn tail
        torn = (out / sweep.LOG).exists() and not (out / sweep.LOG).read_bytes().endswith(b"\n")
        if torn and (out / sweep.LOG).stat().st_size:
            p = _measure(params, fault="trim@1")
            assert p.returncode == -9
            report["faults"] += 1
            assert _complete_lines(out / sweep.LOG)[: len(before)] == before
        p = _measure(params)
        assert p.returncode == 0, p.stderr[-800:]
        after = _complete_lines(out / sweep.LOG)
        report["lost"] += sum(1 for line in before if line not in after)
        _check_complete(out)
        ok = [sweep.window_key(r) for r in read_window_log(out / sweep.LOG)[0] if r["status"] == "ok"]
        report["duplicates"] += len(ok) - len(set(ok))
        k += 1
        assert k < 40
    print(f"\nreliability: {report['faults']} faults injected at {k - 1} write points, "
          f"{report['lost']} finished windows lost, {report['duplicates']} duplicates")
    assert report["faults"] >= 7 and report["lost"] == 0 and report["duplicates"] == 0


@pytest.mark.slow
def test_second_writer_is_refused_at_once(tmp_path):
    out = tmp_path / "out"
    first = _write(tmp_path / "a.yaml", _params(out, cooldown_s=1.0, repeats=4))
    proc = subprocess.Popen([sys.executable, "-m", "energykit", "measure", str(first), "--no-progress"],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + HANG_S
        while time.time() < deadline and not ((out / ".lock").exists() and (out / ".lock").read_text()):
            time.sleep(0.2)
        assert (out / ".lock").read_text().startswith("pid ")
        second = _measure(first)  # refused at once: it returns while the first still measures (asserted below)
        assert second.returncode == 2
        assert "is being measured by pid" in _error_line(second.stderr)
        assert proc.poll() is None  # the first is still measuring, undisturbed
    finally:
        proc.wait(timeout=HANG_S)
    assert proc.returncode == 0
    recs = read_window_log(out / sweep.LOG)[0]
    keys = [sweep.window_key(r) for r in recs]
    assert len(keys) == len(set(keys)) == 8


@pytest.mark.slow
@pytest.mark.parametrize("change, expect", [
    pytest.param({"models": [dict(TINY, num_layers=4)]}, "model 'tiny': num_layers 2 -> 4", marks=pytest.mark.smoke),
    ({"min_window_s": 0.01}, "min_window_s: 0.0 -> 0.01"),
    ({"attention": "sdpa"}, "attention: 'flex_attention' -> 'sdpa'"),
    ({"dtype": "bfloat16"}, "dtype: 'float32' -> 'bfloat16'"),
    ({"input_lens": [8, 16]}, "max_len: 12 -> 20"),  # a longer cell: another static-cache size
])
def test_rerun_with_another_setup_exits_2_and_writes_nothing(tmp_path, change, expect):
    out = tmp_path / "out"
    assert _measure(_write(tmp_path / "a.yaml", _params(out))).returncode == 0
    before = _snapshot(out)
    p = _measure(_write(tmp_path / "b.yaml", _params(out, **change)))
    assert p.returncode == 2 and expect in _error_line(p.stderr)
    assert _snapshot(out) == before


@pytest.mark.slow
def test_adding_cells_repeats_and_models_resumes(tmp_path):
    out = tmp_path / "out"
    assert _measure(_write(tmp_path / "a.yaml", _params(out))).returncode == 0
    other = dict(TINY, name="tiny2", num_layers=3)
    p = _measure(_write(tmp_path / "b.yaml", _params(out, repeats=3, input_lens=[4, 8], models=[TINY, other])))
    assert p.returncode == 0, p.stderr
    recs = read_window_log(out / sweep.LOG)[0]
    assert len(recs) == 2 * 2 * 3 * 2  # two models, 4 cells, 3 repeats, nothing twice
    assert json.loads((out / "fingerprint.json").read_text())["models"].keys() == {"tiny", "tiny2"}


def test_meter_change_is_refused(tmp_path, monkeypatch):
    """meter none -> nvml on the same folder (trtllm fake engine, NVML fake): refused, nothing written."""
    from energykit.testing import FakeNvml, FakeTensorRTLLM

    FakeTensorRTLLM().install(monkeypatch)
    monkeypatch.setitem(sys.modules, "pynvml", FakeNvml(counter_period_s=0.01))
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    out = tmp_path / "out"
    geom = dict(TINY, name="tiny-trt")
    base = _params(out, engine="trtllm", models=[geom], device="auto")
    with pytest.warns(UserWarning):
        sweep.run(load_measure_params(_write(tmp_path / "a.yaml", base)), progress=False)
    before = _snapshot(out)
    params = load_measure_params(_write(tmp_path / "b.yaml", dict(base, meter="nvml", min_window_s=0.5)))
    with pytest.raises(ParamsError, match="meter: 'none' -> 'nvml'"):
        sweep.run(params, progress=False)
    assert _snapshot(out) == before


def test_metering_a_gpu_while_the_engine_runs_on_the_cpu_is_refused(tmp_path):
    p = _measure(_write(tmp_path / "a.yaml", _params(tmp_path / "out", meter="nvml")))
    assert p.returncode == 2 and "runs on the CPU" in _error_line(p.stderr) and not (tmp_path / "out").exists()
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="")
    auto = _write(tmp_path / "b.yaml", _params(tmp_path / "out", meter="nvml", device="auto"))
    p = subprocess.run([sys.executable, "-m", "energykit", "measure", str(auto)], capture_output=True, text=True,
                       cwd=ROOT, env=env, timeout=HANG_S)
    assert p.returncode == 2 and "resolves to the CPU" in _error_line(p.stderr) and not (tmp_path / "out").exists()


def test_short_windows_for_the_counter_are_refused(tmp_path, monkeypatch):
    from energykit.testing import FakeNvml, FakeTensorRTLLM

    FakeTensorRTLLM().install(monkeypatch)
    monkeypatch.setitem(sys.modules, "pynvml", FakeNvml(counter_period_s=0.1))
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    params = load_measure_params(_write(tmp_path / "a.yaml", _params(tmp_path / "out", engine="trtllm", meter="nvml",
                                                                   min_window_s=0.1, models=[dict(TINY)])))
    with pytest.raises(ParamsError, match=r"min_window_s 0.1 s is under 5 periods .* use min_window_s: 2"):
        sweep.run(params, progress=False)
    assert not (tmp_path / "out").exists()


def test_nvml_lost_mid_sweep_stops_with_one_line_and_keeps_windows(tmp_path, monkeypatch):
    from energykit.errors import MeterError
    from energykit.testing import FakeNvml, FakeTensorRTLLM

    FakeTensorRTLLM().install(monkeypatch)
    fake = FakeNvml(counter_period_s=0.01)
    monkeypatch.setitem(sys.modules, "pynvml", fake)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    real = fake.nvmlDeviceGetTotalEnergyConsumption
    log = tmp_path / "out" / sweep.LOG

    def flaky(handle):
        if log.exists() and log.read_text().count("\n") >= 3:  # three windows pass, then the driver goes away
            raise fake.NVMLError("GPU is lost")
        return real(handle)

    fake.nvmlDeviceGetTotalEnergyConsumption = flaky
    p = _params(tmp_path / "out", engine="trtllm", meter="nvml", min_window_s=0.5, repeats=10, models=[dict(TINY)])
    with pytest.raises(MeterError, match="NVML stopped answering .* rerun"):
        sweep.run(load_measure_params(_write(tmp_path / "a.yaml", p)), progress=False)
    recs = read_window_log(tmp_path / "out" / sweep.LOG)[0]
    assert len(recs) == 3 and all(r["status"] == "ok" for r in recs)


@pytest.mark.slow
def test_disk_full_keeps_every_finished_window(tmp_path):
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("disk-full test needs root to mount a small tmpfs")
    mnt = tmp_path / "small"
    mnt.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=24k", "tmpfs", str(mnt)], capture_output=True).returncode:
        pytest.skip("cannot mount a tmpfs here (no CAP_SYS_ADMIN)")
    try:
        out = mnt / "out"
        params = _write(tmp_path / "a.yaml", _params(out, repeats=200, timeline=False))
        p = _measure(params)
        assert p.returncode == 2 and "no space left" in _error_line(p.stderr)
        recs = read_window_log(out / sweep.LOG)[0]  # every complete line is intact
        assert recs and len({sweep.window_key(r) for r in recs}) == len(recs)
    finally:
        subprocess.run(["umount", str(mnt)], capture_output=True)


def test_rank_deficient_design_is_refused():
    """Two input lengths cannot identify the six coefficients: no normal-looking fit."""
    import numpy as np

    i = np.array([64, 64, 64, 256, 256, 256], float)
    o = np.array([16, 64, 256, 16, 64, 256], float)
    e = 1e-5 * i**2 + 0.01 * i * o / 100 + 0.1 * i + 1.0 * o + 5
    with pytest.raises(FitError, match="cannot identify"):
        ekfit.fit_cells(e, i, o)


ONE_LINE_CASES = [
    ("fit", "folder", "is a folder"),
    ("fit", "inf_len", "not a positive integer up to"),
    ("fit", "huge_len", "not a positive integer up to"),
    ("fit", "inf_energy", "J is infinite"),
    ("fit", "MJ", "unknown unit 'MJ'"),
    ("fit", "semicolon", "separated by ';'"),
    ("fit", "bad_jsonl", "line 2: not valid JSON"),
    ("fit", "negative_nc", "is negative or infinite"),
    ("fit", "unknown_model", "is not in the data"),
    ("predict", "batch0", "0 is not positive"),
    ("predict", "bad_config", "not valid JSON"),
]


def _case_args(case, tmp_path):
    import numpy as np
    import pandas as pd

    good = pd.read_csv(ROOT / "data" / "h200_transformers_compiled_b16.csv")
    csv = tmp_path / "x.csv"
    if case == "folder":
        return ["fit", str(tmp_path)]
    if case in ("inf_len", "huge_len", "inf_energy", "MJ"):
        df = good.copy()
        if case == "inf_len":
            df["input_len"] = df["input_len"].astype(float)
            df.loc[0, "input_len"] = np.inf
        elif case == "huge_len":
            df["input_len"] = df["input_len"].astype(float)
            df.loc[0, "input_len"] = 1e30
        elif case == "inf_energy":
            df.loc[0, "energy_j"] = np.inf
        else:
            df = df.rename(columns={"energy_j": "energy_MJ"})
        df.to_csv(csv, index=False)
        return ["fit", str(csv)]
    if case == "semicolon":
        good.to_csv(csv, index=False, sep=";")
        return ["fit", str(csv)]
    if case == "bad_jsonl":
        j = tmp_path / "x.jsonl"
        j.write_text(good.iloc[:1].to_json(orient="records", lines=True) + "{not json\n")
        return ["fit", str(j)]
    if case == "negative_nc":
        ds = dataset.load(ROOT / "data" / "h200_transformers_compiled_b16.csv")
        e = ds["energy_j"].values
        e[np.unravel_index(np.nanargmax(e), e.shape)] = -50.0
        dataset.write_netcdf(ds, tmp_path / "x.nc")
        return ["fit", str(tmp_path / "x.nc")]
    if case == "unknown_model":
        return ["fit", str(ROOT / "data" / "h200_transformers_compiled_b16.csv"), "--model", "nope"]
    if case == "batch0":
        return ["predict", "--calibrate", str(ROOT / "data" / "h200_hf_energykit" / "measurements.nc"),
                "--geometry", "qwen2-1.5b", "--batch-size", "0"]
    if case == "bad_config":
        (tmp_path / "config.json").write_text("{oops")
        return ["predict", "--calibrate", str(ROOT / "data" / "h200_hf_energykit" / "measurements.nc"),
                "--geometry", str(tmp_path / "config.json")]
    raise AssertionError(case)


@pytest.mark.slow  # one subprocess each; tests/test_hostile.py checks the same one-line rule in-process
@pytest.mark.parametrize("cmd, case, expect", ONE_LINE_CASES)
def test_user_mistakes_give_one_line(tmp_path, cmd, case, expect):
    args = _case_args(case, tmp_path)
    p = subprocess.run([sys.executable, "-m", "energykit", *args], capture_output=True, text=True, cwd=ROOT,
                       timeout=HANG_S)
    assert p.returncode == 2, p.stderr[-600:]
    assert "Traceback" not in p.stderr and expect in p.stderr
    assert len([line for line in p.stderr.splitlines() if "error" in line]) == 1


def test_model_names_stay_strings(tmp_path):
    import pandas as pd

    df = pd.read_csv(ROOT / "data" / "h200_transformers_compiled_b16.csv")
    df["model"] = "1.10"
    df.to_csv(tmp_path / "m.csv", index=False)
    ds = dataset.load(tmp_path / "m.csv")
    assert [str(m) for m in ds["model"].values] == ["1.10"]


@pytest.mark.slow
def test_the_kits_own_log_loads(tmp_path):
    out = tmp_path / "out"
    assert _measure(_write(tmp_path / "a.yaml", _params(out))).returncode == 0
    ds = read_tidy(out / sweep.LOG, allow_nan_energy=True)[0]
    assert len(ds) == WINDOWS


def test_calibration_on_one_cell_gives_no_interval(tmp_path):
    import pandas as pd

    from energykit import hardware

    df = pd.read_csv(ROOT / "data" / "h200_transformers_compiled_b16.csv").query("input_len == 64 and output_len == 16")
    df.to_csv(tmp_path / "one.csv", index=False)
    with pytest.raises(FitError, match="cannot calibrate .* with an interval"):
        hardware.calibrate(dataset.load(tmp_path / "one.csv"))
