"""Sharded sweeps: the plan's properties, shards from the environment, and shard/merge equivalence."""

import os
import signal
import subprocess
import sys
import time

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from energykit import dataset, shards, sweep
from energykit.errors import ParamsError
from energykit.iotools import read_window_log
from energykit.params import MeasureParams, load_measure_params

from conftest import ROOT, TINY, tiny_params as _params

@settings(max_examples=60, deadline=None)
@given(n_models=st.integers(1, 3), n_in=st.integers(1, 4), n_out=st.integers(1, 4), repeats=st.integers(1, 3),
       batches=st.lists(st.sampled_from([1, 4, 16]), min_size=1, max_size=2, unique=True), data=st.data())
def test_plan_is_disjoint_covering_and_deterministic(n_models, n_in, n_out, repeats, batches, data):
    models = [dict(TINY, name=f"m{k}", num_layers=2 + k) for k in range(n_models)]
    p = MeasureParams.model_validate(_params(models=models, input_lens=[8 * 2**k for k in range(n_in)],
                                             output_lens=[2 * 2**k for k in range(n_out)], repeats=repeats,
                                             batch_sizes=batches))
    every = shards.all_windows(p)
    count = data.draw(st.integers(1, len(every)))
    plan = shards.plan_shards(p, count)
    assert len(plan) == count and all(s.windows for s in plan)
    flat = [w for s in plan for w in s.windows]
    assert len(flat) == len(set(flat)) == len(every) and set(flat) == set(every)
    assert shards.plan_shards(p, count) == plan
    # grouped by model: models spread over at most (count + models - 1) shard slots in total
    assert sum(len(s.models) for s in plan) <= count + n_models - 1
    # balanced: no shard exceeds the ideal share by more than the costliest window
    ideal = sum(s.cost for s in plan) / count
    worst = max(b * (i + o) for _, b, i, o, _ in every)
    assert max(s.cost for s in plan) <= ideal + worst + 1e-9


def test_window_keys_name_the_cell_by_the_models_variables():
    from energykit.model import VARIABLES

    assert set(shards.CELL_VARIABLES) == set(VARIABLES)
    rec = {"repeat": 1, "output_len": 4, "model": "m", "input_len": 8, "batch_size": 2, "energy_j": 1.0}
    key = shards.window_key(rec)
    assert key == ("m", 2, 8, 4, 1) and shards.cell_of(key) == {v: rec[v] for v in VARIABLES}
    p = MeasureParams.model_validate(_params(repeats=2, batch_sizes=[1, 4]))
    every = shards.all_windows(p)
    assert sorted(every) == sorted(shards.run_order(p)) and len(set(every)) == len(every) == 2 * 2 * 2 * 2
    assert shards.run_order(p, done=set(every[:3])) == [w for w in shards.run_order(p) if w not in every[:3]]
    grouped = [shards.cell_of(w)["batch_size"] for w in shards.run_order(p, by_batch=True)]
    assert sum(a != b for a, b in zip(grouped, grouped[1:])) == 1


def test_shard_from_environment(monkeypatch):
    for k in ("SLURM_ARRAY_TASK_ID", "SLURM_ARRAY_TASK_COUNT", "SLURM_ARRAY_TASK_MIN", "JOB_COMPLETION_INDEX",
              "ENERGYKIT_SHARDS"):
        monkeypatch.delenv(k, raising=False)
    assert shards.shard_from_env(None) is None
    assert shards.shard_from_env("1/4") == (1, 4)
    with pytest.raises(ParamsError, match="use K/N"):
        shards.shard_from_env("one of four")
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "3")
    monkeypatch.setenv("SLURM_ARRAY_TASK_COUNT", "4")
    monkeypatch.setenv("SLURM_ARRAY_TASK_MIN", "1")
    assert shards.shard_from_env(None) == (2, 4)
    for k in ("SLURM_ARRAY_TASK_ID", "SLURM_ARRAY_TASK_COUNT", "SLURM_ARRAY_TASK_MIN"):
        monkeypatch.delenv(k)
    monkeypatch.setenv("JOB_COMPLETION_INDEX", "1")
    with pytest.raises(ParamsError, match="ENERGYKIT_SHARDS"):
        shards.shard_from_env(None)
    monkeypatch.setenv("ENERGYKIT_SHARDS", "2")
    assert shards.shard_from_env(None) == (1, 2)
    p = MeasureParams.model_validate(_params())
    with pytest.raises(ParamsError, match="0..1"):
        shards.shard_of(p, 2, 2)


TOY_CLI = [sys.executable, str(ROOT / "tests" / "toy_engine.py")]
"""``energykit`` with the toy engine registered (tests/toy_engine.py): shards and merges without a model to build."""


@pytest.fixture
def toy(monkeypatch):
    """The toy engine in this process's registry (for params and merges read here)."""
    from energykit import engines
    from toy_engine import ToyEngine

    monkeypatch.setitem(engines.ENGINES, ToyEngine.name, ToyEngine)


def _toy_params(**over):
    return _params(engine="toy", **over)


def _measure(params_path, *extra, env=None):
    return subprocess.run([*TOY_CLI, "measure", str(params_path), "--no-progress", *extra],
                          capture_output=True, text=True, cwd=ROOT, timeout=3600, env=env)


def _keys(ds):
    frame = dataset.to_frame(ds)
    return sorted(map(tuple, frame[list(dataset.DIMS)].itertuples(index=False)))


@pytest.mark.slow
def test_two_shards_merge_into_the_unsharded_dataset_even_after_a_kill(tmp_path):
    whole = tmp_path / "whole.yaml"
    whole.write_text(yaml.safe_dump(_toy_params(output=str(tmp_path / "whole"))))
    assert _measure(whole).returncode == 0
    sharded = tmp_path / "sharded.yaml"
    sharded.write_text(yaml.safe_dump(_toy_params(output=str(tmp_path / "sharded"), cooldown_s=0.5)))
    # shard 0 is killed part-way (SIGKILL), shard 1 runs through; then shard 0 is rerun
    proc = subprocess.Popen([*TOY_CLI, "measure", str(sharded), "--shard", "0/2",
                             "--no-progress"], cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    log0 = tmp_path / "sharded" / "shard-0-of-2" / sweep.LOG
    deadline = time.time() + 3600
    while time.time() < deadline and not (log0.exists() and log0.read_text().count("\n") >= 1):
        time.sleep(0.1)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -9
    assert _measure(sharded, "--shard", "1/2").returncode == 0
    env = dict(os.environ, SLURM_ARRAY_TASK_ID="0", SLURM_ARRAY_TASK_COUNT="2")  # K/N from Slurm's variables
    assert _measure(sharded, env=env).returncode == 0
    st_ = subprocess.run([*TOY_CLI, "status", str(tmp_path / "sharded")],
                         capture_output=True, text=True, cwd=ROOT, timeout=3600)
    assert st_.returncode == 0 and "shard-0-of-2" in st_.stdout and "shard-1-of-2" in st_.stdout
    merged = tmp_path / "merged.nc"
    p = subprocess.run([*TOY_CLI, "merge", str(tmp_path / "sharded"), "-o", str(merged),
                        "--params", str(sharded)], capture_output=True, text=True, cwd=ROOT, timeout=3600)
    assert p.returncode == 0, p.stderr
    assert "0 of 8 planned windows missing" in p.stdout
    a = dataset.load(tmp_path / "whole" / sweep.DATASET)
    b = dataset.load(merged)
    assert _keys(a) == _keys(b) and len(_keys(b)) == 8  # the same (cell, repeat) records, none twice
    recs = read_window_log(log0)[0] + read_window_log(tmp_path / "sharded" / "shard-1-of-2" / sweep.LOG)[0]
    assert {r["shard"] for r in recs} == {"0/2", "1/2"} and all(r["host"] and r["attempt"] >= 1 for r in recs)
    assert b.attrs["shards"] == ["shard-0-of-2", "shard-1-of-2"]


@pytest.mark.slow
@pytest.mark.smoke  # the sharded path end to end: plan, measure a shard, merge
def test_merge_reports_missing_windows(tmp_path, toy, capsys):
    from energykit.cli import main

    p = tmp_path / "p.yaml"
    p.write_text(yaml.safe_dump(_toy_params(output=str(tmp_path / "out"))))
    params = load_measure_params(p)
    with pytest.warns(UserWarning, match="energy is NaN"):
        sweep.run(params, progress=False, shard=(0, 2))
    assert main(["status", str(tmp_path / "out")]) == 0 and "shard-0-of-2" in capsys.readouterr().out
    assert main(["merge", str(tmp_path / "out"), "-o", str(tmp_path / "m.nc"), "--params", str(p)]) == 1
    missing = len(shards.shard_of(params, 1, 2).windows)  # shard 1's windows, never measured
    out, err = capsys.readouterr()
    assert f"{missing} of 8 planned windows missing" in out and f"{missing} planned windows are missing" in err


def test_busy_gpu_and_mig_are_refused(monkeypatch):
    from energykit import meters
    from energykit.errors import MeterError
    from energykit.testing import FakeNvml

    fake = FakeNvml(counter_period_s=0.01)
    monkeypatch.setitem(sys.modules, "pynvml", fake)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    m = meters.NvmlMeter(probe_counter_s=0.02)
    m.check_exclusive()
    fake.busy_pids = {0: [4242]}
    with pytest.raises(MeterError, match="in use by process.*4242"):
        m.check_exclusive()
    fake.busy_pids = {0: [os.getpid()]}  # this process itself does not count
    m.check_exclusive()
    fake.mig = True
    with pytest.raises(MeterError, match="MIG"):
        m.check_exclusive()


@pytest.mark.slow
def test_merge_keeps_different_gpu_models_apart(tmp_path, toy):
    import json

    p = tmp_path / "p.yaml"
    p.write_text(yaml.safe_dump(_toy_params(output=str(tmp_path / "out"))))
    for k in (0, 1):
        assert _measure(p, "--shard", f"{k}/2").returncode == 0
    log1 = tmp_path / "out" / "shard-1-of-2" / sweep.LOG
    lines = [json.loads(x) for x in log1.read_text().splitlines()]
    log1.write_text("".join(json.dumps(dict(r, gpu="NVIDIA H100")) + "\n" for r in lines))
    path, report = sweep.merge([tmp_path / "out"], tmp_path / "m.nc", load_measure_params(p))
    ds = dataset.load(path)
    assert report["gpus"] == ["NVIDIA H100", "cpu"]
    assert set(dataset.model_names(ds)) == {"tiny [NVIDIA H100]", "tiny [cpu]"}


def test_plan_can_balance_by_an_earlier_sweeps_seconds(tmp_path):
    import pandas as pd

    rows = [dict(model="tiny", batch_size=2, input_len=i, output_len=o, repeat=0, energy_j=1.0,
                 duration_s=10.0 if (i, o) == (16, 4) else 1.0) for i in (8, 16) for o in (2, 4)]
    pd.DataFrame(rows).to_csv(tmp_path / "t.csv", index=False)
    p = MeasureParams.model_validate(_params(plan_timing=str(tmp_path / "t.csv"), repeats=1))
    plan = shards.plan_shards(p, 2)
    heavy = [s for s in plan if ("tiny", 2, 16, 4, 0) in s.windows][0]
    assert heavy.windows == (("tiny", 2, 16, 4, 0),) and heavy.cost == 10.0  # the slow cell alone
