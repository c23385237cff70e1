"""Engines: the hf engine on the CPU, and the trtllm engine against a fake of TensorRT-LLM 1.2.

The fake (:class:`energykit.testing.FakeTensorRTLLM`) is written from TensorRT-LLM 1.2's source:
``tensorrt_llm/llmapi/llm.py`` (argument check, ``_prepare_sampling_params``, ``_check_arguments``),
``tensorrt_llm/llmapi/llm_args.py`` (``BaseLlmArgs``/``TorchLlmArgs`` fields, ``KvCacheConfig``),
``tensorrt_llm/sampling_params.py`` and ``tensorrt_llm/_torch/models/__init__.py``; see the notes in
``energykit/testing.py``.
"""

import json
import sys

import pytest

from energykit import windows
from energykit.engines import Request, make_engine
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
@pytest.fixture
def trt(monkeypatch):
    return FakeTensorRTLLM().install(monkeypatch)


def _engine(tmp_path, **kw):
    args = dict(name="m", geometry=TINY, dtype="bfloat16", max_len=300, max_input_len=256, max_batch_size=4,
                workdir=str(tmp_path / "ckpt"))
    args.update(kw)
    return make_engine("trtllm", **args)


def test_trtllm_calls_on_the_real_contract(trt, tmp_path):
    eng = _engine(tmp_path)
    eng.load()
    kind, kw = trt.calls[0]  # KvCacheConfig
    assert kind == "KvCacheConfig" and kw == {"enable_block_reuse": False}
    kind, kw = trt.calls[1]
    assert kind == "LLM"
    assert kw["load_format"] == "dummy" and kw["skip_tokenizer_init"] is True and kw["return_perf_metrics"] is True
    assert kw["max_num_tokens"] >= 4 * 256 and kw["enable_chunked_prefill"] is False
    assert kw["max_batch_size"] == 4 and kw["max_seq_len"] == 300 and kw["backend"] == "pytorch"
    cfg = json.loads((tmp_path / "ckpt" / "m" / "config.json").read_text())
    assert cfg["architectures"] == ["LlamaForCausalLM"] and cfg["num_key_value_heads"] == 2
    assert not list((tmp_path / "ckpt" / "m").glob("*.safetensors"))  # no weights written: dummy load
    req = eng.request(4, 50, 9)
    sp = [c for c in trt.calls if c[0] == "SamplingParams"][-1][1]
    assert sp["end_id"] is not None and sp["ignore_eos"] is True and sp["max_tokens"] == 9
    req.prepare(1)
    g = req()
    gen = [c for c in trt.calls if c[0] == "generate"][-1][1]
    assert gen["use_tqdm"] is False
    assert len(gen["inputs"]) == 4 and all(len(p) == 50 for p in gen["inputs"])
    assert all(0 <= t < TINY["vocab_size"] for p in gen["inputs"] for t in p)
    assert g.output_tokens == 9 and g.ttft_s == pytest.approx(0.05)
    v = eng.versions()
    assert v["kv_cache"] == "paged, block reuse off" and v["chunked_prefill"] is False
    eng.close()
    assert trt.calls[-1][0] == "shutdown"


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
    eng = _engine(tmp_path, chunked_prefill=True, max_batch_size=16, max_input_len=4096, max_len=5000)
    eng.load()
    kw = trt.calls[1][1]
    assert kw["enable_chunked_prefill"] is True and kw["max_num_tokens"] == 8192
    assert eng.versions()["chunked_prefill"] is True


def test_trtllm_long_batch_prefill_is_not_split(trt, tmp_path):
    eng = _engine(tmp_path, max_batch_size=16, max_input_len=4096, max_len=5000)
    eng.load()
    assert trt.calls[1][1]["max_num_tokens"] == 16 * 4096
    req = eng.request(16, 4096, 2)
    req.prepare(1)
    req()
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
    long = trt.LLM(model=str(d), skip_tokenizer_init=True, load_format="dummy", max_seq_len=5000)
    long.generate([[2] * 4096] * 16, ok, use_tqdm=False)
    assert trt.split_prefills == 1


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
    with pytest.raises(TypeError):
        trt.SamplingParams(max_new_tokens=3)
    with pytest.raises(ValueError, match="Extra inputs"):
        trt.llmapi.KvCacheConfig(block_reuse=False)
    (d / "config.json").write_text(json.dumps({"architectures": ["OPTForCausalLM"]}))
    with pytest.raises(ValueError, match="Unknown architecture"):
        trt.LLM(model=str(d), load_format="dummy")


def test_trtllm_unsupported_arch_fails_before_loading(trt, tmp_path):
    opt = dict(TINY, arch="opt", num_kv_heads=4, ffn_gated=0)
    eng = _engine(tmp_path, geometry=opt)
    with pytest.raises(ParamsError, match=r"no model for arch 'opt'.*engine: hf.*MHA-shaped llama"):
        eng.load()
    assert trt.calls == []


def test_trtllm_short_output_is_an_error(monkeypatch, tmp_path):
    FakeTensorRTLLM(short_by=1).install(monkeypatch)
    eng = _engine(tmp_path)
    eng.load()
    req = eng.request(2, 10, 5)
    req.prepare(1)
    with pytest.raises(EngineError, match="asked for 5 new tokens"):
        req()


def test_trtllm_missing_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorrt_llm", None)  # import fails
    eng = make_engine("trtllm", name="m", geometry=TINY, checkpoint="x")
    with pytest.raises(MissingExtraError, match=r"energykit\[trtllm\].*NVIDIA"):
        eng.load()


def test_hf_missing_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "transformers", None)
    eng = make_engine("hf", name="m", geometry=TINY)
    with pytest.raises(MissingExtraError, match=r"energykit\[hf\]"):
        eng.load()


def test_unknown_engine():
    with pytest.raises(ParamsError, match="unknown engine 'vllm'"):
        make_engine("vllm")
