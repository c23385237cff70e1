import json
import re
import os
import signal
import subprocess
import sys
import time

import pytest
import yaml

from energykit.iotools import read_tidy, read_trace, read_window_log
from energykit.params import load_measure_params
from energykit import dataset, shards, sweep
from energykit.errors import ParamsError

from conftest import ROOT

TINY = dict(name="tiny", arch="llama", num_layers=2, hidden_size=32, num_heads=4, num_kv_heads=2, head_dim=8,
            intermediate_size=64, ffn_gated=1, vocab_size=128, tied_embeddings=1, max_position_embeddings=512)


def _params(tmp_path, **over):
    p = dict(engine="hf", models=[TINY], dtype="float32", device="cpu", batch_sizes=[2], input_lens=[8, 16],
             output_lens=[2, 4], repeats=2, min_window_s=0.0, meter="none", warmup=0, idle_s=0,
             output=str(tmp_path / "out"))
    p.update(over)
    return p


def _write(tmp_path, p, name="p.yaml"):
    path = tmp_path / name
    path.write_text(yaml.safe_dump(p))
    return path


@pytest.fixture
def toy(monkeypatch):
    """The toy engine (tests/toy_engine.py) in the registry: the sweep machinery without a model to build."""
    from energykit import engines
    from toy_engine import ToyEngine

    monkeypatch.setitem(engines.ENGINES, ToyEngine.name, ToyEngine)
    return ToyEngine


def _toy_cli(*args, env=None):
    """``energykit ARGS`` in a subprocess, with the toy engine registered."""
    return subprocess.run([sys.executable, str(ROOT / "tests" / "toy_engine.py"), *args], capture_output=True,
                          text=True, cwd=ROOT, timeout=3600, env=env)


def _cli(*args, timeout=3600):
    return subprocess.run([sys.executable, "-m", "energykit", *args], capture_output=True, text=True, cwd=ROOT,
                          timeout=timeout)


MALFORMED = [
    ({"colour": "red"}, "unknown key 'colour'"),
    ({"input_lens": [64, -16]}, "input_lens: must be positive integers; got -16"),
    ({"output_lens": [0]}, "output_lens: must be positive integers; got 0"),
    ({"input_lens": [64.5]}, "input_lens.0"),
    ({"batch_sizes": "sixteen"}, "batch_sizes"),
    ({"engine": "vllm"}, "engine"),
    ({"meter": "rapl"}, "meter"),
    ({"repeats": 0}, "repeats"),
    ({"input_lens": [400], "output_lens": [200]}, "exceeds 'tiny''s context of 512"),
    ({"models": ["no-such-model"]}, "unknown model 'no-such-model'"),
    ({"models": [dict(TINY, num_heads=None)]}, "num_heads must be an integer >= 1; got None"),
    ({"models": [{"name": "half", "arch": "llama"}]}, "lacks num_layers"),
    ({"output": None}, "output"),
]


@pytest.mark.parametrize("over, match", MALFORMED)
def test_malformed_params_exit_2_one_line_nothing_written(tmp_path, over, match):
    p = _params(tmp_path, **over)
    if over.get("output", "") is None:
        del p["output"]
    path = _write(tmp_path, p)
    with pytest.raises(ParamsError, match=re.escape(match)):
        load_measure_params(path)
    from energykit.cli import main

    assert main(["measure", str(path)]) == 2
    assert not (tmp_path / "out").exists()


def test_malformed_params_cli_subprocess(tmp_path):
    path = _write(tmp_path, _params(tmp_path, input_lens=[-16]))
    p = _cli("measure", str(path))
    assert p.returncode == 2
    assert p.stderr.strip().count("\n") == 0 and "-16" in p.stderr and "Traceback" not in p.stderr
    assert not (tmp_path / "out").exists()


def test_bad_yaml_and_missing_file(tmp_path):
    (tmp_path / "b.yaml").write_text("engine: [hf\n")
    with pytest.raises(ParamsError, match="not valid YAML"):
        load_measure_params(tmp_path / "b.yaml")
    with pytest.raises(ParamsError, match="no such params file"):
        load_measure_params(tmp_path / "none.yaml")


@pytest.mark.slow  # the hf engine end to end (the machinery is tested on the toy engine)
def test_sweep_runs_and_builds_dataset(tmp_path):
    pytest.importorskip("transformers")
    params = load_measure_params(_write(tmp_path, _params(tmp_path)))
    with pytest.warns(UserWarning, match="energy is NaN"):
        path = sweep.run(params, progress=False)
    ds = dataset.load(path)
    assert int(ds["duration_s"].notnull().sum()) == 2 * 2 * 2
    assert (ds["output_tokens"].values == ds["output_len"].values[None, None, None, :, None]).all()
    assert ds.attrs["params"]["engine"] == "hf"
    assert "engine_versions" in ds.attrs and ds["params"].values[0] > 0
    prov = json.loads((tmp_path / "out" / "provenance.json").read_text())
    assert prov["engines"]["tiny"]["decode"] == "loop"
    assert json.loads((tmp_path / "out" / sweep.FINGERPRINT).read_text())["setup"]["decode"] == "loop"


def test_toy_sweep_runs_and_builds_dataset(tmp_path, toy):
    params = load_measure_params(_write(tmp_path, _params(tmp_path, engine="toy")))
    with pytest.warns(UserWarning, match="energy is NaN"):
        path = sweep.run(params, progress=False)
    ds = dataset.load(path)
    assert int(ds["duration_s"].notnull().sum()) == 2 * 2 * 2
    assert (ds["output_tokens"].values == ds["output_len"].values[None, None, None, :, None]).all()
    assert ds.attrs["params"]["engine"] == "toy" and ds["params"].values[0] > 0
    recs = read_window_log(tmp_path / "out" / sweep.LOG)[0]
    assert sorted(shards.window_key(r) for r in recs) == sorted(shards.all_windows(params))  # the one plan


def test_failing_cell_is_recorded_and_sweep_goes_on(tmp_path, monkeypatch, toy):
    real = toy.request

    def flaky(self, b, i, o):
        if i == 16 and o == 4:
            raise RuntimeError("CUDA out of memory (simulated)")
        return real(self, b, i, o)

    monkeypatch.setattr(toy, "request", flaky)
    params = load_measure_params(_write(tmp_path, _params(tmp_path, engine="toy")))
    with pytest.warns(UserWarning), pytest.raises(sweep.SweepFailures, match="2 of 8 windows failed .*out of memory"):
        sweep.run(params, progress=False)
    recs = read_window_log(tmp_path / "out" / sweep.LOG)[0]
    errors = [r for r in recs if r["status"] == "error"]
    assert len(errors) == 2 and "out of memory" in errors[0]["error"]
    assert sum(r["status"] == "ok" for r in recs) == 6
    assert (tmp_path / "out" / sweep.DATASET).exists()  # the good windows are kept as a dataset
    # a rerun retries exactly the failed windows
    monkeypatch.setattr(toy, "request", real)
    with pytest.warns(UserWarning):
        sweep.run(params, progress=False)
    recs = read_window_log(tmp_path / "out" / sweep.LOG)[0]
    assert len(recs) == 10 and sum(r["status"] == "ok" for r in recs) == 8


def test_torn_last_line_is_ignored(tmp_path):
    log = tmp_path / sweep.LOG
    rec = {"model": "m", "batch_size": 1, "input_len": 8, "output_len": 4, "repeat": 0}
    log.write_text(json.dumps(rec) + "\n" + '{"model": "x", "bat')
    assert read_window_log(log)[0] == [rec]
    sweep.RawLog(log).close()
    assert log.read_text().endswith("\n")


@pytest.mark.slow
@pytest.mark.smoke  # the fault-injection representative: one SIGKILL mid-sweep, then resume
def test_sigkill_then_resume_one_record_per_window(tmp_path):
    """SIGKILL a CLI sweep partway (at its 5th log append: no timing involved), rerun: exactly one record
    per (cell, repeat). On the toy engine: the machinery, not a model build."""
    from energykit.state import FAULT_ENV

    path = _write(tmp_path, _params(tmp_path, repeats=3, engine="toy"))
    log = tmp_path / "out" / sweep.LOG
    killed = _toy_cli("measure", str(path), "--no-progress", env=dict(os.environ, **{FAULT_ENV: "append windows.jsonl@5"}))
    assert killed.returncode == -signal.SIGKILL
    first = read_window_log(log)[0]
    assert len(first) == 4, "the kill lands mid-write of the 5th window: 4 complete records"
    assert not (tmp_path / "out" / sweep.DATASET).exists()
    done = _toy_cli("measure", str(path), "--no-progress")
    assert done.returncode == 0, done.stderr
    recs = read_window_log(log)[0]
    keys = [(r["model"], r["batch_size"], r["input_len"], r["output_len"], r["repeat"]) for r in recs]
    assert len(keys) == len(set(keys)) == 4 * 3
    ds = dataset.load(tmp_path / "out" / sweep.DATASET)
    assert int(ds["duration_s"].notnull().sum()) == 12


def test_missing_engine_extra_refused_before_anything_is_written(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorrt_llm", None)
    path = _write(tmp_path, _params(tmp_path, engine="trtllm"))
    from energykit.cli import main

    assert main(["measure", str(path)]) == 2
    assert not (tmp_path / "out").exists()


def test_design_cells_restrict_the_sweep(tmp_path, toy):
    params = load_measure_params(_write(tmp_path, _params(tmp_path, cells=[[8, 2], [16, 4]], repeats=1, engine="toy")))
    assert params.grid == [(8, 2), (16, 4)] and params.max_len == 20
    with pytest.warns(UserWarning):
        sweep.run(params, progress=False)
    recs = read_window_log(tmp_path / "out" / sweep.LOG)[0]
    assert sorted((r["input_len"], r["output_len"]) for r in recs) == [(8, 2), (16, 4)]


def test_bad_design_cells(tmp_path):
    with pytest.raises(ParamsError, match=r"cells are \[input_len, output_len\] pairs"):
        load_measure_params(_write(tmp_path, _params(tmp_path, cells=[[8, 0]])))


def test_no_gpu_with_nvml_meter_writes_nothing(tmp_path, monkeypatch):
    pytest.importorskip("transformers")
    from energykit.cli import main
    from energykit.testing import FakeNvml

    monkeypatch.setitem(sys.modules, "pynvml", FakeNvml(gpus=0))
    path = _write(tmp_path, _params(tmp_path, meter="nvml"))
    assert main(["measure", str(path)]) == 2
    assert not (tmp_path / "out").exists()


def test_a_model_that_fails_to_load_is_one_line_and_keeps_earlier_windows(tmp_path, monkeypatch, toy):
    """E.g. CUDA running out of memory while the second model is built: the first model's windows stay."""
    from energykit.errors import EngineError
    from energykit.iotools import read_window_log
    from energykit.params import MeasureParams

    real = toy.load

    def load(self):
        if self.model_name == "tiny2":
            raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB\nmore detail")
        return real(self)

    monkeypatch.setattr(toy, "load", load)
    p = MeasureParams(**_params(tmp_path, models=[TINY, dict(TINY, name="tiny2")], repeats=1, engine="toy"))
    with pytest.raises(EngineError) as e:
        sweep.run(p, progress=False)
    msg = str(e.value)
    assert "\n" not in msg and "'tiny2' failed to load (RuntimeError: CUDA out of memory" in msg
    assert "windows measured so far are kept" in msg
    records = read_window_log(tmp_path / "out" / "windows.jsonl")[0]
    assert {r["model"] for r in records} == {"tiny"} and len(records) == 4


def test_pilot_calls_run_once_per_cell_not_per_repeat(tmp_path, monkeypatch, toy):
    """Two pilot calls per (model, batch, cell); the cell's other repeats reuse their timing."""
    from energykit import windows

    real = windows.measure
    piloted = []

    def spy(meter, call, min_window_s=2.0, max_iterations=10_000, pilot_s=None):
        w = real(meter, call, min_window_s, max_iterations, pilot_s=pilot_s)
        piloted.append(pilot_s is None)
        return w

    monkeypatch.setattr(sweep, "measure", spy)
    params = load_measure_params(_write(tmp_path, _params(tmp_path, repeats=3, engine="toy")))
    with pytest.warns(UserWarning, match="energy is NaN"):
        sweep.run(params, progress=False)
    assert len(piloted) == 4 * 3 and sum(piloted) == 4  # 4 cells x 3 repeats; pilots only at each first


def test_compile_cache_reaches_every_array_task(tmp_path, monkeypatch):
    from energykit import submit
    from energykit.engines.hf import HFEngine, use_compile_cache

    for var in ("TORCHINDUCTOR_CACHE_DIR", "TRITON_CACHE_DIR", "TORCHINDUCTOR_FX_GRAPH_CACHE",
                "TORCHINDUCTOR_AUTOGRAD_CACHE"):
        monkeypatch.setenv(var, "")  # registered, so that teardown restores what was there
        monkeypatch.delenv(var)
    cache = tmp_path / "kernels"
    path = _write(tmp_path, _params(tmp_path, compile_cache=str(cache)))
    seen = {}
    monkeypatch.setattr(submit, "run", lambda params, *a, **k: seen.update(
        inductor=os.environ.get("TORCHINDUCTOR_CACHE_DIR"), triton=os.environ.get("TRITON_CACHE_DIR"),
        engine=HFEngine.engine_kwargs(params)["compile_cache"]) or "ok")
    submit.run_shard(str(path), 0, 2)
    assert seen == {"inductor": str(cache.resolve()), "triton": str(cache.resolve() / "triton"), "engine": str(cache)}
    (tmp_path / "file").write_text("")
    from energykit.errors import EngineError
    with pytest.raises(EngineError, match="compile_cache .* cannot be created"):
        use_compile_cache(tmp_path / "file" / "sub")


def test_folders_measured_before_the_decode_loop_resume_with_generate_and_refuse_the_loop(tmp_path):
    """Folders measured with generate() have no 'decode' in their fingerprint; the loop adds it."""
    from energykit.engines.hf import HFEngine

    gen = load_measure_params(_write(tmp_path, _params(tmp_path, attention="sdpa")))
    loop = load_measure_params(_write(tmp_path, _params(tmp_path)))
    assert "decode" not in HFEngine.fingerprint(gen.engine_options)
    assert HFEngine.fingerprint(loop.engine_options)["decode"] == "loop"
    old = {"setup": {"engine": "hf", "attention": "flex_attention", "compile": True}, "models": {}}
    new = {"setup": {"engine": "hf", **HFEngine.fingerprint(loop.engine_options)}, "models": {}}
    assert sweep.fingerprint_difference(old, new) == ["decode: None -> 'loop'"]


def test_the_engine_class_is_looked_up_once_per_run(tmp_path, monkeypatch, toy):
    from energykit import engines, merge, provenance

    calls = []

    def counted(kind):
        calls.append(kind)
        return engines.engine_class(kind)

    for module in (sweep, provenance, merge):
        if hasattr(module, "engine_class"):
            monkeypatch.setattr(module, "engine_class", counted)
    params = load_measure_params(_write(tmp_path, _params(tmp_path, engine="toy", models=[TINY, dict(TINY, name="t2")])))
    with pytest.warns(UserWarning, match="energy is NaN"):
        sweep.run(params, progress=False)
    assert calls == ["toy"]
