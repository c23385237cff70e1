"""The ``serve`` engine: exact-length knobs per dialect, faults (a fake server), and a REAL server.

The real server is ``transformers serve`` (PyPI ``transformers[serving]``, installed and started by
``scripts/serve_local.sh``) serving a tiny random-weight Llama that ``scripts/tiny_model.py`` writes: its
final norm is zero, so greedy decoding emits ``<eos>`` at once unless the server honours the exact-length
knob (transformers 5.24 ``cli/serving/utils.py`` ``_build_generation_config``: ``generation_config`` JSON
→ ``min_new_tokens``). The fake server below only tests fault paths; it never stands in for the real one.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import yaml

from conftest import ROOT
from energykit.engines.serve import DIALECTS, ServeEngine, ServeOptions, check_exact, knob_body
from energykit.errors import EngineError, ParamsError

GEOM = {"arch": "llama", "num_layers": 2, "hidden_size": 64, "num_heads": 4, "num_kv_heads": 2, "head_dim": 16,
        "intermediate_size": 128, "ffn_gated": 1, "vocab_size": 512, "tied_embeddings": 0,
        "max_position_embeddings": 2048}


# --- the knobs and the exactness check -------------------------------------------------------------------

def test_every_token_id_dialect_asks_for_min_and_max_and_ignores_eos():
    for d in ("vllm", "sglang", "trtllm", "llamacpp"):
        body = knob_body(d, 17)
        assert body["max_tokens"] == body["min_tokens"] == 17 and body["ignore_eos"] is True
        assert DIALECTS[d].token_ids


def test_transformers_gets_a_generation_config_and_no_field_its_server_rejects():
    body = knob_body("transformers", 9)
    # transformers 5.24 cli/serving/utils.py _validate_request: any key outside the params TypedDict is a 422
    assert "ignore_eos" not in body and "min_tokens" not in body
    assert json.loads(body["generation_config"]) == {"min_new_tokens": 9, "max_new_tokens": 9, "do_sample": False}
    assert not DIALECTS["transformers"].token_ids  # its /v1/completions: "prompt must be a string"


def test_exactness_names_the_ignored_knob():
    assert check_exact("vllm", 8, 4, {"prompt_tokens": 8, "completion_tokens": 4}, "length") == ""
    why = check_exact("llamacpp", 8, 4, {"prompt_tokens": 8, "completion_tokens": 1}, "stop")
    assert "completion_tokens 1 != output_len 4" in why and "min_tokens" in why
    assert "prompt_tokens 9 != input_len 8" in check_exact("vllm", 8, 4, {"prompt_tokens": 9, "completion_tokens": 4},
                                                           "length")
    assert "no usage" in check_exact("vllm", 8, 4, None, "length")
    # exact length but stopped by EOS is not exact: finish_reason must say "length"
    assert check_exact("sglang", 8, 4, {"prompt_tokens": 8, "completion_tokens": 4}, "stop")


@pytest.mark.parametrize("url", ["localhost:8000", "ftp://x", "http://"])
def test_a_bad_url_is_refused(url):
    with pytest.raises(ValueError, match="http"):
        ServeOptions(url=url)


def test_a_bad_gpu_is_refused():
    with pytest.raises(ValueError, match="UUID"):
        ServeOptions(gpus=["cuda:0"])


# --- faults, against a fake server -------------------------------------------------------------------------

class FakeServer:
    """A vLLM-like fake for fault paths: ``mode`` "exact", "ignore" (stops at EOS, ignoring the knobs),
    "error" (HTTP 500 with a message), "slow" (answers after ``delay_s``), "die" (closes mid-stream)."""

    def __init__(self, mode="exact", delay_s=0.0, version="0.0-fake", fail_after=None, owned_by="vllm"):
        self.mode, self.delay_s, self.bodies, self.version, self.fail_after = mode, delay_s, [], version, fail_after
        self.owned_by, self.energy_j = owned_by, 1000.0
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def _json(self, code, obj):
                data = json.dumps(obj).encode()
                self.send_response(code)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self):
                if self.path == "/v1/models":
                    return self._json(200, {"object": "list", "data": [{"id": "m", "owned_by": fake.owned_by,
                                                                        "max_model_len": 2048}]})
                if self.path == "/version":
                    return self._json(200, {"version": fake.version})
                if self.path == "/energy_metrics" and fake.owned_by == "tensorrt_llm":
                    fake.energy_j += 12.5
                    return self._json(200, {"total_energy_j": fake.energy_j})
                self._json(404, {"detail": "Not Found"})

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["content-length"])))
                fake.bodies.append(body)
                if fake.fail_after is not None and len(fake.bodies) > fake.fail_after:
                    return self._json(503, {"object": "error", "message": "engine dead (fake)"})
                if fake.mode == "error":
                    return self._json(500, {"object": "error", "message": "CUDA out of memory (fake)"})
                if fake.mode == "slow":
                    time.sleep(fake.delay_s)
                o = body["max_tokens"] if fake.mode != "ignore" else 1
                usage = {"prompt_tokens": len(body["prompt"]), "completion_tokens": o}
                finish = "length" if fake.mode != "ignore" else "stop"
                self.send_response(200)
                self.send_header("content-type", "text/event-stream")
                self.end_headers()
                for k in range(o):
                    if fake.mode == "die" and k == 1:
                        self.wfile.flush()
                        self.connection.shutdown(2)
                        return
                    chunk = {"choices": [{"text": f" t{k}", "finish_reason": finish if k == o - 1 else None}]}
                    self.wfile.write(f"data: {json.dumps(chunk)}\n\n".encode())
                self.wfile.write(f"data: {json.dumps({'choices': [], 'usage': usage})}\n\ndata: [DONE]\n\n".encode())

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def fake():
    servers = []

    def start(mode="exact", delay_s=0.0, **kw):
        servers.append(FakeServer(mode, delay_s, **kw))
        return servers[-1]

    yield start
    for s in servers:
        s.close()


def _engine(url, **kw):
    from energykit.engines import serve
    serve._INFO.clear()
    e = ServeEngine("m", GEOM, url=url, model="m", dialect=kw.pop("dialect", "auto"), **kw)
    e.load()
    return e


def _call(engine, b=2, i=8, o=4):
    req = engine.request(b, i, o)
    req.prepare(1)
    return req()


def test_an_exact_server_passes_with_fresh_token_id_prompts(fake):
    s = fake("exact")
    e = _engine(s.url)
    assert e.dialect == "vllm"  # from /v1/models owned_by
    g = _call(e, 3, 8, 4)
    assert g.output_tokens == 4 and g.extra["requests_exact"] == 3 and g.ttft_s >= 0
    _call(e, 3, 8, 4)
    prompts = [tuple(b["prompt"]) for b in s.bodies]
    assert len(set(prompts)) == 6 and all(len(p) == 8 for p in prompts)  # never a repeated prompt
    assert all(b["ignore_eos"] is True and b["min_tokens"] == 4 and b["stream"] for b in s.bodies)
    e.close()


def test_a_server_ignoring_the_knob_fails_the_call_naming_the_knob(fake):
    e = _engine(fake("ignore").url, dialect="llamacpp")
    with pytest.raises(EngineError, match=r"window not kept.*ignored the length knob min_tokens"):
        _call(e)
    e.close()


def test_an_http_error_is_quoted(fake):
    e = _engine(fake("error").url)
    with pytest.raises(EngineError, match=r"HTTP 500 .*CUDA out of memory \(fake\)"):
        _call(e)
    e.close()


def test_a_timeout_names_the_option(fake):
    e = _engine(fake("slow", delay_s=3.0).url, timeout_s=0.5)
    with pytest.raises(EngineError, match="serve.timeout_s 0.5"):
        _call(e, 1)
    e.close()


def test_a_server_dying_mid_stream_is_one_line(fake):
    e = _engine(fake("die").url)
    with pytest.raises(EngineError, match="may have died.*rerun to resume"):
        _call(e, 1)
    e.close()


def test_the_nvml_meter_reads_the_gpus_the_server_uses():
    from energykit.params import MeasureParams
    from energykit.sweep import meter_kwargs
    p = MeasureParams(engine="serve", serve={"gpus": [1, "GPU-0a1b"]}, models=[{"name": "m", **GEOM}],
                      batch_sizes=[1], input_lens=[8], output_lens=[4], output="o")
    assert meter_kwargs(p) == {"timeline": False, "gpus": 2, "device": [1, "GPU-0a1b"]}


def test_trtllm_serve_energy_counter_is_read_per_window_and_others_have_none(fake):
    e = _engine(fake(owned_by="tensorrt_llm").url)
    assert e.dialect == "trtllm"
    with e.energy_counter()() as c:
        pass
    assert c.total_energy == pytest.approx(12.5)  # the cumulative counter's difference over the window [J]
    assert _engine(fake().url).energy_counter() is None


def test_connection_refused_is_one_line():
    from energykit.engines import serve
    serve._INFO.clear()
    with pytest.raises(EngineError, match=r"cannot connect to the server at http://127.0.0.1:9/v1/models"):
        serve.server_info(ServeOptions(url="http://127.0.0.1:9"))


def test_a_model_the_server_does_not_serve_is_refused(fake):
    from energykit.engines import serve
    serve._INFO.clear()
    with pytest.raises(ParamsError, match=r"serves m, not 'other'"):
        serve.server_info(ServeOptions(url=fake().url, model="other"))


def _params(tmp_path, url, model, dialect, out, **over):
    p = {"engine": "serve", "serve": {"url": url, "model": model, "dialect": dialect},
         "models": [over.pop("models", {"name": "tiny", **GEOM})], "dtype": "float32",
         "batch_sizes": [1, 4], "input_lens": [8, 16, 32], "output_lens": [4, 8, 16], "repeats": 1,
         "min_window_s": 0.2, "meter": "process_cpu", "cpu_core_power_w": 10.0, "warmup": 1, "idle_s": 0.5,
         "output": str(out), **over}
    path = tmp_path / f"{out.name}.yaml"
    path.write_text(yaml.safe_dump(p))
    return path


def _cli(*args, timeout=900):
    return subprocess.run([sys.executable, "-m", "energykit", *args], capture_output=True, text=True,
                          timeout=timeout, cwd=ROOT)


@pytest.mark.slow
def test_measure_against_a_knob_ignoring_server_keeps_no_window(tmp_path, fake):
    """A Done-when of issue 28: every window fails, the error names the ignored knob, nothing is kept."""
    s = fake("ignore")
    out = tmp_path / "ignored"
    params = _params(tmp_path, s.url, "m", "llamacpp", out, meter="none", batch_sizes=[1],
                     input_lens=[8], output_lens=[4], warmup=0, idle_s=0)
    r = _cli("measure", str(params))
    assert r.returncode != 0
    assert "ignored the length knob min_tokens" in (r.stderr + (out / "windows.jsonl").read_text())
    recs = [json.loads(x) for x in (out / "windows.jsonl").read_text().splitlines()]
    assert recs and all(x["status"] == "error" for x in recs)


def _sweep(tmp_path, url, out, **over):
    from energykit.engines import serve
    from energykit.params import load_measure_params
    from energykit.sweep import run
    serve._INFO.clear()
    over = {"meter": "none", "batch_sizes": [2], "input_lens": [8], "output_lens": [4, 8], "warmup": 0,
            "idle_s": 0, "min_window_s": 0.05, **over}
    return run(load_measure_params(_params(tmp_path, url, "m", "auto", out, **over)), progress=False)


@pytest.mark.filterwarnings("ignore:meter 'none'")
def test_a_server_dying_mid_sweep_keeps_every_window_and_the_rerun_resumes(tmp_path, fake):
    from energykit.sweep import SweepFailures
    out = tmp_path / "dies"
    dying = fake("exact", fail_after=6)  # a window: 2 pilot calls + 1 call of B=2 requests; then 503 on every request
    with pytest.raises(SweepFailures, match="failed"):
        _sweep(tmp_path, dying.url, out, min_window_s=0)
    recs = [json.loads(x) for x in (out / "windows.jsonl").read_text().splitlines()]
    assert [r["status"] for r in recs].count("ok") >= 1 and any("HTTP 503" in r.get("error", "") for r in recs)
    kept = {(r["output_len"]) for r in recs if r["status"] == "ok"}
    healthy = fake("exact")
    _sweep(tmp_path, healthy.url, out, min_window_s=0)  # same server identity (version, model, dialect): resumes
    recs = [json.loads(x) for x in (out / "windows.jsonl").read_text().splitlines()]
    assert {r["output_len"] for r in recs if r["status"] == "ok"} == {4, 8}
    assert all(len(b["prompt"]) == 8 for b in healthy.bodies) and kept


@pytest.mark.filterwarnings("ignore:meter 'none'")
def test_a_server_restarted_with_another_version_is_a_mixed_sweep_and_refused(tmp_path, fake):
    out = tmp_path / "mixed"
    _sweep(tmp_path, fake("exact", version="1.0").url, out, output_lens=[4])
    with pytest.raises(ParamsError, match=r"another setup \(.*server_version: '1.0' -> '2.0'"):
        _sweep(tmp_path, fake("exact", version="2.0").url, out, output_lens=[4, 8])


# --- the real server ---------------------------------------------------------------------------------------

PORT = int(os.environ.get("ENERGYKIT_SERVE_PORT", "8471"))


@pytest.fixture(scope="module")
def real_server(tmp_path_factory):
    """transformers serve on the CPU with the tiny model, installed and started by scripts/serve_local.sh."""
    env = {**os.environ, "PYTHON": sys.executable, "SERVE_LOCAL_DIR": str(tmp_path_factory.mktemp("serve"))}
    for step in (["install"], ["start", str(PORT)]):
        r = subprocess.run(["bash", str(ROOT / "scripts" / "serve_local.sh"), *step], capture_output=True, text=True,
                           env=env, timeout=600)
        if r.returncode == 3:
            pytest.skip(r.stdout.strip() or r.stderr.strip())
        assert r.returncode == 0, r.stdout + r.stderr
    model = str(Path(env["SERVE_LOCAL_DIR"]) / "model")
    yield f"http://127.0.0.1:{PORT}", model
    subprocess.run(["bash", str(ROOT / "scripts" / "serve_local.sh"), "stop"], env=env, timeout=60)


@pytest.mark.slow
def test_real_server_sweep_is_exact_at_b1_and_b4_and_fits(tmp_path, real_server):
    """The Done-when of issue 28 against a real OpenAI-compatible server."""
    url, model = real_server
    out = tmp_path / "real"
    params = _params(tmp_path, url, model, "auto", out, models=model)
    r = _cli("measure", str(params))
    assert r.returncode == 0, r.stderr[-2000:]
    recs = [json.loads(x) for x in (out / "windows.jsonl").read_text().splitlines()]
    assert {x["batch_size"] for x in recs} == {1, 4} and len(recs) == 18
    assert all(x["status"] == "ok" and x["requests_exact"] == x["batch_size"] for x in recs)
    assert all(x["energy_method"] == "process_cpu_time_x_nominal_power_proxy" and x["energy_j"] > 0 for x in recs)
    fp = json.loads((out / "fingerprint.json").read_text())["setup"]
    assert fp["server_dialect"] == "transformers" and fp["server_model"] == model
    import xarray as xr
    with xr.open_dataset(out / "measurements.nc") as ds:
        assert "proxy" in ds.attrs["energy_method"] and "not measured joules" in ds.attrs["energy_method"]
    fit = _cli("fit", str(out / "measurements.nc"))
    assert fit.returncode == 0, fit.stderr[-2000:]


@pytest.mark.slow
def test_real_server_rejects_a_wrong_dialect_and_keeps_no_window(tmp_path, real_server):
    """transformers serve answers 422 to vLLM's ignore_eos/min_tokens: quoted, and no window kept."""
    url, model = real_server
    out = tmp_path / "wrong"
    params = _params(tmp_path, url, model, "vllm", out, models=model, batch_sizes=[1], input_lens=[8],
                     output_lens=[4], warmup=0, idle_s=0, meter="none")
    r = _cli("measure", str(params))
    assert r.returncode != 0
    text = r.stderr + (out / "windows.jsonl").read_text()
    assert "HTTP 422" in text and "ignore_eos" in text
    recs = [json.loads(x) for x in (out / "windows.jsonl").read_text().splitlines()]
    assert recs and all(x["status"] == "error" for x in recs)


def test_text_prompts_have_exactly_the_tokens_asked_with_a_byte_level_bpe_tokenizer():
    """The transformers dialect takes text: drawn ids are decoded and kept only if they encode back to i."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    corpus = ["the quick brown fox jumps over the lazy dog", "energy of inference scales with input and output"] * 50
    tok.train_from_iterator(corpus, trainers.BpeTrainer(vocab_size=300, special_tokens=["<eos>"]))
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<eos>")
    e = ServeEngine("m", {**GEOM, "vocab_size": 300})
    e.tokenizer = fast
    prompts = [e._prompt(n) for n in (1, 8, 64, 256)]
    assert [len(fast(p)["input_ids"]) for p in prompts] == [1, 8, 64, 256]
    assert len({e._prompt(8) for _ in range(5)}) == 5  # fresh every call
