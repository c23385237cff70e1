"""The ``serve`` engine: measure any OpenAI-compatible server (vLLM, SGLang, trtllm-serve, llama.cpp,
transformers serve) over HTTP, with exact lengths checked on every request.

The kit does not load the model: the server does. Each call sends the batch's B requests to
``/v1/completions`` together (one async HTTP client, streaming), records when each request's first and
last token arrived, and checks every response: ``usage.prompt_tokens == i``,
``usage.completion_tokens == o`` and ``finish_reason == "length"``. A request that is not exact fails
the call with an :class:`~energykit.errors.EngineError` naming the knob the server ignored; the sweep
records the window as failed (not kept) and the next run measures it again, as a ragged batch is.

**Exact output lengths.** Each server has its own knob, and some ignore the ones they do not know
(each row checked against that server's source):

========== ======================================== =====================================================
dialect    sent with ``max_tokens: o``              source
========== ======================================== =====================================================
vllm       ``ignore_eos: true``, ``min_tokens: o``  vllm ``vllm/entrypoints/openai/protocol.py``
                                                    (``CompletionRequest``: ``ignore_eos``, ``min_tokens``;
                                                    ``prompt`` may be a list of token ids)
sglang     ``ignore_eos: true``, ``min_tokens: o``  sglang ``python/sglang/srt/entrypoints/openai/protocol.py``
                                                    ("extra parameters for SRT backend": ``ignore_eos``,
                                                    ``min_tokens`` → sampling ``min_new_tokens``)
trtllm     ``ignore_eos: true``, ``min_tokens: o``  TensorRT-LLM ``tensorrt_llm/serve/openai_protocol.py``
                                                    @0076e93 (``OpenAIBaseModel``: ``extra="forbid"``, so
                                                    an unknown field is a 4xx, never ignored)
llamacpp   ``min_tokens: o``, ``ignore_eos: true``  llama-cpp-python ``llama_cpp/server/types.py``
                                                    (``min_tokens``; it ignores ``ignore_eos``); llama.cpp
                                                    ``tools/server`` reads ``ignore_eos``
transformers ``generation_config`` JSON with         transformers 5.24 ``cli/serving/completion.py`` and
           ``min_new_tokens = max_new_tokens = o``  ``utils.py`` (``_validate_request``: an unknown field such
                                                    as ``ignore_eos`` is HTTP 422; ``prompt`` must be a
                                                    string: text prompts)
========== ======================================== =====================================================

**Prompts.** Token-id lists where the server takes them (exact ``i``, no tokenizer drift): fresh random
ids every call, so that prefix caching never skips a prefill. Where the server takes text only
(``transformers``), random ids are decoded with the model's tokenizer (``tokenizer``, by default the
served model's name) and kept only if they encode back to exactly ``i`` tokens; the server's
``usage.prompt_tokens`` is checked all the same.

**Identity.** :meth:`ServeEngine.fingerprint` asks the server (``/v1/models``, its version endpoint) for
the dialect, the server's version, the model and its ``max_model_len`` where it tells; the fingerprint
refuses a folder measured against a server started with other settings, as the kit refuses any other
mixed setup. The fingerprint is asked once per URL and process.

**Energy.** The kit's meter reads the GPUs the server uses (``gpus``: NVML indices or UUIDs). Where the
server exposes its own energy counter (trtllm-serve ``/energy_metrics``, ``total_energy_j``, as issue 28
reports it; not yet verified against TensorRT-LLM's ``serve/openai_server.py``), its difference over each
window is recorded beside the kit's (``library_energy_j``). A server without the endpoint records none. Without a GPU,
``meter: process_cpu`` meters the server process's CPU time times a stated nominal power: a proxy,
labelled as such.

**Where the parts live.** This module holds what differs between servers (the dialects: the fields that
ask for exact lengths and the check of each response), the ``serve:`` options, the server's identity and
the engine; :mod:`energykit.engines.serve_http` holds the HTTP exchange every dialect shares (one completion
streamed and timed, JSON endpoints, the process listening on a port).
"""

from __future__ import annotations

import asyncio
import json
import math
import time
from dataclasses import dataclass
from typing import Literal, Union
from urllib.parse import urlparse

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, StrictInt, field_validator

from ..errors import EngineError, MissingExtraError, ParamsError
from .base import Engine, Generation, Request
from .serve_http import get_json, listening_pid, post_completion, require_httpx

__all__ = ["DIALECTS", "Dialect", "ServeOptions", "ServeEngine", "server_info", "knob_body", "check_exact",
           "listening_pid"]


@dataclass(frozen=True)
class Dialect:
    """What one server family takes to produce exactly ``o`` new tokens, and how it takes prompts."""

    token_ids: bool
    """The server takes ``prompt`` as a list of token ids."""
    knob: str
    """The knob named in errors when the server did not honour it."""
    version_path: str = "/version"
    """Where the server says its version (``""``: nowhere)."""


DIALECTS: dict[str, Dialect] = {
    "vllm": Dialect(True, "ignore_eos + min_tokens", "/version"),
    "sglang": Dialect(True, "ignore_eos + min_tokens", "/get_server_info"),
    "trtllm": Dialect(True, "ignore_eos + min_tokens", "/version"),
    "llamacpp": Dialect(True, "min_tokens (ignore_eos for llama.cpp's own server)", "/props"),
    "transformers": Dialect(False, "generation_config.min_new_tokens", ""),
}
"""The dialects (``dialect:`` in the ``serve`` section), each verified against the server's source."""


def knob_body(dialect: str, output_len: int) -> dict:
    """The request fields that ask ``dialect``'s server for exactly ``output_len`` new tokens (greedy)."""
    o = int(output_len)
    if dialect == "transformers":
        return {"max_tokens": o, "temperature": 0.0,
                "generation_config": json.dumps({"min_new_tokens": o, "max_new_tokens": o, "do_sample": False})}
    return {"max_tokens": o, "min_tokens": o, "ignore_eos": True, "temperature": 0.0}


def check_exact(dialect: str, input_len: int, output_len: int, usage: dict | None, finish_reason) -> str:
    """``""`` if one response is exact, else why not (naming the length knob the server did not honour)."""
    if not usage:
        return "the server sent no usage (prompt_tokens, completion_tokens); it cannot be checked"
    p, c = usage.get("prompt_tokens"), usage.get("completion_tokens")
    if p != input_len:
        how = "token-id prompt" if DIALECTS[dialect].token_ids else "text prompt (tokenizer drift: set tokenizer:)"
        return f"usage.prompt_tokens {p} != input_len {input_len} ({how})"
    if c != output_len or finish_reason != "length":
        return (f"usage.completion_tokens {c} != output_len {output_len} (finish_reason {finish_reason!r}): the "
                f"server ignored the length knob {DIALECTS[dialect].knob} of dialect {dialect}; set the dialect "
                "of this server")
    return ""


class ServeOptions(BaseModel):
    """The ``serve:`` section of a params file."""

    model_config = ConfigDict(extra="forbid")

    url: str = "http://127.0.0.1:8000"
    """Base URL of the server (its ``/v1/completions`` is called)."""
    model: str = ""
    """The model as the server names it (``/v1/models``); empty: the params model's name."""
    dialect: Literal["auto", "vllm", "sglang", "trtllm", "llamacpp", "transformers"] = "auto"
    """How to ask for exact lengths; ``auto`` asks the server (``/v1/models`` ``owned_by``, version endpoints)."""
    gpus: list[Union[StrictInt, str]] = Field(default_factory=list)
    """The GPUs the server uses, which the NVML meter reads (indices or ``GPU-...`` UUIDs); empty: GPU 0."""
    timeout_s: float = Field(600.0, gt=0, le=86400, allow_inf_nan=False)
    """Seconds one request may take before the call fails."""
    stream: bool = True
    """Stream the responses (time of each request's first and last token); false: one JSON each."""
    tokenizer: str = ""
    """Tokenizer (path or hub name) for text-prompt dialects; empty: the served model's name."""
    server_pid: StrictInt | None = Field(None, ge=1)
    """The server's process (``meter: process_cpu``); empty: the process listening on the URL's port here."""

    @field_validator("url")
    @classmethod
    def _url(cls, v: str) -> str:
        u = urlparse(v)
        if u.scheme not in ("http", "https") or not u.hostname:
            raise ValueError(f"url {v!r} is not an http(s) URL; use e.g. http://127.0.0.1:8000")
        return v.rstrip("/")

    @field_validator("gpus")
    @classmethod
    def _gpus(cls, v):
        for g in v:
            if isinstance(g, str) and not g.startswith(("GPU-", "MIG-")):
                raise ValueError(f"gpu {g!r} is neither an NVML index nor a GPU-/MIG- UUID")
            if isinstance(g, int) and g < 0:
                raise ValueError(f"gpu index {g} is negative")
        return v


_INFO: dict[tuple, dict] = {}


def server_info(options: ServeOptions, model: str = "") -> dict:
    """What the server says about itself: dialect, version, models and limits (asked once per URL)."""
    key = (options.url, options.dialect, options.model or model)
    if key in _INFO:
        return _INFO[key]
    httpx = require_httpx()
    with httpx.Client(timeout=min(options.timeout_s, 30.0)) as client:
        models = get_json(client, options.url + "/v1/models")
        if not isinstance(models, dict) or not isinstance(models.get("data"), list):
            raise EngineError(f"{options.url}/v1/models did not list models; is this an OpenAI-compatible server?")
        cards = [m for m in models["data"] if isinstance(m, dict)]
        ids = [str(m.get("id")) for m in cards]
        want = options.model or model
        if want and want not in ids:
            raise ParamsError(f"the server at {options.url} serves {', '.join(ids) or 'no model'}, not {want!r}; "
                              f"set serve.model to one of them")
        card = next((m for m in cards if str(m.get("id")) == want), cards[0] if cards else {})
        owned = str(card.get("owned_by", ""))
        dialect = options.dialect
        version = {}
        if dialect == "auto":
            dialect = {"vllm": "vllm", "sglang": "sglang", "tensorrt_llm": "trtllm", "llamacpp": "llamacpp",
                       "local": "transformers"}.get(owned, "")
        if not dialect:
            raise ParamsError(f"cannot tell the server's dialect at {options.url} (owned_by {owned!r}); set "
                              f"serve.dialect to one of {', '.join(DIALECTS)}")
        path = DIALECTS[dialect].version_path
        if path:
            version = get_json(client, options.url + path) or {}
    info = {"dialect": dialect, "model": want or str(card.get("id", "")), "owned_by": owned,
            "server_version": str(version.get("version", version.get("text", "")))[:80] if isinstance(version, dict)
            else "",
            "max_model_len": card.get("max_model_len"),
            "max_batch": (version.get("max_running_requests") or version.get("total_slots"))
            if isinstance(version, dict) else None}
    _INFO[key] = info
    return info


class ServeEngine(Engine):
    """An OpenAI-compatible server measured over HTTP; the kit meters the GPUs (or process) it runs on."""

    name = "serve"
    Options = ServeOptions
    requires = ("httpx",)
    extra = "serve"
    install_hint = "the server itself runs apart, e.g. vllm serve MODEL or trtllm-serve MODEL"

    @classmethod
    def preflight(cls, params) -> None:
        """The server answers, serves the model, and its dialect is known (before anything is written)."""
        for name, _, _ in params.resolved:
            server_info(params.engine_options, name)

    @classmethod
    def gpu_count(cls, options: ServeOptions) -> int:
        return max(1, len(options.gpus))

    @classmethod
    def metered_gpus(cls, options: ServeOptions):
        """The NVML devices the meter reads: the server's GPUs (``None``: ``CUDA_VISIBLE_DEVICES``)."""
        return list(options.gpus) or None

    @classmethod
    def metered_pid(cls, options: ServeOptions) -> int:
        """The server's process, for ``meter: process_cpu``."""
        return options.server_pid or listening_pid(options.url)

    @classmethod
    def fingerprint(cls, options: ServeOptions) -> dict:
        info = dict(server_info(options))
        return {"url_host": urlparse(options.url).hostname, "stream": options.stream,
                **{f"server_{k}" if not k.startswith("server_") else k: v for k, v in info.items()}}

    @classmethod
    def engine_kwargs(cls, params) -> dict:
        return params.engine_options.model_dump()

    @classmethod
    def label(cls, versions: dict) -> str:
        return f"serve {versions.get('dialect', '?')} {versions.get('server_version', '')}".strip()

    def __init__(self, name, geometry, checkpoint=None, dtype="bfloat16", max_len=2048, seed=0,
                 url="http://127.0.0.1:8000", model="",
                 dialect="auto", gpus=(), timeout_s=600.0, stream=True, tokenizer="", server_pid=None):
        self.options = ServeOptions(url=url, model=model, dialect=dialect, gpus=list(gpus), timeout_s=timeout_s,
                                    stream=stream, tokenizer=tokenizer, server_pid=server_pid)
        self.model_name = model or name
        self.geometry = geometry
        self.vocab_size = int(geometry.get("vocab_size", 0))
        self.rng = np.random.default_rng(seed)
        self.info: dict = {}
        self.tokenizer = None
        self._loop = None
        self._client = None

    @property
    def dialect(self) -> str:
        return self.info["dialect"]

    def load(self) -> None:
        httpx = require_httpx()
        self.info = server_info(self.options, self.model_name)
        if self.vocab_size < 2:
            raise ParamsError(f"model {self.model_name!r}: the geometry's vocab_size {self.vocab_size} cannot give "
                              "random prompts; give the model's geometry or its config.json in models:")
        if not DIALECTS[self.dialect].token_ids:
            try:
                from transformers import AutoTokenizer
            except ImportError:
                raise MissingExtraError("transformers", "hf", "text-prompt dialects need the model's tokenizer") from None
            name = self.options.tokenizer or self.model_name
            try:
                self.tokenizer = AutoTokenizer.from_pretrained(name)
            except Exception as e:
                raise EngineError(f"cannot load tokenizer {name!r} for text prompts ({type(e).__name__}); set "
                                  "serve.tokenizer to the served model's tokenizer") from None
        self._loop = asyncio.new_event_loop()
        limits = httpx.Limits(max_connections=None, max_keepalive_connections=None)
        self._client = httpx.AsyncClient(base_url=self.options.url, timeout=self.options.timeout_s, limits=limits)

    def _text_ids(self) -> tuple[list[int], int]:
        """Token ids for text prompts, and the special tokens the tokenizer adds to every text.

        Prefer whole words with a leading space (`` the``, `` cat``): a run of them decodes and encodes back
        to the same ids with BPE/SentencePiece tokenizers, so the prompt has exactly the tokens drawn.
        """
        if getattr(self, "_ids", None) is None:
            tok, special = self.tokenizer, set(self.tokenizer.all_special_ids)
            ids = [t for t in range(min(self.vocab_size, len(tok))) if t not in special]
            words = []
            for t in ids:
                text = tok.decode([t])
                if len(text) > 2 and text[0] == " " and text[1:].isalpha() \
                        and tok.encode(text, add_special_tokens=False) == [t]:
                    words.append(t)
            self._ids = (words if len(words) >= 100 else ids,
                         len(tok("", add_special_tokens=True)["input_ids"]))
        return self._ids

    def _prompt(self, input_len: int):
        if self.tokenizer is None:
            return self.rng.integers(0, self.vocab_size, size=input_len).tolist()
        ids, special = self._text_ids()
        for _ in range(50):
            text = self.tokenizer.decode(self.rng.choice(ids, size=max(input_len - special, 0)).tolist())
            if len(self.tokenizer(text, add_special_tokens=True)["input_ids"]) == input_len:
                return text
        raise EngineError(f"cannot draw a text prompt that tokenizes to exactly {input_len} tokens with "
                          f"{self.options.tokenizer or self.model_name!r}; set serve.tokenizer or use a token-id dialect")

    def request(self, batch_size: int, input_len: int, output_len: int) -> Request:
        b, i, o = int(batch_size), int(input_len), int(output_len)
        if i < 1 or o < 1:
            raise EngineError(f"input_len {i} and output_len {o} must be at least 1 token")

        def make_prompts():
            return [self._prompt(i) for _ in range(b)]

        def run(prompts) -> Generation:
            results = self._loop.run_until_complete(self._batch(prompts, i, o))
            t0 = min(r["sent_s"] for r in results)
            first = [r["first_token_s"] - t0 for r in results]
            last = [r["last_token_s"] - t0 for r in results]
            return Generation(output_tokens=o, ttft_s=float(np.mean(first)),
                              extra={"ttft_spread_s": float(np.ptp(first)), "last_token_spread_s": float(np.ptp(last)),
                                     "requests_exact": len(results)})

        return Request(make_prompts, run)

    async def _batch(self, prompts, i: int, o: int) -> list[dict]:
        results = await asyncio.gather(*(self.complete(p, i, o) for p in prompts), return_exceptions=True)
        errors = [r for r in results if isinstance(r, BaseException)]
        if errors:
            first = errors[0]
            if isinstance(first, EngineError):
                raise EngineError(f"{len(errors)} of {len(prompts)} requests failed: {first}") from None
            raise first
        return results

    async def complete(self, prompt, input_len: int, output_len: int) -> dict:
        """One request: send, stream, time the first and last token, check its exactness (else raise)."""
        rec = await self.send(prompt, input_len, output_len)
        if rec["error"]:
            raise EngineError(rec["error"])
        return rec

    async def send(self, prompt, input_len: int, output_len: int) -> dict:
        """One request, never raising for what the server did: a record with ``sent_s``, ``first_token_s``,
        ``last_token_s`` (``time.perf_counter`` [s]), ``prompt_tokens``, ``completion_tokens`` (the server's
        usage, or None) and ``error`` (None when exact, else the one-line reason)."""
        rec = {"sent_s": time.perf_counter(), "first_token_s": math.nan, "last_token_s": math.nan,
               "prompt_tokens": None, "completion_tokens": None, "error": None}
        try:
            usage, finish = await self._exchange(prompt, output_len, rec)
        except EngineError as e:
            rec["error"] = str(e)
            return rec
        if usage:
            rec.update(prompt_tokens=usage.get("prompt_tokens"), completion_tokens=usage.get("completion_tokens"))
        why = check_exact(self.dialect, input_len, output_len, usage, finish)
        if why:
            rec["error"] = f"inexact request, window not kept: {why}"
        return rec

    async def _exchange(self, prompt, output_len: int, rec: dict):
        body = {"model": self.model_name, "prompt": prompt, **knob_body(self.dialect, output_len)}
        if self.options.stream:
            body["stream"] = True
            if self.dialect != "transformers":  # transformers ignores stream_options; its last chunk has usage
                body["stream_options"] = {"include_usage": True}
        return await post_completion(self._client, self.options.url, body, self.options.stream,
                                     self.options.timeout_s, rec)

    def energy_counter(self):
        """trtllm-serve's ``/energy_metrics`` (``total_energy_j``, cumulative) over a window, where it has one."""
        if self.dialect != "trtllm":
            return None
        url = self.options.url + "/energy_metrics"
        httpx = require_httpx()

        def read() -> float | None:
            try:
                data = httpx.get(url, timeout=10.0).json()
            except Exception:
                return None
            value = data.get("total_energy_j") if isinstance(data, dict) else None
            return float(value) if isinstance(value, (int, float)) else None

        if read() is None:
            return None

        class Counter:
            total_energy = None

            def __enter__(self):
                self._start = read()
                return self

            def __exit__(self, *exc):
                end = read()
                if self._start is not None and end is not None and end >= self._start:
                    self.total_energy = end - self._start
                return False

        return Counter

    def versions(self) -> dict:
        return {k: v for k, v in self.info.items() if v is not None}

    def close(self) -> None:
        if self._client is not None:
            self._loop.run_until_complete(self._client.aclose())
            self._loop.close()
            self._client = self._loop = None
