"""TensorRT-LLM engine through its LLM API (PyTorch backend), written against TensorRT-LLM 1.2.

What the engine sends, and why (each point is a rule of ``tensorrt_llm/llmapi/llm.py`` and
``llm_args.py`` in 1.2):

- Prompts are token-id lists of exactly ``input_len``, fresh random ids for every call and every
  repeat, drawn before the meter window opens.
- ``KvCacheConfig(enable_block_reuse=False)``: block reuse is on by default, and a reused prompt
  prefix skips its prefill.
- ``SamplingParams(end_id=…, pad_id=…, ignore_eos=True, max_tokens=output_len)``: with
  ``skip_tokenizer_init=True`` there is no tokenizer to take ``end_id`` from, and a missing
  ``end_id`` makes every ``generate()`` raise. ``ignore_eos`` forces exactly ``output_len`` new
  tokens, verified per request.
- ``load_format="dummy"``: random weights from ``config.json`` alone; a geometry needs no checkpoint.
- ``max_num_tokens`` covers ``batch × longest input``, so a batch's prefill runs in one iteration
  (the default, 8192, would silently split 16 × 4096 prompt tokens across iterations). With
  ``chunked_prefill: true`` the library chunks long prefills instead, and the data records it.
- ``LLM(return_perf_metrics=True)`` gives each request's time to first token.
- The PyTorch backend has no model for some architectures (OPT, Falcon, Gemma-2, Granite): those are
  refused before any GPU time (:func:`check_supported`).
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, StrictInt

from ..errors import EngineError, MissingExtraError, ParamsError
from .base import Engine, Generation, Request
from .hf_config import hf_config

__all__ = ["INSTALL_HINT", "BACKENDS", "PYTORCH_ARCHS", "DEFAULT_MAX_NUM_TOKENS", "check_supported",
           "TrtLlmOptions", "TrtLlmEngine"]

INSTALL_HINT = "its wheels come from NVIDIA's index: see https://nvidia.github.io/TensorRT-LLM/installation/linux.html"

BACKENDS = ("pytorch", "_autodeploy")
"""``LLM(backend=...)`` values of ``tensorrt_llm.LLM`` in 1.2."""

PYTORCH_ARCHS = ("llama", "qwen2", "qwen3", "mistral", "mixtral", "gemma3")
"""Architectures with a model in the PyTorch backend (``tensorrt_llm/_torch/models/__init__.py``)."""

DEFAULT_MAX_NUM_TOKENS = 8192
"""``BaseLlmArgs.max_num_tokens`` default in 1.2."""


def _import():
    try:
        import tensorrt_llm
        from tensorrt_llm.llmapi import KvCacheConfig
    except ImportError:
        raise MissingExtraError("tensorrt_llm", "trtllm", INSTALL_HINT) from None
    return tensorrt_llm, KvCacheConfig


def check_supported(name: str, geometry: dict, backend: str = "pytorch", checkpoint: str | None = None) -> None:
    """Refuse, in one line, a model that the chosen backend cannot run (before any GPU time)."""
    if backend not in BACKENDS:
        raise ParamsError(f"trtllm backend {backend!r} is not one of {', '.join(BACKENDS)} (TensorRT-LLM 1.2's LLM); "
                          "for the TensorRT engine flow build an engine with trtllm-build first")
    arch = geometry.get("arch", "")
    if backend == "pytorch" and arch not in PYTORCH_ARCHS:
        mha = "" if geometry.get("num_kv_heads") != geometry.get("num_heads") else (
            "; for the MHA comparison use an MHA-shaped llama geometry (arch: llama, num_kv_heads = num_heads)")
        raise ParamsError(
            f"model {name!r}: TensorRT-LLM's PyTorch backend has no model for arch {arch!r} "
            f"(it runs {', '.join(PYTORCH_ARCHS)}); measure it with engine: hf, or build a TensorRT engine "
            f"with trtllm-build and use the TensorRT flow{mha}")


class TrtLlmOptions(BaseModel):
    """The ``trtllm:`` section of a params file (its keys may also stand at the top level)."""

    model_config = ConfigDict(extra="forbid")

    backend: Literal[BACKENDS] = "pytorch"
    """``LLM(backend=...)``."""
    chunked_prefill: bool = False
    """Let the library chunk prefills longer than ``max_num_tokens`` (recorded)."""
    tensor_parallel_size: StrictInt = Field(1, ge=1)
    """GPUs the model is split over; the meter reads all of them."""


def _seconds(v) -> float | None:
    if v is None:
        return None
    return v.total_seconds() if hasattr(v, "total_seconds") else float(v)


class TrtLlmEngine(Engine):
    """Engine on ``tensorrt_llm.LLM`` (PyTorch backend).

    Parameters
    ----------
    name : str
        Model name recorded in the data.
    geometry : dict
        Geometry; without a checkpoint its ``config.json`` is written to ``workdir`` and the
        weights are random (``load_format="dummy"``).
    checkpoint : str, optional
        Local HF checkpoint directory with weights.
    dtype : str
        Model dtype passed to ``LLM``.
    max_len : int
        Longest request, input plus output [tokens] (``max_seq_len``).
    max_input_len : int
        Longest prompt of the sweep [tokens].
    max_batch_size : int
        Largest batch of the sweep.
    chunked_prefill : bool
        Let the library chunk prefills longer than ``max_num_tokens`` (recorded); off by default,
        so that every batch's prefill runs whole.
    tensor_parallel_size : int
        GPUs the model is split over; the meter reads all of them.
    backend : str
        ``pytorch`` (default) or ``_autodeploy``.
    """

    name = "trtllm"
    Options = TrtLlmOptions
    requires = ("tensorrt_llm",)
    extra = "trtllm"
    install_hint = INSTALL_HINT
    archs = PYTORCH_ARCHS  # of the default pytorch backend; check_model lets _autodeploy try any arch

    @classmethod
    def check_model(cls, params, name, geometry, checkpoint) -> None:
        check_supported(name, geometry, params.engine_options.backend, checkpoint)

    @classmethod
    def engine_kwargs(cls, params) -> dict:
        return {"max_batch_size": max(params.batch_sizes), "max_input_len": max(i for i, _ in params.grid),
                "workdir": str(Path(params.output) / "checkpoints"), **params.engine_options.model_dump()}

    @classmethod
    def gpu_count(cls, options: TrtLlmOptions) -> int:
        return options.tensor_parallel_size

    @classmethod
    def label(cls, versions: dict) -> str:
        """E.g. ``trtllm 1.2.0 pytorch``."""
        return f"trtllm {versions.get('tensorrt_llm')} {versions.get('backend', '')}".strip()

    def __init__(self, name, geometry, checkpoint=None, dtype="bfloat16", max_len=2048, max_input_len=None,
                 max_batch_size=16, chunked_prefill=False, tensor_parallel_size=1, backend="pytorch",
                 workdir="checkpoints", seed=0):
        self.model_name = name
        self.geometry = geometry
        self.checkpoint = checkpoint
        self.dtype = dtype
        self.max_len = int(max_len)
        self.max_input_len = int(max_input_len or max_len)
        self.max_batch_size = int(max_batch_size)
        self.chunked_prefill = bool(chunked_prefill)
        self.gpus = int(tensor_parallel_size)
        self.backend = backend or "pytorch"
        self.workdir = Path(workdir)
        self.seed = seed
        self.llm = None
        self.max_num_tokens = (DEFAULT_MAX_NUM_TOKENS if self.chunked_prefill
                               else max(DEFAULT_MAX_NUM_TOKENS, self.max_batch_size * self.max_input_len))

    def _config_dir(self) -> str:
        """A directory holding only the geometry's ``config.json`` (weights: ``load_format="dummy"``)."""
        path = self.workdir / self.model_name
        path.mkdir(parents=True, exist_ok=True)
        cfg = hf_config(self.geometry, self.max_len).to_dict()
        tmp = path / "config.json.tmp"
        tmp.write_text(json.dumps(cfg, indent=2, default=str))
        tmp.replace(path / "config.json")
        return str(path)

    def load(self) -> None:
        check_supported(self.model_name, self.geometry, self.backend, self.checkpoint)
        trt, KvCacheConfig = _import()
        self.trt = trt
        model = self.checkpoint or self._config_dir()
        self.llm = trt.LLM(
            model=model, skip_tokenizer_init=True, dtype=self.dtype, backend=self.backend,
            load_format="auto" if self.checkpoint else "dummy",
            tensor_parallel_size=self.gpus,
            max_batch_size=self.max_batch_size, max_seq_len=self.max_len, max_input_len=self.max_input_len,
            max_num_tokens=self.max_num_tokens, enable_chunked_prefill=self.chunked_prefill,
            kv_cache_config=KvCacheConfig(enable_block_reuse=False),
            return_perf_metrics=True,
        )
        self.vocab_size = int(self.geometry["vocab_size"])
        self.end_id = self.vocab_size - 1  # never stops a request: ignore_eos
        self._rng = random.Random(self.seed + 1)  # one stream: every call and repeat gets new ids

    def request(self, batch_size, input_len, output_len) -> Request:
        if not self.chunked_prefill and batch_size * input_len > self.max_num_tokens:
            raise EngineError(f"a prefill of {batch_size}x{input_len} tokens exceeds max_num_tokens "
                              f"{self.max_num_tokens} and would be split; raise max_batch_size/max_input_len")
        if input_len + output_len > self.max_len:
            raise EngineError(f"request of {input_len}+{output_len} tokens exceeds max_seq_len {self.max_len}")
        params = self.trt.SamplingParams(max_tokens=output_len, end_id=self.end_id, pad_id=self.end_id,
                                         ignore_eos=True, temperature=0.0, detokenize=False)

        def make_prompts():
            rng, v = self._rng, self.vocab_size
            return [[rng.randrange(v) for _ in range(input_len)] for _ in range(batch_size)]

        def run(prompts) -> Generation:
            outputs = self.llm.generate(prompts, params, use_tqdm=False)
            if len(outputs) != batch_size:
                raise EngineError(f"sent {batch_size} requests, got {len(outputs)} outputs")
            ttfts = []
            for out in outputs:
                n = len(out.outputs[0].token_ids)
                if n != output_len:
                    raise EngineError(f"asked for {output_len} new tokens, request {out.request_id} gave {n}")
                m = getattr(out.outputs[0], "request_perf_metrics", None)
                t = getattr(m, "timing_metrics", None)
                first, arrival = _seconds(getattr(t, "first_token_time", None)), _seconds(getattr(t, "arrival_time", None))
                if first is not None and arrival is not None:
                    ttfts.append(first - arrival)
            ttft = sum(ttfts) / len(ttfts) if ttfts else float("nan")
            return Generation(output_tokens=output_len, ttft_s=ttft)

        return Request(make_prompts, run)

    def synchronize(self) -> None:
        # generate() returns when every request has finished; synchronise CUDA too where torch is present
        try:
            import torch
        except ImportError:
            return
        if torch.cuda.is_available():
            torch.cuda.synchronize()

    def versions(self) -> dict:
        return {"tensorrt_llm": getattr(self.trt, "__version__", "unknown"), "backend": self.backend,
                "kv_cache": "paged, block reuse off", "max_num_tokens": self.max_num_tokens,
                "chunked_prefill": self.chunked_prefill, "tensor_parallel_size": self.gpus,
                "weights": "checkpoint" if self.checkpoint else "dummy (random, from config.json)"}

    def close(self) -> None:
        if self.llm is not None:
            self.llm.shutdown()
            self.llm = None
