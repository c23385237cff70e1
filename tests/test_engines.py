import sys

import pytest

from energykit.engines import make_engine
from energykit.errors import EngineError, MissingExtraError, ParamsError
from energykit.testing import FakeTensorRTLLM

TINY = dict(arch="llama", num_layers=2, hidden_size=32, num_heads=4, num_kv_heads=2, head_dim=8,
            intermediate_size=64, ffn_gated=1, vocab_size=128, tied_embeddings=1, max_position_embeddings=256)


def test_hf_engine_on_cpu_exact_output_counts():
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    eng = make_engine("hf", name="tiny", geometry=TINY, dtype="float32", device="cpu", max_len=64)
    eng.load()
    g = eng.request(3, 16, 7)()
    assert g.output_tokens == 7
    # the static cache is allocated once per batch size and reused
    eng.request(3, 40, 20)()
    assert list(eng._caches) == [3]
    with pytest.raises(EngineError, match="exceeds the static cache"):
        eng.request(1, 60, 10)
    v = eng.versions()
    assert "torch" in v and v["compile"] is False  # no compilation on the CPU
    eng.close()


@pytest.mark.parametrize("arch", ["opt", "qwen2", "gemma2", "falcon", "granite"])
def test_hf_engine_other_families(arch):
    pytest.importorskip("transformers")
    geom = dict(TINY, arch=arch, sliding_window=8)
    if arch in ("opt", "falcon"):
        geom.update(num_kv_heads=1 if arch == "falcon" else 4, ffn_gated=0)
    eng = make_engine("hf", name=arch, geometry=geom, dtype="float32", device="cpu", max_len=48)
    eng.load()
    assert eng.request(2, 20, 5)().output_tokens == 5


def test_trtllm_exact_calls(monkeypatch, tmp_path):
    fake = FakeTensorRTLLM()
    monkeypatch.setitem(sys.modules, "tensorrt_llm", fake)
    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    eng = make_engine("trtllm", name="m", geometry=TINY, checkpoint=str(ckpt), dtype="bfloat16",
                      max_len=300, max_batch_size=4)
    eng.load()
    kind, kwargs = fake.calls[0]
    assert kind == "LLM"
    assert kwargs == dict(model=str(ckpt), skip_tokenizer_init=True, dtype="bfloat16", max_batch_size=4, max_seq_len=300)
    call = eng.request(4, 50, 9)
    sp_kind, sp = fake.calls[1]
    assert sp_kind == "SamplingParams"
    assert sp == dict(max_tokens=9, ignore_eos=True, temperature=0.0, detokenize=False, return_perf_metrics=True)
    g = call()
    gen_kind, gen = fake.calls[2]
    assert gen_kind == "generate" and gen["use_tqdm"] is False
    assert len(gen["inputs"]) == 4 and all(len(p) == 50 for p in gen["inputs"])
    assert all(0 <= t < TINY["vocab_size"] for p in gen["inputs"] for t in p)
    assert g.output_tokens == 9 and g.ttft_s == pytest.approx(0.05)
    eng.close()
    assert fake.calls[-1][0] == "shutdown"


def test_trtllm_backend_passed_when_asked(monkeypatch, tmp_path):
    fake = FakeTensorRTLLM()
    monkeypatch.setitem(sys.modules, "tensorrt_llm", fake)
    eng = make_engine("trtllm", name="m", geometry=TINY, checkpoint=str(tmp_path), backend="pytorch")
    eng.load()
    assert fake.calls[0][1]["backend"] == "pytorch"


def test_trtllm_short_output_is_an_error(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "tensorrt_llm", FakeTensorRTLLM(short_by=1))
    eng = make_engine("trtllm", name="m", geometry=TINY, checkpoint=str(tmp_path))
    eng.load()
    with pytest.raises(EngineError, match="asked for 5 new tokens"):
        eng.request(2, 10, 5)()


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
