"""Engines: the hf engine on the CPU, and the trtllm engine against a stand-in of TensorRT-LLM (1.2, newer fields marked).

The fake (:class:`energykit.testing.FakeTensorRTLLM`) is written from TensorRT-LLM 1.2's source:
``tensorrt_llm/llmapi/llm.py`` (argument check, ``_prepare_sampling_params``, ``_check_arguments``),
``tensorrt_llm/llmapi/llm_args.py`` (``BaseLlmArgs``/``TorchLlmArgs`` fields, ``KvCacheConfig``),
``tensorrt_llm/sampling_params.py`` and ``tensorrt_llm/_torch/models/__init__.py``; see the notes in
``energykit/testing/trtllm/``.
"""

import json
import os
import time
import sys

import pytest

from energykit import windows
from energykit.engines import Request, make_engine
from energykit.engines.trtllm import check_supported
from energykit.errors import EngineError, MissingExtraError, ParamsError
from energykit.meters import NullMeter
from energykit.testing import FakeTensorRTLLM

TINY = dict(arch="llama", num_layers=2, hidden_size=32, num_heads=4, num_kv_heads=2, head_dim=8,
            intermediate_size=64, ffn_gated=1, vocab_size=128, tied_embeddings=1, max_position_embeddings=256)


def test_hf_engine_on_cpu_exact_output_counts():
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    eng = make_engine("hf", name="tiny", geometry=TINY, dtype="float32", device="cpu", max_len=64, attention="sdpa")
    eng.load()
    req = eng.request(3, 16, 7)
    req.prepare(1)
    assert req().output_tokens == 7
    # the static cache is allocated once per batch size and reused
    req = eng.request(3, 40, 20)
    req.prepare(1)
    req()
    assert list(eng._caches) == [3]
    with pytest.raises(EngineError, match="no fresh prompts"):
        req()
    with pytest.raises(EngineError, match="exceeds the static cache"):
        eng.request(1, 60, 10)
    v = eng.versions()
    assert "torch" in v and v["compile"] is False and v["attention"] == "sdpa"  # no compilation on the CPU
    eng.close()


@pytest.mark.slow  # llama runs in make test (test_hf_engine_on_cpu_exact_output_counts)
@pytest.mark.parametrize("arch", ["opt", "qwen2", "gemma2", "falcon", "granite"])
def test_hf_engine_other_families(arch):
    pytest.importorskip("transformers")
    geom = dict(TINY, arch=arch, sliding_window=8)
    if arch in ("opt", "falcon"):
        geom.update(num_kv_heads=1 if arch == "falcon" else 4, ffn_gated=0)
    attention = "sdpa" if arch == "falcon" else "flex_attention"  # transformers has no flex attention for Falcon
    eng = make_engine("hf", name=arch, geometry=geom, dtype="float32", device="cpu", max_len=48, attention=attention)
    eng.load()
    req = eng.request(2, 20, 5)
    req.prepare(1)
    assert req().output_tokens == 5


def test_attention_an_arch_lacks_is_one_line():
    pytest.importorskip("transformers")
    geom = dict(TINY, arch="falcon", num_kv_heads=1, ffn_gated=0)
    eng = make_engine("hf", name="f", geometry=geom, dtype="float32", device="cpu", max_len=48, decode="generate")
    with pytest.raises(EngineError, match="has no flex_attention .* set attention: to one of sdpa, eager"):
        eng.load()


def test_every_call_gets_fresh_prompts_prepared_outside_the_window():
    sent, made_in_window = [], []
    state = {"open": False}

    class Meter(NullMeter):
        def begin_window(self):
            state["open"] = True
            super().begin_window()

        def end_window(self):
            state["open"] = False
            return super().end_window()

    counter = iter(range(10**6))

    def make():
        made_in_window.append(state["open"])
        return next(counter)

    req = Request(make, lambda p: sent.append(p) or p)
    with pytest.warns(UserWarning):
        meter = Meter()
    w1 = windows.measure(meter, req, min_window_s=0.02)
    w2 = windows.measure(meter, req, min_window_s=0.02)  # a second repeat of the cell
    assert w1.iterations >= 1 and w2.iterations >= 1
    assert len(sent) == len(set(sent))  # no prompt sent twice, pilot calls included
    assert not any(made_in_window)  # drawn before the window opened


# -- TensorRT-LLM ----------------------------------------------------------------------------------
# The stand-in follows TensorRT-LLM's source (files in energykit/testing/trtllm/args.py): 1.2's LLM API
# (llmapi/llm.py, llm_args.py, sampling_params.py), the PyTorch executor of the stored main snapshot
# (NVIDIA/TensorRT-LLM, llm_args.py at commit 0004396720054fd8; _torch/pyexecutor/py_executor.py's
# _executor_loop_overlap and _prepare_and_schedule_batch), its request queue read at commits a98a9061d72f
# and 007a7508b8f6 (_torch/pyexecutor/executor_request_queue.py: _get_from_request_queue and
# _fetch_and_process_requests, the same in both: the per-iteration fetch and its batch wait), where the
# executor runs (executor/executor.py GenerationExecutor.create, llmapi/utils.py enable_worker_single_process_for_tp1), the TensorRT flow's
# C++ queue (cpp/tensorrt_llm/executor/executorImpl.cpp getLeaderNewReqWithIds, commit b35ac1b64368),
# the registries (_torch/models/modeling_utils.py MODEL_CLASS_MAPPING, models/__init__.py MODEL_MAP)
# and the bench's EnergyMonitor (bench/benchmark/utils/energy_monitor.py).
@pytest.fixture
def trt(monkeypatch):
    return FakeTensorRTLLM().install(monkeypatch)


def _engine(tmp_path, **kw):
    args = dict(name="m", geometry=TINY, dtype="bfloat16", max_len=300, max_input_len=256, max_batch_size=4,
                workdir=str(tmp_path / "ckpt"))
    args.update(kw)
    return make_engine("trtllm", **args)


def _llm_calls(trt):
    return [kw for kind, kw in trt.calls if kind == "LLM"]


def _call(eng, b, i, o):
    req = eng.request(b, i, o)
    req.prepare(1)
    return req()


def _old_llm(trt, tmp_path, **kw):
    """An LLM loaded as the engine before this contract was read: no batch wait, default CUDA graphs."""
    d = tmp_path / "old"
    d.mkdir(exist_ok=True)
    (d / "config.json").write_text(json.dumps({"architectures": ["LlamaForCausalLM"]}))
    args = dict(model=str(d), skip_tokenizer_init=True, load_format="dummy", max_seq_len=300, return_perf_metrics=True)
    return trt.LLM(**{**args, **kw})


def test_trtllm_calls_on_the_real_contract(trt, tmp_path):
    eng = _engine(tmp_path)
    eng.load()
    kind, kw = trt.calls[0]  # KvCacheConfig
    assert kind == "KvCacheConfig" and kw == {"enable_block_reuse": False}
    kw = _llm_calls(trt)[0]
    assert kw["load_format"] == "dummy" and kw["skip_tokenizer_init"] is True and kw["return_perf_metrics"] is True
    assert kw["max_num_tokens"] >= 4 * 256 and kw["enable_chunked_prefill"] is False
    assert kw["max_batch_size"] == 4 and kw["max_seq_len"] == 300 and kw["backend"] == "pytorch"
    assert kw["flow"] == "pytorch" and kw["batch_wait_timeout_ms"] == 0  # upstream would wait it every decode step
    assert type(eng.llm._executor).__name__ == "FakeGenerationExecutorWorker"  # the executor runs in this process
    assert kw["cuda_graph_config"].batch_sizes == [4] and kw["cuda_graph_config"].enable_padding is False
    cfg = json.loads((tmp_path / "ckpt" / "m" / "config.json").read_text())
    assert cfg["architectures"] == ["LlamaForCausalLM"] and cfg["num_key_value_heads"] == 2
    assert not list((tmp_path / "ckpt" / "m").glob("*.safetensors"))  # no weights written: dummy load
    req = eng.request(4, 50, 9)
    sp = [c for c in trt.calls if c[0] == "SamplingParams"][-1][1]
    assert sp["end_id"] is not None and sp["ignore_eos"] is True and sp["max_tokens"] == 9
    req.prepare(1)
    g = req()
    primer, *sent = [c[1] for c in trt.calls if c[0] == "generate_async"]
    assert primer["sampling_params"].max_tokens == 1  # load's primer: the executor's first fetch predates the wrapper
    assert len(sent) == 4 and all(len(c["inputs"]) == 50 for c in sent)  # each request enqueued, none awaited yet
    assert all(0 <= t < TINY["vocab_size"] for c in sent for t in c["inputs"])
    assert g.output_tokens == 9 and g.ttft_s > 0
    assert g.extra["first_token_iterations"] == 1 and g.extra["decode_graphed"] is True
    v = eng.versions()
    assert v["kv_cache"] == "paged, block reuse off" and v["chunked_prefill"] is False and v["flow"] == "pytorch"
    assert v["batch_wait_timeout_ms"] == 0 and v["admission"].startswith("in-process executor")
    eng.close()
    assert trt.calls[-1][0] == "shutdown"


def test_trtllm_a_sweep_at_batch_16_is_one_batch_graphed_and_closes_after_the_gpu(trt, tmp_path):
    """Done-when of issue 21, against the stand-in: one iteration per batch, graphed decode, no early close."""
    eng = _engine(tmp_path, max_batch_size=16, batch_sizes=[16], max_input_len=64, max_len=128)
    eng.load()
    closes = []

    def sync():  # the meter synchronises before it reads its counter at every window end
        eng.synchronize()
        closes.append(time.monotonic() >= trt.gpu_busy_until)

    with pytest.warns(UserWarning):
        meter = NullMeter(sync=sync)
    for i, o in ((64, 8), (32, 16)):
        w = windows.measure(meter, eng.request(16, i, o), min_window_s=0.02)
        assert w.last_result.extra["first_token_iterations"] == 1 and w.last_result.extra["decode_graphed"] is True
        assert 0 <= w.last_result.extra["ttft_spread_s"] < 16 * 0.01  # one prefill: only the arrivals differ
    assert trt.ragged_batches() == 0 and trt.ungraphed_decode_steps() == 0
    assert closes and all(closes)  # every window ended after the overlap scheduler's in-flight step
    assert trt.decode_queue_waits() == []  # no decode step waited in the request queue


def test_trtllm_no_decode_step_waits_in_the_request_queue(trt, tmp_path):
    """Issue 26: one iteration admits the whole batch, and no decode step waits in the queue.

    The engine before this fix (BATCH_WAIT_MS = 1000, executor behind a proxy) fails here: upstream's
    queue waits its batch_wait_timeout_ms on every busy iteration, 8 waits of 1 s in this call.
    """
    trt.step_s = 0.005
    eng = _engine(tmp_path, max_batch_size=4, batch_sizes=[4], max_input_len=32, max_len=64)
    eng.load()
    t0 = time.monotonic()
    g = _call(eng, 4, 16, 8)
    call_s = time.monotonic() - t0
    assert trt.decode_queue_waits() == [], f"decode steps waited {trt.decode_queue_waits()} s in the queue"
    assert g.queue_waits == 0 and eng.fetch.waits == 0 and eng.fetch.whole == 1
    assert trt.ragged_batches() == 0 and g.extra["first_token_iterations"] == 1
    # the executor's clock: one step per iteration, as simulated (no queue wait inside a step)
    assert g.extra["executor_step_s"] == pytest.approx(trt.step_s, rel=0.1)
    assert call_s >= 8 * trt.step_s  # the 8 iterations ran in real time, one after another
    eng.close()


def test_old_calls_fail_against_the_stand_in(trt, tmp_path):
    """The calls before issue 26 (and 21) fail against the stand-in, as they would against TensorRT-LLM.

    One-by-one submission to an idle executor without a batch wait gives a ragged batch; the batch wait
    of the engine before issue 26 (batch_wait_timeout_ms=1000) admits the batch whole and then waits
    1 s in the queue on every decode step; the default CUDA graphs miss a batch of 48.
    """
    from energykit.engines.trtllm import WholeBatchFetch, batch_check

    sp = trt.SamplingParams(max_tokens=8, end_id=0, pad_id=0, ignore_eos=True)
    old = _old_llm(trt, tmp_path, max_batch_size=16)
    assert type(old._executor).__name__ == "FakeGenerationExecutorProxy"  # TLLM_WORKER_USE_SINGLE_PROCESS unset
    outs = old.generate([[3 + k] * 32 for k in range(16)], sp, use_tqdm=False)  # generate(): one by one
    assert trt.ragged_batches() > 0 and trt.ungraphed_decode_steps() > 0
    with pytest.raises(EngineError, match=r"ragged batch: .*first tokens came from iterations \[\d+, \d+.*\]"):
        batch_check(outs, 16)
    old.shutdown()
    # the engine before issue 26: whole batch at admission, then 1 s in the queue at each decode step
    waited = _old_llm(trt, tmp_path, max_batch_size=2, batch_wait_timeout_ms=1000.0)
    t0 = time.monotonic()
    outs = waited.generate([[100 + k] * 32 for k in range(2)], trt.SamplingParams(max_tokens=2, end_id=0,
                                                                                  ignore_eos=True), use_tqdm=False)
    assert time.monotonic() - t0 >= 2.0  # the waits are in the call's duration
    # the overlap loop fetches before it processes a step: each of its 2 busy iterations waited the timeout
    assert [round(w, 1) for w in trt.decode_queue_waits()] == [1.0, 1.0]
    assert batch_check(outs, 2)["step_s"] >= 0.9  # and the executor's own clock says a step took a second
    waited.shutdown()
    trt.single_process_worker = True  # a fresh process with the switch set: admit whole batches of 48
    whole48 = _old_llm(trt, tmp_path, max_batch_size=48)
    fetch = WholeBatchFetch(whole48._executor.engine.executor_request_queue, 48)
    fetch.priming = True  # the loop is already blocked in upstream's fetch: one request releases it
    whole48.generate([7] * 32, trt.SamplingParams(max_tokens=1, end_id=0, ignore_eos=True))
    fetch.priming = False
    before = trt.ungraphed_decode_steps()
    whole48.generate([[200 + k] * 32 for k in range(48)], sp, use_tqdm=False)
    assert trt.ungraphed_decode_steps() - before == 7  # 48 not in 1..31, 32, 64, 128: every decode step eager
    whole48.shutdown()


def test_the_stand_in_queue_is_upstreams(trt):
    """FakeExecutorRequestQueue._get_from_request_queue against executor_request_queue.py (commits a98a9061d72f,
    007a7508b8f6: the same function), including the batch wait a busy executor still takes."""
    import datetime

    from energykit.testing import FakeExecutorRequestQueue, FakeRequestQueueItem

    q = FakeExecutorRequestQueue(trt, max_batch_size=4, batch_wait_timeout_ms=0)
    for k in range(3):
        q.request_queue.put(FakeRequestQueueItem(k))
    assert [i.id for i in q._get_from_request_queue(None)] == [0, 1, 2]  # not empty: drain, no wait
    assert q._get_from_request_queue(datetime.timedelta(0)) == []  # empty, may not wait: nothing
    timer = __import__("threading").Timer(0.05, q.request_queue.put, (FakeRequestQueueItem(9),))
    timer.start()
    assert [i.id for i in q._get_from_request_queue(None)] == [9]  # empty, may wait: blocks for ONE item
    q.batch_wait_timeout_ms = 60
    t0 = time.monotonic()
    assert q._get_from_request_queue(datetime.timedelta(0)) == []  # busy, and still waits the batch timeout
    assert time.monotonic() - t0 >= 0.06
    for k in range(5):
        q.request_queue.put(FakeRequestQueueItem(k))
    assert len(q._get_from_request_queue(datetime.timedelta(0))) == 5  # a full batch returns at once


def test_whole_batch_fetch_waits_only_when_idle(trt):
    import datetime
    import threading

    from energykit.engines.trtllm import WholeBatchFetch
    from energykit.testing import FakeExecutorRequestQueue, FakeRequestQueueItem

    q = FakeExecutorRequestQueue(trt, max_batch_size=3, batch_wait_timeout_ms=0)
    fetch = WholeBatchFetch(q, 3, admit_wait_s=0.5, queue_wait_s=0.0005)
    assert q._get_from_request_queue is fetch
    for k in range(3):
        threading.Timer(0.01 * (k + 1), q.request_queue.put, (FakeRequestQueueItem(k),)).start()
    assert [i.id for i in q._get_from_request_queue(None)] == [0, 1, 2] and fetch.whole == 1  # idle: whole batch
    assert q._get_from_request_queue(datetime.timedelta(0)) == [] and fetch.waits == 0  # busy: never waits
    q.request_queue.put(FakeRequestQueueItem(-1))  # shutdown: no wait for a batch
    assert [i.id for i in q._get_from_request_queue(None)] == [-1]
    fetch.admit_wait_s = 0.02
    q.request_queue.put(FakeRequestQueueItem(5))
    assert len(q._get_from_request_queue(None)) == 1 and fetch.short == 1  # a lost request: bounded wait
    q.batch_wait_timeout_ms = 20  # an upstream that waits while busy: counted as a decode step's wait
    q._get_from_request_queue(datetime.timedelta(0))
    assert fetch.waits == 1 and fetch.busy_wait_s >= 0.02
    fetch.remove()
    assert "_get_from_request_queue" not in q.__dict__ and "get" not in q.request_queue.__dict__


def test_trtllm_executor_outside_this_process_is_one_line(trt, tmp_path):
    trt.single_process_worker = False  # a first LLM was built before the switch was set (read once)
    eng = _engine(tmp_path)
    with pytest.raises(EngineError, match=r"runs the executor in another process \(FakeGenerationExecutorProxy\).*"
                                          r"TLLM_WORKER_USE_SINGLE_PROCESS=1"):
        eng.load()
    assert eng.llm is None and trt.calls[-1][0] == "shutdown"


def test_trtllm_more_than_one_gpu_is_refused_before_the_sweep_writes(trt, tmp_path):
    from energykit import sweep
    from energykit.params import MeasureParams

    p = MeasureParams(engine="trtllm", models=[dict(TINY, name="t")], batch_sizes=[2], input_lens=[8], output_lens=[2],
                      trtllm={"tensor_parallel_size": 2}, meter="none", output=str(tmp_path / "o"))
    with pytest.raises(ParamsError, match=r"trtllm tensor_parallel_size 2: whole batches need the executor in this "
                                          r"process .*set tensor_parallel_size: 1"):
        sweep.run(p, progress=False)
    assert not (tmp_path / "o").exists() and trt.calls == []


def test_trtllm_one_executor_per_batch_size_and_the_sweep_groups_them(trt, tmp_path):
    from energykit import shards
    from energykit.engines import engine_class
    from energykit.params import MeasureParams

    eng = _engine(tmp_path, max_batch_size=8, batch_sizes=[2, 8], max_input_len=32, max_len=64)
    eng.load()
    _call(eng, 8, 32, 4)
    _call(eng, 8, 16, 4)
    _call(eng, 2, 16, 4)
    graphs = [kw["cuda_graph_config"].batch_sizes for kw in _llm_calls(trt)]
    assert graphs == [[2], [8], [2]] and eng.loads == 3  # loaded for 2 at load(), then for each change
    params = MeasureParams(engine="trtllm", models=[dict(TINY, name="t")], batch_sizes=[2, 8, 4], input_lens=[8, 16],
                           output_lens=[2, 4], repeats=2, output=str(tmp_path / "o"))
    order = [b for _, b, *_ in shards.run_order(params, set(), by_batch=engine_class("trtllm").loads_per_batch_size)]
    assert len(order) == 3 * 4 * 2 and sum(a != b for a, b in zip(order, order[1:])) == 2  # three blocks


def test_trtllm_ragged_window_fails_and_the_next_run_retries_it(tmp_path, monkeypatch):
    import yaml

    from energykit import sweep
    from energykit.iotools import read_window_log
    from energykit.params import load_measure_params

    FakeTensorRTLLM(ragged_calls=1, late_s=0.2).install(monkeypatch)  # one call loses a request past the admission
    monkeypatch.setattr("energykit.engines.trtllm.ADMIT_WAIT_S", 0.02)  # wait (shortened here)
    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump(dict(engine="trtllm", models=[dict(TINY, name="t")], batch_sizes=[4], input_lens=[8],
                                        output_lens=[4], repeats=1, min_window_s=0.0, meter="none", warmup=0,
                                        idle_s=0, output=str(tmp_path / "out"))))
    with pytest.warns(UserWarning), pytest.raises(sweep.SweepFailures, match="ragged batch"):
        sweep.run(load_measure_params(path), progress=False)
    rec = read_window_log(tmp_path / "out" / sweep.LOG)[0][-1]
    assert rec["status"] == "error" and "first tokens came from iterations" in rec["error"]
    with pytest.warns(UserWarning):
        sweep.run(load_measure_params(path), progress=False)
    recs = read_window_log(tmp_path / "out" / sweep.LOG)[0]
    assert [r["status"] for r in recs] == ["error", "ok"] and recs[-1]["attempt"] == 2
    assert recs[-1]["first_token_iterations"] == 1 and recs[-1]["decode_graphed"] is True


def test_trtllm_no_prefix_reuse_across_calls_and_repeats(trt, tmp_path):
    eng = _engine(tmp_path, max_input_len=128)
    eng.load()
    with pytest.warns(UserWarning):
        meter = NullMeter()
    for _repeat in range(3):
        for i in (64, 128):
            windows.measure(meter, eng.request(4, i, 8), min_window_s=0.01)
    assert trt.prompts_sent >= 3 * 2 * 2 * 4
    assert trt.repeated_prompts == 0 and trt.reused_blocks == 0 and trt.split_prefills == 0


def test_trtllm_chunked_prefill_is_explicit_and_recorded(trt, tmp_path):
    eng = _engine(tmp_path, chunked_prefill=True, max_batch_size=16, batch_sizes=[16], max_input_len=4096,
                  max_len=5000)
    eng.load()
    kw = _llm_calls(trt)[0]
    assert kw["enable_chunked_prefill"] is True and kw["max_num_tokens"] == 8192
    assert eng.versions()["chunked_prefill"] is True


def test_trtllm_long_batch_prefill_is_not_split(trt, tmp_path):
    eng = _engine(tmp_path, max_batch_size=16, batch_sizes=[16], max_input_len=4096, max_len=5000)
    eng.load()
    assert _llm_calls(trt)[0]["max_num_tokens"] == 16 * 4096
    _call(eng, 16, 4096, 2)
    assert trt.split_prefills == 0


def test_fake_rejects_the_calls_of_the_first_trtllm_engine(trt, tmp_path):
    """The first engine's calls (before TensorRT-LLM 1.2's contract was read) fail against the fake."""
    d = tmp_path / "ckpt"
    d.mkdir()
    (d / "config.json").write_text(json.dumps({"architectures": ["LlamaForCausalLM"]}))
    # it wrote no weights with load_format auto: the real loader finds no checkpoint
    with pytest.raises(FileNotFoundError):
        trt.LLM(model=str(d), skip_tokenizer_init=True, dtype="bfloat16", max_batch_size=4, max_seq_len=300)
    llm = trt.LLM(model=str(d), skip_tokenizer_init=True, dtype="bfloat16", max_batch_size=4, max_seq_len=300,
                  load_format="dummy")
    old = trt.SamplingParams(max_tokens=9, ignore_eos=True, temperature=0.0, detokenize=False,
                             return_perf_metrics=True)
    with pytest.raises(ValueError, match="tokenizer is required to reset end_id"):
        llm.generate([[1] * 50] * 4, old, use_tqdm=False)
    # and identical prompts in every call and repeat were served from reused KV blocks
    ok = trt.SamplingParams(max_tokens=9, end_id=0, ignore_eos=True)
    llm.generate([[1] * 64] * 4, ok, use_tqdm=False)
    assert trt.reused_blocks > 0 and trt.repeated_prompts == 3
    # a batch of 16 x 4096 prompt tokens under the default max_num_tokens runs split over iterations
    trt.step_s = 0.05  # the other 15 queue while the first prefills
    long = trt.LLM(model=str(d), skip_tokenizer_init=True, load_format="dummy", max_seq_len=5000)
    long.generate([[2] * 4096] * 16, ok, use_tqdm=False)
    assert trt.split_prefills >= 1


def test_fake_rejects_unknown_arguments_and_backends(trt, tmp_path):
    d = tmp_path / "ckpt"
    d.mkdir()
    (d / "config.json").write_text(json.dumps({"architectures": ["LlamaForCausalLM"]}))
    with pytest.raises(ValueError, match="invalid argument: colour"):
        trt.LLM(model=str(d), load_format="dummy", colour="red")
    with pytest.raises(ValueError, match="specific to TensorRT backend"):
        trt.LLM(model=str(d), load_format="dummy", workspace="/tmp")
    with pytest.raises(ValueError, match="backend"):
        trt.LLM(model=str(d), load_format="dummy", backend="tensorrt")
    with pytest.raises(ValueError, match="invalid argument: enable_energy_metrics"):  # a field of main, not 1.2
        trt.LLM(model=str(d), load_format="dummy", enable_energy_metrics=True)
    with pytest.raises(ValueError, match="invalid argument: cuda_graph_config"):  # the TensorRT flow has none
        sys.modules["tensorrt_llm._tensorrt_engine"].LLM(model=str(d), load_format="dummy",
                                                         cuda_graph_config=trt.llmapi.CudaGraphConfig())
    with pytest.raises(TypeError):
        trt.SamplingParams(max_new_tokens=3)
    with pytest.raises(TypeError):
        trt.llmapi.BuildConfig(max_batch=3)
    with pytest.raises(ValueError, match="Extra inputs"):
        trt.llmapi.KvCacheConfig(block_reuse=False)
    with pytest.raises(ValueError, match="max_batch_size must equal max"):
        trt.llmapi.CudaGraphConfig(batch_sizes=[4, 16], max_batch_size=8)
    assert trt.llmapi.CudaGraphConfig().batch_sizes == list(range(1, 32)) + [32, 64, 128]
    (d / "config.json").write_text(json.dumps({"architectures": ["OPTForCausalLM"]}))
    with pytest.raises(ValueError, match="Unknown architecture"):
        trt.LLM(model=str(d), load_format="dummy")


@pytest.mark.parametrize("arch", ["opt", "falcon", "gemma2", "granite"])
def test_trtllm_families_only_the_tensorrt_flow_runs_are_refused_before_any_gpu_time(trt, tmp_path, arch,
                                                                                      monkeypatch):
    """Issue 26: the engine-build flow's C++ queue admits what is queued when it wakes, with no batch wait."""
    pytest.importorskip("transformers")
    geom = dict(TINY, arch=arch, sliding_window=8)
    if arch in ("opt", "falcon"):
        geom.update(num_kv_heads=1 if arch == "falcon" else 4, ffn_gated=0)
    eng = _engine(tmp_path, geometry=geom, batch_sizes=[4])
    with pytest.raises(ParamsError, match=r"model 'm': TensorRT-LLM 1.2.0 runs \w+ForCausalLM only in its TensorRT "
                                          r"engine-build flow, whose C\+\+ executor admits whatever is queued .*"
                                          r"getLeaderNewReqWithIds.*engine: hf"):
        eng.load()
    assert _llm_calls(trt) == []  # nothing built, no GPU time
    with pytest.raises(ParamsError, match="trtllm flow tensorrt .* is refused"):
        check_supported("m", TINY, flow="tensorrt")
    monkeypatch.setitem(sys.modules, "tensorrt_llm", None)  # a planning machine without the library: refused too
    with pytest.raises(ParamsError, match="trtllm flow tensorrt .* is refused: its C\\+\\+ executor admits"):
        check_supported("m", TINY, flow="tensorrt")


def test_the_tensorrt_flow_queue_gives_ragged_batches(trt, tmp_path):
    """Why it is refused, against the stand-in of executorImpl.cpp's getLeaderNewReqWithIds (commit b35ac1b64368)."""
    from energykit.engines.trtllm import batch_check

    d = tmp_path / "opt"
    d.mkdir()
    (d / "config.json").write_text(json.dumps({"architectures": ["OPTForCausalLM"]}))
    llm = sys.modules["tensorrt_llm._tensorrt_engine"].LLM(
        model=str(d), skip_tokenizer_init=True, load_format="dummy", return_perf_metrics=True,
        build_config=trt.llmapi.BuildConfig(max_batch_size=4))
    def send(k):
        return llm.generate_async([5 + k] * 20, trt.SamplingParams(max_tokens=5, end_id=0, ignore_eos=True))

    # the first request is served alone: the queue holds no batch back (no batch wait in this flow), so a
    # request that arrives before the others is run without them; waiting for it makes that deterministic
    # (sent back to back, the four could all be queued before the executor wakes on a loaded host)
    outs = [send(0).result()]
    outs += [f.result() for f in [send(k) for k in range(1, 4)]]
    with pytest.raises(EngineError, match="ragged batch"):  # the first request woke it alone
        batch_check(outs, 4)
    llm.shutdown()


def test_trtllm_a_newer_release_runs_granite_on_pytorch(monkeypatch, tmp_path):
    from energykit.testing import TRTLLM_PYTORCH_ARCHITECTURES

    pytest.importorskip("transformers")
    newer = FakeTensorRTLLM(version="1.3.0", pytorch_architectures=TRTLLM_PYTORCH_ARCHITECTURES | {"GraniteForCausalLM"})
    newer.install(monkeypatch)
    eng = _engine(tmp_path, geometry=dict(TINY, arch="granite"))
    eng.load()
    assert _llm_calls(newer)[0]["flow"] == "pytorch"


def test_trtllm_refuses_only_when_no_flow_runs_the_model(monkeypatch, tmp_path):
    FakeTensorRTLLM(tensorrt_flow=False).install(monkeypatch)
    opt = dict(TINY, arch="opt", num_kv_heads=4, ffn_gated=0)
    eng = _engine(tmp_path, geometry=opt)
    with pytest.raises(ParamsError, match=r"model 'm': TensorRT-LLM 1.2.0 runs OPTForCausalLM in no flow .*"
                                          r"no TensorRT engine flow.*engine: hf"):
        eng.load()
    with pytest.raises(ParamsError, match=r"TensorRT-LLM 1.2.0's pytorch flow has no model for OPTForCausalLM"):
        check_supported("m", opt, flow="pytorch")
    with pytest.raises(ParamsError, match=r"TensorRT-LLM 1.2.0 runs OPTForCausalLM in no flow"):  # at validation
        _load(tmp_path, _measure_params(tmp_path, engine="trtllm", models=["opt-1.3b"]))


def test_trtllm_architectures_are_not_refused_where_the_library_is_absent(monkeypatch):
    from energykit.params import MeasureParams

    monkeypatch.setitem(sys.modules, "tensorrt_llm", None)
    monkeypatch.setattr("importlib.util.find_spec", lambda name, *a: None)
    check_supported("m", dict(TINY, arch="opt"))  # a planning machine: the GPU machine's library decides
    p = MeasureParams(engine="trtllm", models=[dict(TINY, name="o", arch="opt")], batch_sizes=[2], input_lens=[8],
                      output_lens=[2], output="x")
    assert p.resolved[0][0] == "o"


def test_trtllm_energy_counter_is_recorded_beside_the_meter(tmp_path, monkeypatch):
    import yaml

    from energykit import sweep
    from energykit.iotools import read_window_log
    from energykit.params import load_measure_params
    from energykit.state import read_json
    from energykit.testing import FakeNvml

    FakeTensorRTLLM(energy_monitor=True).install(monkeypatch)
    monkeypatch.setitem(sys.modules, "pynvml", FakeNvml(counter_period_s=0.01))
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump(dict(engine="trtllm", models=[dict(TINY, name="t")], batch_sizes=[2],
                                        input_lens=[8], output_lens=[4], repeats=2, min_window_s=0.06,
                                        meter="nvml", warmup=0, idle_s=0, output=str(tmp_path / "out"))))
    sweep.run(load_measure_params(path), progress=False)
    recs = read_window_log(tmp_path / "out" / sweep.LOG)[0]
    assert all(r["library_energy_j"] > 0 and abs(r["library_energy_diff"]) < 1.0 for r in recs)
    assert "engine's own energy counter vs the kit's meter over 2 windows" in \
        read_json(tmp_path / "out" / "provenance.json")["library_energy"]


def test_trtllm_unsupported_backend_is_one_line(trt, tmp_path):
    with pytest.raises(ParamsError, match="trtllm backend 'tensorrt' is not one of pytorch, _autodeploy"):
        check_supported("m", TINY, backend="tensorrt")
    assert trt.calls == []


def test_trtllm_short_output_is_an_error(monkeypatch, tmp_path):
    FakeTensorRTLLM(short_by=1).install(monkeypatch)
    eng = _engine(tmp_path)
    eng.load()
    with pytest.raises(EngineError, match="asked for 5 new tokens"):
        _call(eng, 2, 10, 5)


def test_trtllm_missing_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorrt_llm", None)  # import fails
    eng = make_engine("trtllm", name="m", geometry=TINY, checkpoint="x")
    with pytest.raises(MissingExtraError, match=r"energykit\[trtllm\].*NVIDIA.*containers/"):
        eng.load()


def test_hf_missing_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "transformers", None)
    eng = make_engine("hf", name="m", geometry=TINY)
    with pytest.raises(MissingExtraError, match=r"energykit\[hf\]"):
        eng.load()


def test_unknown_engine():
    with pytest.raises(ParamsError, match="unknown engine 'vllm'"):
        make_engine("vllm")


# --- the registry: an engine class owns its options, checks, hint, GPUs, fingerprint, label ---------------------

def _measure_params(tmp_path, **over):
    p = dict(engine="hf", models=[dict(TINY, name="tiny")], dtype="float32", device="cpu", batch_sizes=[2],
             input_lens=[8, 16], output_lens=[2, 4], repeats=2, min_window_s=0.0, meter="none", warmup=1, idle_s=0,
             output=str(tmp_path / "out"))
    p.update(over)
    return p


def _load(tmp_path, p):
    import yaml

    from energykit.params import load_measure_params

    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump(p))
    return load_measure_params(path)


def test_engine_section_and_top_level_keys_are_the_same_options(tmp_path):
    from energykit.engines.hf import HFOptions
    from energykit.params import MeasureParams

    flat = _load(tmp_path, _measure_params(tmp_path, attention="sdpa", compile=False))
    section = _load(tmp_path, _measure_params(tmp_path, hf={"attention": "sdpa", "compile": False}))
    assert flat.engine_options == section.engine_options == HFOptions(attention="sdpa", compile=False)
    dumped = section.model_dump()
    assert dumped["hf"] == {"compile": False, "attention": "sdpa", "decode": None, "compile_cache": ""}
    assert "attention" not in dumped
    assert "engine_options" not in dumped
    assert MeasureParams.model_validate(dumped).engine_options == section.engine_options  # a dump validates again
    assert _load(tmp_path, _measure_params(tmp_path, engine="trtllm", trtllm={"tensor_parallel_size": 2})
                 ).engine_options.tensor_parallel_size == 2


ENGINE_SECTION_ERRORS = [
    (dict(attention="bogus"), "attention: Input should be 'flex_attention', 'sdpa' or 'eager' (got 'bogus')"),
    (dict(hf={"attention": "bogus"}), "hf.attention: Input should be 'flex_attention', 'sdpa' or 'eager'"),
    (dict(hf={"colour": 1}), "unknown key 'hf.colour'"),
    (dict(hf=["sdpa"]), "hf: the hf section is a mapping of option: value"),
    (dict(attention="sdpa", hf={"attention": "eager"}), "attention: is given both at the top level and under hf:"),
    (dict(tensor_parallel_size=2), "tensor_parallel_size: is an option of engine trtllm, not of hf; remove it or "
                                   "set engine: trtllm (got 2)"),
    (dict(engine="trtllm", compile=False), "compile: is an option of engine hf, not of trtllm"),
    (dict(engine="trtllm", trtllm={"tensor_parallel_size": 0}), "trtllm.tensor_parallel_size: Input should be "
                                                                "greater than or equal to 1"),
    (dict(engine="trtllm", backend="tensorrt"), "backend: Input should be 'pytorch' or '_autodeploy'"),
    (dict(trtllm={"backend": "pytorch"}), "trtllm: is the section of engine trtllm, not of hf; remove it or set "
                                           "engine: trtllm"),
    (dict(engine="vllm"), "engine: unknown engine 'vllm'; use one of hf, trtllm"),
    (dict(engine_options={"compile": False}), "unknown key 'engine_options'"),
    (dict(meter="nvml"), "meter nvml with device cpu would meter a GPU while the model runs on the CPU"),
]


@pytest.mark.parametrize("over, match", ENGINE_SECTION_ERRORS)
def test_engine_section_errors_are_one_line(tmp_path, over, match):
    with pytest.raises(ParamsError) as e:
        _load(tmp_path, _measure_params(tmp_path, **over))
    msg = str(e.value)
    assert match in msg and "\n" not in msg, msg


def test_fingerprint_fields_and_values_of_hf_and_trtllm_are_kept(tmp_path):
    """The setup of an hf and a trtllm sweep, as the code before engine sections wrote it, still resumes."""
    from energykit import sweep
    from energykit.params import MeasureParams

    from conftest import ROOT

    old = json.loads((ROOT / "data/h100_paper_families_pilot/fingerprint.json").read_text())
    hf = _load(tmp_path, _measure_params(tmp_path, dtype="bfloat16", device="cuda", meter="nvml", min_window_s=1.0,
                                         compile=False, attention="flex_attention", decode="generate"))
    new = sweep.fingerprint(hf, {"gpu_uuid": old["setup"]["gpu_uuids"][0]})
    # measured with generate(): the decode loop (the default with flex attention) is another setup
    loop = _load(tmp_path, _measure_params(tmp_path, dtype="bfloat16", device="cuda", meter="nvml", min_window_s=1.0,
                                           compile=False, attention="flex_attention"))
    assert "decode: None -> 'loop'" in sweep.fingerprint_difference(
        old, sweep.fingerprint(loop, {"gpu_uuid": old["setup"]["gpu_uuids"][0]}))
    kept = {k: v for k, v in old["setup"].items() if k not in ("backend", "chunked_prefill", "tensor_parallel_size")}
    assert new["setup"]["max_len"] == hf.max_len  # the static cache, recorded since issue 18
    assert {k: v for k, v in new["setup"].items() if k != "libraries" and k != "max_len"} == {
        k: v for k, v in kept.items() if k != "libraries"}
    old["setup"]["libraries"] = new["setup"]["libraries"]
    old["models"] = new["models"]
    assert sweep.fingerprint_difference(old, new) == []  # the shipped folder resumes
    # a trtllm setup as the code before this change wrote it (every engine's options, the others at defaults)
    trt = MeasureParams(**_measure_params(tmp_path, engine="trtllm", meter="nvml", device="auto",
                                          trtllm={"chunked_prefill": True, "tensor_parallel_size": 2}))
    new = sweep.fingerprint(trt, {"gpu_uuids": ["GPU-a", "GPU-b"]})
    before = {"engine": "trtllm", "dtype": "float32", "min_window_s": 0.0, "meter": "nvml", "device": "auto",
              "compile": True, "attention": "flex_attention", "backend": "pytorch", "chunked_prefill": True,
              "tensor_parallel_size": 2, "gpu_uuids": ["GPU-a", "GPU-b"], "libraries": new["setup"]["libraries"]}
    # issue 21 changed how a trtllm window is measured: a folder of the earlier engine is not resumed
    assert sweep.fingerprint_difference({"setup": before, "models": new["models"]}, new) == [
        "flow: None -> 'auto'", f"trtllm_protocol: None -> {new['setup']['trtllm_protocol']!r}"]
    before.update(flow="auto", trtllm_protocol=new["setup"]["trtllm_protocol"])
    # the sweep's allocations (issue 18): what the engine sizes itself by
    before.update({k: new["setup"][k] for k in ("max_len", "max_batch_size", "max_input_len")})
    assert set(new["setup"]) == set(before) - {"compile", "attention"}
    assert sweep.fingerprint_difference({"setup": before, "models": new["models"]}, new) == []
    changed = dict(before, chunked_prefill=False)
    assert sweep.fingerprint_difference({"setup": changed, "models": {}}, new) == ["chunked_prefill: False -> True"]
    assert sweep.fingerprint_difference({"setup": dict(before, engine="hf"), "models": {}}, new) == [
        "engine: 'hf' -> 'trtllm'"]
    assert sweep.engine_gpus(trt) == 2 and sweep.engine_gpus(hf) == 1


def test_labels_caveats_and_install_hints_come_from_the_engine_class(monkeypatch):
    from energykit import sweep
    from energykit.engines import caveat

    assert sweep.engine_label({"engine": "hf", "transformers": "5.17.0", "compile": True,
                               "attention": "sdpa"}) == "hf transformers-5.17.0 compiled sdpa"
    assert sweep.engine_label({"engine": "hf", "transformers": "5.17.0"}) == "hf transformers-5.17.0 eager sdpa"
    assert sweep.engine_label({"engine": "trtllm", "tensorrt_llm": "1.2.0", "backend": "pytorch"}) == \
        "trtllm 1.2.0 pytorch"
    assert sweep.engine_label({"engine": "gone"}) == "gone"
    assert "reads the whole static cache" in caveat("hf transformers-5.17.0 compiled sdpa")
    # the probe files (shared/data README) ran transformers' default attention, sdpa, and their label says only that
    assert "reads the whole static cache" in caveat("transformers-5.17-static-cache-compiled")
    assert caveat("hf transformers-5.17.0 compiled flex_attention") == caveat("trtllm 1.2.0 pytorch") == ""
    monkeypatch.setitem(sys.modules, "tensorrt_llm", None)
    with pytest.raises(MissingExtraError, match=r"energykit\[trtllm\].*nvidia.github.io"):
        sweep.check_engine_installed("trtllm")


def test_a_new_engine_is_one_file_and_one_registry_line(tmp_path, monkeypatch):
    """tests/toy_engine.py plus one line in ENGINES: validated, fingerprinted, labelled and swept end to end."""
    from energykit import dataset, engines, sweep
    from toy_engine import ToyEngine

    monkeypatch.setitem(engines.ENGINES, ToyEngine.name, ToyEngine)  # the registry line

    with pytest.raises(ParamsError, match=r"unknown key 'toy.colour'"):
        _load(tmp_path, _measure_params(tmp_path, engine="toy", toy={"colour": 1}))
    with pytest.raises(ParamsError, match=r"compile: is an option of engine hf, not of toy"):
        _load(tmp_path, _measure_params(tmp_path, engine="toy", compile=True))
    with pytest.raises(ParamsError, match=r"engine toy has no model for arch 'opt' \(it runs llama\)"):
        _load(tmp_path, _measure_params(tmp_path, engine="toy", models=["opt-1.3b"]))
    with pytest.raises(ParamsError, match=r"work: is an option of engine toy, not of hf"):
        _load(tmp_path, _measure_params(tmp_path, work=2))

    params = _load(tmp_path, _measure_params(tmp_path, engine="toy", toy={"work": 2, "lanes": 3}))
    assert sweep.engine_gpus(params) == 3
    with pytest.warns(UserWarning, match="energy is NaN"):
        path = sweep.run(params, progress=False)
    ds = dataset.load(path)
    assert int(ds["duration_s"].notnull().sum()) == 2 * 2 * 2
    assert (ds["output_tokens"].values == ds["output_len"].values[None, None, None, :, None]).all()
    assert str(ds["engine"].values.ravel()[0]).startswith("toy numpy-") and ds.attrs["params"]["toy"]["work"] == 2
    out = tmp_path / "out"
    setup = json.loads((out / "fingerprint.json").read_text())["setup"]
    assert setup["engine"] == "toy" and setup["work"] == 2 and "lanes" not in setup and "compile" not in setup
    assert json.loads((out / "params.json").read_text())["toy"] == {"work": 2, "lanes": 3}
    # the folder resumes with the same options and refuses changed ones, one line naming the option
    assert sweep.run(_load(tmp_path, _measure_params(tmp_path, engine="toy", toy={"work": 2, "lanes": 3})),
                     progress=False) == path
    with pytest.raises(ParamsError, match=r"work: 2 -> 5"):
        sweep.run(_load(tmp_path, _measure_params(tmp_path, engine="toy", toy={"work": 5})), progress=False)


def test_trtllm_sweep_at_batch_16_records_one_batch_graphed_decode_and_reads_the_counter_after_the_gpu(
        tmp_path, monkeypatch):
    """The issue's done-when, through the sweep: every window's record, and every energy-counter read."""
    import yaml

    from energykit import sweep
    from energykit.iotools import read_window_log
    from energykit.params import load_measure_params
    from energykit.testing import FakeNvml

    trt = FakeTensorRTLLM(step_s=0.002).install(monkeypatch)
    nvml = FakeNvml(counter_period_s=0.01)
    monkeypatch.setitem(sys.modules, "pynvml", nvml)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    reads = []
    counter = nvml.nvmlDeviceGetTotalEnergyConsumption

    def read(handle):  # the kit's meter reads the counter only once the GPU's work is done
        reads.append(time.monotonic() >= trt.gpu_busy_until)
        return counter(handle)

    nvml.nvmlDeviceGetTotalEnergyConsumption = read
    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump(dict(engine="trtllm", models=[dict(TINY, name="t")], batch_sizes=[16],
                                        input_lens=[16, 32], output_lens=[4], repeats=2, min_window_s=0.06,
                                        meter="nvml", warmup=1, idle_s=0, output=str(tmp_path / "out"))))
    sweep.run(load_measure_params(path), progress=False)
    recs = read_window_log(tmp_path / "out" / sweep.LOG)[0]
    assert len(recs) == 4 and all(r["status"] == "ok" for r in recs)
    assert all(r["first_token_iterations"] == 1 and r["decode_graphed"] is True and r["ttft_spread_s"] < 16 * 0.01
               for r in recs)
    assert trt.ragged_batches() == 0 and trt.ungraphed_decode_steps() == 0
    assert len(reads) > 8 and all(reads)  # no window closed while the overlap scheduler's step still ran


def test_trtllm_sweep_takes_no_decode_wait_admits_whole_batches_and_times_the_simulated_step(tmp_path, monkeypatch):
    """Issue 26's done-when, against the stand-in: no decode step waits in the queue, every batch is admitted
    whole (the TensorRT flow, which cannot, is refused before any GPU time), and each window's step time
    (wall time per call over its executor iterations) is the stand-in's simulated step within 10 %."""
    import yaml

    from energykit import sweep
    from energykit.iotools import read_window_log
    from energykit.params import load_measure_params

    trt = FakeTensorRTLLM(step_s=0.02).install(monkeypatch)
    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump(dict(engine="trtllm", models=[dict(TINY, name="t")], batch_sizes=[4, 2],
                                        input_lens=[16, 32], output_lens=[4, 8], repeats=1, min_window_s=0.3,
                                        meter="none", warmup=1, idle_s=0, output=str(tmp_path / "out"))))
    with pytest.warns(UserWarning):
        sweep.run(load_measure_params(path), progress=False)
    recs = read_window_log(tmp_path / "out" / sweep.LOG)[0]
    assert len(recs) == 8 and all(r["status"] == "ok" for r in recs)
    assert trt.decode_queue_waits() == [] and trt.ragged_batches() == 0 and trt.ungraphed_decode_steps() == 0
    assert all(r["first_token_iterations"] == 1 for r in recs)
    steps = sorted(r["step_s"] / trt.step_s for r in recs)
    # wall time per iteration = the simulated step: the windows' median within 10 %; each window within 50 %, since
    # the stand-in really sleeps each step and a loaded 2-core machine oversleeps (12 % seen on one window at load 9).
    # The old engine's queue wait made a step 50x the simulated one (test_old_calls_fail_against_the_stand_in).
    assert 0.95 < steps[0] and 0.9 < steps[len(steps) // 2] < 1.1 and steps[-1] < 1.5, steps
    assert all(r["executor_step_s"] == pytest.approx(trt.step_s, rel=0.1) for r in recs)
    opt = dict(TINY, name="o", arch="opt", num_kv_heads=4, ffn_gated=0)
    path.write_text(yaml.safe_dump(dict(engine="trtllm", models=[opt], batch_sizes=[4], input_lens=[16],
                                        output_lens=[4], meter="none", output=str(tmp_path / "opt"))))
    with pytest.raises(ParamsError, match="only in its TensorRT engine-build flow, whose C\\+\\+ executor admits"):
        load_measure_params(path)  # at validation, with the library installed: before anything runs
    assert not (tmp_path / "opt").exists()


def _distribution(site, name: str, entry: str) -> None:
    """An installed distribution in ``site`` (a ``.dist-info`` folder, as pip writes it) whose only entry point is
    ``entry`` in the group ``energykit.engines`` (read by importlib.metadata, as the registry reads it)."""
    info = site / f"{name}-0.1.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(f"[energykit.engines]\n{entry}\n")
    (info / "RECORD").write_text("")


@pytest.fixture
def site(tmp_path, monkeypatch):
    """A folder on sys.path holding tests/toy_engine.py as the module ``energykit_toy`` of a third party; the
    registry forgets its entry points before and after."""
    import shutil
    from pathlib import Path

    from energykit import engines

    folder = tmp_path / "site"
    folder.mkdir()
    shutil.copy(Path(__file__).with_name("toy_engine.py"), folder / "energykit_toy.py")
    monkeypatch.syspath_prepend(str(folder))
    engines.ENGINES.reload()
    yield folder
    monkeypatch.undo()
    sys.modules.pop("energykit_toy", None)
    engines.ENGINES.reload()
    assert "toy" not in engines.ENGINES


def test_a_third_party_engine_registers_through_an_entry_point_and_sweeps(tmp_path, site):
    """No line in the kit: an installed distribution's entry point registers the toy engine, which is validated,
    swept, labelled, and asked by the summary for its attention (through the registry, never the label's text)."""
    from energykit import dataset, engines, summary, sweep

    _distribution(site, "energykit_toy", "toy = energykit_toy:ToyEngine")
    assert engines.ENGINES["toy"].__module__ == "energykit_toy" and list(engines.ENGINES)[:3] == ["hf", "trtllm", "serve"]
    with pytest.raises(ParamsError, match=r"unknown key 'toy.colour'"):
        _load(tmp_path, _measure_params(tmp_path, engine="toy", toy={"colour": 1}))
    params = _load(tmp_path, _measure_params(tmp_path, engine="toy", toy={"work": 2}, input_lens=[8], output_lens=[2],
                                             repeats=1))
    with pytest.warns(UserWarning, match="energy is NaN"):
        path = sweep.run(params, progress=False)
    ds = dataset.load(path)
    assert int(ds["duration_s"].notnull().sum()) == 1
    assert str(ds["engine"].values.ravel()[0]).startswith("toy numpy-")
    assert summary._attention(ds) == "not recorded" and summary._paper_difference(ds) == ""
    assert "attention not recorded" in summary.dataset_line(ds)


@pytest.mark.parametrize("entry, message", [
    ("hf = energykit_toy:ToyEngine", r"entry point hf = energykit_toy:ToyEngine \(group energykit.engines, distribution "
                                     r"energykit_bad\) clashes with the engine 'hf' of energykit.engines.hf"),
    ("toy = energykit_gone:ToyEngine", r"entry point toy = energykit_gone:ToyEngine .* cannot be loaded: "
                                       r"ModuleNotFoundError: No module named 'energykit_gone'; fix or uninstall"),
    ("other = energykit_toy:ToyEngine", r"is not an energykit.engines.Engine subclass named 'other'"),
    ("toy = energykit_toy:ToyOptions", r"is not an energykit.engines.Engine subclass named 'toy'"),
])
def test_a_clashing_or_broken_entry_point_is_one_line_naming_it(tmp_path, site, entry, message):
    from energykit import engines
    from energykit.params import MeasureParams

    _distribution(site, "energykit_bad", entry)
    with pytest.raises(ParamsError, match=message) as err:
        engines.engine_class("hf")
    assert "\n" not in str(err.value)
    with pytest.raises(ParamsError, match=message):  # a params file meets it before any GPU time
        MeasureParams(**_measure_params(tmp_path))


def test_summary_asks_the_engine_never_the_label_text():
    """The attention shown and the paper's difference come from the engine class found through the registry: an
    engine's name in a model's recorded versions, else the params', else the engine that claims the label."""
    import xarray as xr

    from energykit import summary

    def data(**attrs):
        return xr.Dataset(coords={"model": ["m"], "batch_size": [16]}, attrs=attrs)

    # a label naming flex attention, recorded versions that say sdpa: the versions win (the label is not read)
    ds = data(engine="hf transformers-5.17.0 compiled flex_attention",
              engine_versions={"m": {"engine": "hf", "attention": "sdpa"}})
    assert summary._attention(ds) == "sdpa"
    assert summary._attention(data(engine="x", params={"engine": "hf"})) == "not recorded (transformers' default: sdpa)"
    assert summary._attention(data(engine="x", params={"engine": "hf", "attention": "eager"})) == "eager"
    assert summary._attention(data(engine="trtllm 1.2.0 pytorch")) == "not recorded"
    assert summary._attention(data(engine="flex_attention of an unknown engine")) == "not recorded"  # no guess
    assert summary._attention(data(engine="transformers-5.17-static-cache-compiled")).endswith("default: sdpa)")
    assert "whole static cache" in summary._paper_difference(data(engine="transformers-5.17-static-cache-compiled"))
    assert summary._paper_difference(data(engine="hf transformers-5.24.0 loop cuda-graph flex_attention")) == ""


def test_a_cpu_shard_uses_the_cpus_slurm_gave_it(monkeypatch):
    """Two shards on a node's two cores, each with torch's default of every core, waited on each other's
    threads: a step 11x its pilot in CI. Under Slurm a CPU engine takes its allocation's CPUs."""
    from energykit.engines.hf import cpu_threads

    for name in ("SLURM_CPUS_PER_TASK", "SLURM_CPUS_ON_NODE"):
        monkeypatch.delenv(name, raising=False)
    free = cpu_threads()
    assert free == len(os.sched_getaffinity(0))
    monkeypatch.setenv("SLURM_CPUS_ON_NODE", "1")
    assert cpu_threads() == 1
    monkeypatch.setenv("SLURM_CPUS_PER_TASK", str(free + 8))  # never more than the process may run on
    assert cpu_threads() == free
    monkeypatch.setenv("SLURM_CPUS_PER_TASK", "two")  # not a count: the node's figure is used
    assert cpu_threads() == 1
