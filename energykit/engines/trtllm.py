"""TensorRT-LLM engine through its LLM API, written against TensorRT-LLM 1.2 (newer fields where present).

What the engine sends, and why (each point is a rule of TensorRT-LLM's source; the stand-in
:class:`energykit.testing.FakeTensorRTLLM` cites the files):

- Prompts are token-id lists of exactly ``input_len``, fresh random ids for every call and every
  repeat, drawn before the meter window opens.
- ``KvCacheConfig(enable_block_reuse=False)``: block reuse is on by default, and a reused prompt
  prefix skips its prefill.
- ``SamplingParams(end_id=…, pad_id=…, ignore_eos=True, max_tokens=output_len)``: with
  ``skip_tokenizer_init=True`` there is no tokenizer to take ``end_id`` from. ``ignore_eos`` forces
  exactly ``output_len`` new tokens, verified per request.
- ``load_format="dummy"``: random weights from ``config.json`` alone; a geometry needs no checkpoint.
- ``max_num_tokens`` covers ``batch × longest input``, so a batch's prefill runs in one iteration.

**The whole batch in one iteration, and no decode step waiting in the queue.** The PyTorch executor
consults its request queue on every iteration (``tensorrt_llm/_torch/pyexecutor/executor_request_queue.py``,
``_fetch_and_process_requests`` → ``_get_from_request_queue``): idle, it blocks for the first request
(``timeout=None``) and returns it alone; busy, it drains the queue without blocking (``timeout=0``). Its
``batch_wait_timeout_ms`` then waits for ``max_batch_size`` requests *on every iteration that sees fewer*,
decode steps included: with B requests decoding and none arriving, each decode step would wait the
whole timeout. So the engine sets ``batch_wait_timeout_ms=0`` and runs the executor in this process
(``TLLM_WORKER_USE_SINGLE_PROCESS=1``, read once per process by ``llmapi/utils.py``'s
``enable_worker_single_process_for_tp1``; ``executor/executor.py``'s ``GenerationExecutor.create`` then
builds a ``GenerationExecutorWorker`` whose ``engine`` is the ``PyExecutor``), and wraps that queue's
``_get_from_request_queue`` (:class:`WholeBatchFetch`): a fetch that may wait (idle: ``timeout`` None) goes on
waiting, at most :data:`ADMIT_WAIT_S`, until B requests are there; a fetch that may not (busy) is upstream's,
untouched, and never waits. The engine submits all B with ``generate_async`` before waiting on any and
checks every call's ``request_perf_metrics``: all B first tokens from one iteration (``first_iter``), all B
last tokens from one iteration; a ragged call raises :class:`~energykit.errors.EngineError` (the window is
failed and measured again by the next run). The wrapper times every busy fetch: one that took over
:data:`QUEUE_WAIT_S` is a decode step that waited in the queue, reported in
:attr:`~energykit.engines.Generation.queue_waits`, and the window protocol fails that window.

The executor in this process needs one GPU: ``tensor_parallel_size`` over 1 spawns MPI workers (a proxy,
no executor here) and is refused before a sweep writes anything. The TensorRT engine-build flow
(``tensorrt_llm._tensorrt_engine.LLM``, the C++ executor) is refused too: its queue
(``cpp/tensorrt_llm/executor/executorImpl.cpp``, ``Executor::Impl::getLeaderNewReqWithIds``) waits only until
one request is queued and has no batch wait, so B requests submitted one by one come back ragged and
every window would fail. Families only that flow has (OPT, Falcon, Gemma-2, Granite in 1.2) are
refused in one line naming why; measure them with ``engine: hf``.

**CUDA graphs at exactly the sweep's batch size.** ``CudaGraphConfig(batch_sizes=[B],
enable_padding=False)``: the default captures its own list (1…31, 32, 64, 128) and a sweep batch
outside it decodes eagerly. A window records ``decode_graphed``: graphs captured at B, and every
decode iteration held exactly the B requests (equal first and last iterations), which is the case
the graph runner replays.

**A window ends when the GPU's work ends.** ``generate_async(...).result()`` returns when a request's
response is sent; with the overlap scheduler (on by default) one more forward step was launched
before the last tokens were processed, and it runs on. The executor runs in this process, on its
device, so ``torch.cuda.synchronize()`` in :meth:`TrtLlmEngine.synchronize` waits for that step too.

**Architectures from the library.** The PyTorch backend's registry
(``tensorrt_llm._torch.models.modeling_utils.MODEL_CLASS_MAPPING``) and the TensorRT flow's
(``tensorrt_llm.models.MODEL_MAP``, run through ``tensorrt_llm._tensorrt_engine.LLM`` with a
``BuildConfig``) are read from the installed version. A family the PyTorch backend lacks runs
only through the TensorRT engine build, which is refused (above); the refusal is one line naming the
installed version and the reason, before any GPU time.

**Where the parts live.** This module holds the engine (:class:`TrtLlmEngine`, its params section
:class:`TrtLlmOptions` and the ``LLM`` it builds per batch size); :mod:`energykit.engines.trtllm_flow` the
release it targets, the architectures of each flow and the refusals before any GPU time;
:mod:`energykit.engines.trtllm_batch` the whole-batch fetch and the per-call batch check. Their public names
are re-exported here.
"""

from __future__ import annotations

import json
import os
import random
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, StrictInt

from ..errors import EngineError, ParamsError
from .base import Engine, Generation, Request
from .hf_config import hf_config
from .trtllm_batch import ADMIT_WAIT_S, BATCH_WAIT_MS, PROTOCOL, QUEUE_WAIT_S, WholeBatchFetch, batch_check
from .trtllm_flow import (BACKENDS, FLOWS, INSTALL_HINT, SINGLE_PROCESS_ENV, TARGET_VERSION, check_one_gpu,
                          check_supported, choose_flow, hf_architecture, import_library, library_architectures)

__all__ = ["INSTALL_HINT", "TARGET_VERSION", "BACKENDS", "FLOWS", "DEFAULT_MAX_NUM_TOKENS", "BATCH_WAIT_MS",
           "ADMIT_WAIT_S", "QUEUE_WAIT_S", "SINGLE_PROCESS_ENV", "WholeBatchFetch",
           "library_architectures", "hf_architecture", "choose_flow", "check_supported", "batch_check",
           "TrtLlmOptions", "TrtLlmEngine"]

DEFAULT_MAX_NUM_TOKENS = 8192
"""``BaseLlmArgs.max_num_tokens`` default in 1.2."""


class TrtLlmOptions(BaseModel):
    """The ``trtllm:`` section of a params file (its keys may also stand at the top level)."""

    model_config = ConfigDict(extra="forbid")

    backend: Literal[BACKENDS] = "pytorch"
    """``LLM(backend=...)``."""
    flow: Literal["auto", "pytorch", "tensorrt"] = "auto"
    """``auto`` or ``pytorch``: the PyTorch backend. ``tensorrt`` (the engine build) is refused with its reason:
    it admits no whole batches."""
    chunked_prefill: bool = False
    """Let the library chunk prefills longer than ``max_num_tokens`` (recorded)."""
    tensor_parallel_size: StrictInt = Field(1, ge=1)
    """GPUs the model is split over; the meter reads all of them. Only 1 is measured: whole-batch admission
    needs the executor in this process (:class:`WholeBatchFetch`), which TensorRT-LLM offers for one GPU."""


class TrtLlmEngine(Engine):
    """Engine on TensorRT-LLM's LLM API: PyTorch backend, or a TensorRT engine built through the API.

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
        Largest batch of the sweep (the executor is loaded with ``max_batch_size`` = each cell's batch).
    batch_sizes : list of int, optional
        The sweep's batch sizes; the first is loaded by :meth:`load`.
    chunked_prefill : bool
        Let the library chunk prefills longer than ``max_num_tokens`` (recorded); off by default.
    tensor_parallel_size : int
        GPUs the model is split over; the meter reads all of them.
    backend : str
        ``pytorch`` (default) or ``_autodeploy``.
    flow : str
        ``auto`` (the PyTorch backend where it has the architecture, else the TensorRT engine build),
        ``pytorch`` or ``tensorrt``.
    """

    name = "trtllm"
    Options = TrtLlmOptions
    requires = ("tensorrt_llm",)
    extra = "trtllm"
    install_hint = INSTALL_HINT
    archs = None  # asked of the installed library (check_model), never a list kept here
    loads_per_batch_size = True
    """One executor per batch size: the sweep measures each batch's windows together (one load each)."""

    @classmethod
    def check_model(cls, params, name, geometry, checkpoint) -> None:
        opts = params.engine_options
        check_supported(name, geometry, opts.backend, checkpoint, opts.flow)

    @classmethod
    def preflight(cls, params) -> None:
        check_one_gpu(params.engine_options.tensor_parallel_size)

    @classmethod
    def engine_kwargs(cls, params) -> dict:
        return {"max_batch_size": max(params.batch_sizes), "batch_sizes": list(params.batch_sizes),
                "max_input_len": max(i for i, _ in params.grid), "workdir": str(Path(params.output) / "checkpoints"),
                **params.engine_options.model_dump()}

    @classmethod
    def gpu_count(cls, options: TrtLlmOptions) -> int:
        return options.tensor_parallel_size

    @classmethod
    def fingerprint(cls, options: TrtLlmOptions) -> dict:
        return {**options.model_dump(), "trtllm_protocol": PROTOCOL}

    @classmethod
    def label(cls, versions: dict) -> str:
        """E.g. ``trtllm 1.2.0 pytorch`` or ``trtllm 1.2.0 tensorrt`` (the flow that ran the model)."""
        return f"trtllm {versions.get('tensorrt_llm')} {versions.get('flow') or versions.get('backend', '')}".strip()

    def __init__(self, name, geometry, checkpoint=None, dtype="bfloat16", max_len=2048, max_input_len=None,
                 max_batch_size=16, batch_sizes=None, chunked_prefill=False, tensor_parallel_size=1,
                 backend="pytorch", flow="auto", workdir="checkpoints", seed=0):
        self.model_name = name
        self.geometry = geometry
        self.checkpoint = checkpoint
        self.dtype = dtype
        self.max_len = int(max_len)
        self.max_input_len = int(max_input_len or max_len)
        self.batch_sizes = [int(b) for b in (batch_sizes or [max_batch_size])]
        self.max_batch_size = max(int(max_batch_size), *self.batch_sizes)
        self.chunked_prefill = bool(chunked_prefill)
        self.gpus = int(tensor_parallel_size)
        self.backend = backend or "pytorch"
        self.flow_choice = flow or "auto"
        self.flow = None
        self.workdir = Path(workdir)
        self.seed = seed
        self.llm = None
        self.loaded_batch = None
        self.loads = 0
        self.fetch = None  # the WholeBatchFetch of the loaded executor
        self.max_num_tokens = self._max_num_tokens(self.max_batch_size)

    def _max_num_tokens(self, batch: int) -> int:
        return DEFAULT_MAX_NUM_TOKENS if self.chunked_prefill else max(DEFAULT_MAX_NUM_TOKENS, batch * self.max_input_len)

    def _config_dir(self) -> str:
        """A directory holding only the geometry's ``config.json`` (weights: ``load_format="dummy"``)."""
        path = self.workdir / self.model_name
        if not path.resolve().is_relative_to(self.workdir.resolve()) or path.resolve() == self.workdir.resolve():
            raise ParamsError(f"model name {self.model_name!r} would write its config.json outside {self.workdir}; "
                              "use a plain model name, e.g. 'my-model-1b'")
        path.mkdir(parents=True, exist_ok=True)
        cfg = hf_config(self.geometry, self.max_len).to_dict()
        tmp = path / "config.json.tmp"
        tmp.unlink(missing_ok=True)  # never write through a symlink planted at the temp name
        tmp.write_text(json.dumps(cfg, indent=2, default=str))
        tmp.replace(path / "config.json")
        return str(path)

    def load(self) -> None:
        check_one_gpu(self.gpus)
        check_supported(self.model_name, self.geometry, self.backend, self.checkpoint, self.flow_choice)
        self.trt, self.llmapi = import_library()
        self.flow = choose_flow(self.model_name, self.geometry, self.checkpoint, self.backend, self.flow_choice)
        self.model_dir = self.checkpoint or self._config_dir()
        self.vocab_size = int(self.geometry["vocab_size"])
        self.end_id = self.vocab_size - 1  # never stops a request: ignore_eos
        self._rng = random.Random(self.seed + 1)  # one stream: every call and repeat gets new ids
        self._load_batch(self.batch_sizes[0])

    def _load_batch(self, batch: int) -> None:
        """(Re)load the executor for batch size ``batch``: scheduler, queue and CUDA graphs sized to it."""
        if self.loaded_batch == batch:
            return
        if self.llm is not None:
            self.llm.shutdown()
            self.llm = None
        api = self.llmapi
        self.max_num_tokens = self._max_num_tokens(batch)
        common = dict(model=self.model_dir, skip_tokenizer_init=True, dtype=self.dtype,
                      load_format="auto" if self.checkpoint else "dummy", tensor_parallel_size=self.gpus,
                      max_batch_size=batch, max_seq_len=self.max_len, max_input_len=self.max_input_len,
                      max_num_tokens=self.max_num_tokens, enable_chunked_prefill=self.chunked_prefill,
                      kv_cache_config=api.KvCacheConfig(enable_block_reuse=False), return_perf_metrics=True)
        # read once per process, by the first LLM (llmapi/utils.py: @cache): set before any is built
        os.environ[SINGLE_PROCESS_ENV] = "1"
        self.llm = self.trt.LLM(
            backend=self.backend, batch_wait_timeout_ms=BATCH_WAIT_MS,
            cuda_graph_config=api.CudaGraphConfig(batch_sizes=[batch], enable_padding=False), **common)
        try:
            self.fetch = WholeBatchFetch(self._request_queue(), batch, admit_wait_s=ADMIT_WAIT_S)
            self._prime()
        except BaseException:
            self.llm.shutdown()
            self.llm = None
            self.loaded_batch = None
            raise
        self.loaded_batch = batch
        self.loads += 1

    def _prime(self) -> None:
        """Send one short request through the new executor, outside any window.

        The executor loop starts with the ``LLM`` and blocks at once in upstream's fetch, before the
        wrapper is set; that call returns the next request alone. The primer is that request, so the
        first batch meets the wrapper.
        """
        prompt = [self._rng.randrange(self.vocab_size) for _ in range(max(1, min(16, self.max_input_len, self.max_len - 1)))]
        sp = self.trt.SamplingParams(max_tokens=1, end_id=self.end_id, pad_id=self.end_id, ignore_eos=True,
                                     temperature=0.0, detokenize=False)
        self.fetch.priming = True
        try:
            self.llm.generate_async(prompt, sp).result()
        finally:
            self.fetch.priming = False

    def _request_queue(self):
        """The in-process executor's request queue, or a one-line :class:`EngineError` naming what is missing."""
        version = getattr(self.trt, "__version__", "unknown")
        worker = getattr(self.llm, "_executor", None)
        engine = getattr(worker, "engine", None)
        rq = getattr(engine, "executor_request_queue", None)
        if engine is None:
            raise EngineError(f"TensorRT-LLM {version} runs the executor in another process "
                              f"({type(worker).__name__}), so no whole batch can be admitted: {SINGLE_PROCESS_ENV}=1 "
                              "must be set before the process builds its first LLM (it is read once); start a fresh "
                              "process")
        if rq is None or not callable(getattr(rq, "_get_from_request_queue", None)) or \
                not hasattr(rq, "request_queue"):
            raise EngineError(f"TensorRT-LLM {version}'s executor has no ExecutorRequestQueue._get_from_request_queue "
                              f"(read from {TARGET_VERSION}); this engine cannot admit whole batches with it: "
                              f"install TensorRT-LLM {TARGET_VERSION}")
        if getattr(rq, "batch_wait_timeout_ms", 0):
            raise EngineError(f"TensorRT-LLM {version}'s request queue has batch_wait_timeout_ms "
                              f"{rq.batch_wait_timeout_ms}, which every decode step would wait; it must be 0")
        return rq

    def request(self, batch_size, input_len, output_len) -> Request:
        if not self.chunked_prefill and batch_size * input_len > self._max_num_tokens(batch_size):
            raise EngineError(f"a prefill of {batch_size}x{input_len} tokens exceeds max_num_tokens "
                              f"{self._max_num_tokens(batch_size)} and would be split; raise max_input_len")
        if input_len + output_len > self.max_len:
            raise EngineError(f"request of {input_len}+{output_len} tokens exceeds max_seq_len {self.max_len}")
        self._load_batch(batch_size)  # outside any window: the windows of a cell come after it
        params = self.trt.SamplingParams(max_tokens=output_len, end_id=self.end_id, pad_id=self.end_id,
                                         ignore_eos=True, temperature=0.0, detokenize=False)
        window = {"ttft_spread_s": 0.0, "calls": 0}

        def make_prompts():
            rng, v = self._rng, self.vocab_size
            return [[rng.randrange(v) for _ in range(input_len)] for _ in range(batch_size)]

        def run(prompts) -> Generation:
            # every request is enqueued before the first is waited on; the idle fetch waits for all of them
            waits = self.fetch.waits
            futures = [self.llm.generate_async(p, params) for p in prompts]
            outputs = [f.result() for f in futures]
            queue_waits = self.fetch.waits - waits
            if len(outputs) != batch_size:
                raise EngineError(f"sent {batch_size} requests, got {len(outputs)} outputs")
            for out in outputs:
                n = len(out.outputs[0].token_ids)
                if n != output_len:
                    raise EngineError(f"asked for {output_len} new tokens, request {out.request_id} gave {n}")
            check = batch_check(outputs, batch_size)
            window["calls"] += 1
            window["ttft_spread_s"] = max(window["ttft_spread_s"], check["ttft_spread_s"])
            extra = {"first_token_iterations": 1, "ttft_spread_s": window["ttft_spread_s"],
                     "decode_graphed": self.flow is not None and self.loaded_batch == batch_size,
                     "trtllm_flow": self.flow, "executor_step_s": check["step_s"]}
            # the call's iterations on the GPU: prefill, decode steps, and the overlap scheduler's step in flight
            steps = check["last_iter"] - check["first_iter"] + 2
            return Generation(output_tokens=output_len, ttft_s=check["ttft_s"], extra=extra, steps=steps,
                              queue_waits=queue_waits)

        return Request(make_prompts, run)

    def synchronize(self) -> None:
        """Wait until the GPU's work for the calls so far has ended.

        Every result has arrived when a call returns; with the overlap scheduler one forward step is
        still in flight after the last response. The executor runs in this process, on this device:
        ``torch.cuda.synchronize()`` waits for that step too.
        """
        import torch  # TensorRT-LLM's own dependency

        if torch.cuda.is_available():
            torch.cuda.synchronize()

    def energy_counter(self):
        """A factory of TensorRT-LLM's own energy counter, or None where the installed version has none.

        ``tensorrt_llm.bench.benchmark.utils.energy_monitor.EnergyMonitor`` (trtllm-bench's, also behind
        ``enable_energy_metrics`` in trtllm-serve): a context manager whose ``total_energy`` [J] is the NVML
        counters' difference over the GPUs of ``CUDA_VISIBLE_DEVICES``.
        """
        try:
            from tensorrt_llm.bench.benchmark.utils.energy_monitor import EnergyMonitor
        except ImportError:
            return None
        return lambda: EnergyMonitor(self.gpus)

    def versions(self) -> dict:
        return {"tensorrt_llm": getattr(self.trt, "__version__", "unknown"), "backend": self.backend,
                "flow": self.flow, "kv_cache": "paged, block reuse off", "max_num_tokens": self.max_num_tokens,
                "chunked_prefill": self.chunked_prefill, "tensor_parallel_size": self.gpus,
                "batch_wait_timeout_ms": BATCH_WAIT_MS,
                "admission": f"in-process executor ({SINGLE_PROCESS_ENV}=1); an idle fetch waits up to "
                             f"{ADMIT_WAIT_S:g} s for the whole batch, a busy one never waits",
                "cuda_graphs": "one executor per batch size B, graphs captured at exactly B",
                "weights": "checkpoint" if self.checkpoint else "dummy (random, from config.json)"}

    def close(self) -> None:
        if self.llm is not None:
            self.llm.shutdown()
            self.llm = None
            self.loaded_batch = None
