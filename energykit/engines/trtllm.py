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
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import os
import queue
import random
import sys
import time
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, StrictInt

from ..errors import EngineError, MissingExtraError, ParamsError
from .base import Engine, Generation, Request
from .hf_config import ARCHITECTURES, hf_config

__all__ = ["INSTALL_HINT", "TARGET_VERSION", "BACKENDS", "FLOWS", "DEFAULT_MAX_NUM_TOKENS", "BATCH_WAIT_MS",
           "ADMIT_WAIT_S", "QUEUE_WAIT_S", "SINGLE_PROCESS_ENV", "WholeBatchFetch",
           "library_architectures", "hf_architecture", "choose_flow", "check_supported", "batch_check",
           "TrtLlmOptions", "TrtLlmEngine"]

INSTALL_HINT = ("its wheels come from NVIDIA's index (https://nvidia.github.io/TensorRT-LLM/installation/linux.html); "
                "on a cluster run it in NVIDIA's release container: see containers/")
TARGET_VERSION = "1.2"
"""The TensorRT-LLM release whose LLM API the engine is written against."""

BACKENDS = ("pytorch", "_autodeploy")
"""``LLM(backend=...)`` values of ``tensorrt_llm.LLM`` in 1.2."""

FLOWS = ("pytorch", "tensorrt")
"""How a model runs: the PyTorch backend, or a TensorRT engine built through the LLM API."""

DEFAULT_MAX_NUM_TOKENS = 8192
"""``BaseLlmArgs.max_num_tokens`` default in 1.2."""

BATCH_WAIT_MS = 0.0
"""``batch_wait_timeout_ms`` the engine sets. Upstream applies it on every iteration that fetches fewer than
``max_batch_size`` requests, decode steps included (``executor_request_queue.py``, ``_get_from_request_queue``),
so any value above 0 stalls every decode step; whole batches come from :class:`WholeBatchFetch` instead."""

ADMIT_WAIT_S = 1.0
"""Longest time an idle executor waits for the rest of a batch after its first request [s]. The B requests
are enqueued back to back (microseconds apart): this only bounds a lost request, whose batch is then
ragged and its window failed."""

QUEUE_WAIT_S = 0.0005
"""A fetch of a busy executor that blocked in its queue's ``get`` longer than this [s] is a decode step that
waited in the queue. Upstream's busy fetch blocks only in its batch wait; a decode step takes milliseconds."""

SINGLE_PROCESS_ENV = "TLLM_WORKER_USE_SINGLE_PROCESS"
"""The switch of ``tensorrt_llm/llmapi/utils.py`` (``enable_worker_single_process_for_tp1``, read once per
process) that makes ``GenerationExecutor.create`` run a one-GPU executor in this process."""


TENSORRT_FLOW_REFUSAL = ("admits whatever is queued when it wakes and has no batch wait "
                         "(executorImpl.cpp, getLeaderNewReqWithIds), so its batches come back ragged and every "
                         "window would fail")


class WholeBatchFetch:
    """A wrapper of an in-process ``ExecutorRequestQueue._get_from_request_queue``: idle, wait for a whole batch.

    Upstream (``tensorrt_llm/_torch/pyexecutor/executor_request_queue.py``) calls
    ``self._get_from_request_queue(timeout)`` once per executor iteration from
    ``_fetch_and_process_requests``, with ``timeout=None`` when the executor is idle (no active and no
    waiting request: it blocks for the first request and, with ``batch_wait_timeout_ms=0``, returns it
    alone) and ``timedelta(0)`` otherwise. This wrapper leaves a call that may not wait untouched
    (it is upstream's, and returns at once), and after a call that may wait returns fewer than
    ``batch_size`` requests, keeps taking requests from ``request_queue`` until there are
    ``batch_size`` of them or ``admit_wait_s`` passed. It counts what it saw: ``whole`` and ``short``
    idle fetches, and ``waits``, the busy fetches that blocked in the queue's ``get`` over
    ``queue_wait_s`` (decode steps that waited in the queue; the blocking is timed through the
    ``request_queue`` instance's ``get``, which upstream's ``get_nowait`` also calls, so host hiccups
    do not count).

    Parameters
    ----------
    request_queue : object
        The executor's ``ExecutorRequestQueue`` (``llm._executor.engine.executor_request_queue``).
    batch_size : int
        Requests of one batch (the executor's ``max_batch_size``).
    admit_wait_s : float
        Longest wait for the rest of a batch after its first request [s].
    queue_wait_s : float
        A busy fetch slower than this [s] counts as a decode step's wait.
    """

    def __init__(self, request_queue, batch_size: int, admit_wait_s: float = ADMIT_WAIT_S,
                 queue_wait_s: float = QUEUE_WAIT_S):
        self.queue = request_queue
        self.batch_size = int(batch_size)
        self.admit_wait_s = float(admit_wait_s)
        self.queue_wait_s = float(queue_wait_s)
        self.original = request_queue._get_from_request_queue
        self.whole = self.short = self.waits = 0
        self.busy_wait_s = 0.0
        self.blocked_s = 0.0
        """Seconds spent blocked in ``request_queue.get`` (every fetch)."""
        self._get = request_queue.request_queue.get
        request_queue.request_queue.get = self._timed_get
        self.priming = False
        """While true, an idle fetch returns what upstream returns (the primer request of :meth:`TrtLlmEngine._prime`)."""
        request_queue._get_from_request_queue = self  # the loop looks the method up on the instance

    def _timed_get(self, block=True, timeout=None):
        if not block:
            return self._get(False)
        t0 = time.monotonic()
        try:
            return self._get(True, timeout)
        finally:
            self.blocked_s += time.monotonic() - t0

    def __call__(self, timeout):
        secs = timeout.total_seconds() if timeout is not None else None
        if secs is not None and secs <= 0:  # busy: upstream's non-blocking fetch, never a wait
            b0 = self.blocked_s
            items = self.original(timeout)
            blocked = self.blocked_s - b0
            if blocked > self.queue_wait_s:
                self.waits += 1
                self.busy_wait_s += blocked
            return items
        items = list(self.original(timeout))
        if self.priming:
            return items
        deadline = time.monotonic() + self.admit_wait_s
        while items and len(items) < self.batch_size and all(getattr(i, "is_normal_request", True) for i in items):
            left = deadline - time.monotonic()
            if left <= 0:
                break
            try:
                items.append(self._get(True, left))
            except queue.Empty:
                break
        if items and all(getattr(i, "is_normal_request", True) for i in items):
            if len(items) >= self.batch_size:
                self.whole += 1
            else:
                self.short += 1
        return items

    def remove(self) -> None:
        """Give the queue its own methods back."""
        if self.queue.__dict__.get("_get_from_request_queue") is self:
            del self.queue._get_from_request_queue
        if self.queue.request_queue.__dict__.get("get") == self._timed_get:
            del self.queue.request_queue.get


def _import():
    try:
        import tensorrt_llm
        from tensorrt_llm import llmapi
    except ImportError:
        raise MissingExtraError("tensorrt_llm", "trtllm", INSTALL_HINT) from None
    return tensorrt_llm, llmapi


def _installed():
    """The installed ``tensorrt_llm`` module, or None (nothing imported when it is absent)."""
    if "tensorrt_llm" in sys.modules:
        return sys.modules["tensorrt_llm"]
    if importlib.util.find_spec("tensorrt_llm") is None:
        return None
    return _import()[0]


def library_architectures() -> dict[str, frozenset | None]:
    """Architectures each flow of the installed TensorRT-LLM runs: ``{"pytorch": …, "tensorrt": … or None}``.

    PyTorch backend: the keys of ``tensorrt_llm._torch.models.modeling_utils.MODEL_CLASS_MAPPING``
    (filled by ``@register_auto_model`` when ``tensorrt_llm._torch.models`` is imported). TensorRT flow:
    the keys of ``tensorrt_llm.models.MODEL_MAP``, where ``tensorrt_llm._tensorrt_engine`` exists.
    """
    importlib.import_module("tensorrt_llm._torch.models")  # registers every model class
    mapping = importlib.import_module("tensorrt_llm._torch.models.modeling_utils").MODEL_CLASS_MAPPING
    out = {"pytorch": frozenset(mapping), "tensorrt": None}
    try:
        importlib.import_module("tensorrt_llm._tensorrt_engine")
        out["tensorrt"] = frozenset(importlib.import_module("tensorrt_llm.models").MODEL_MAP)
    except ImportError:
        pass
    return out


def hf_architecture(geometry: dict, checkpoint: str | None = None) -> str:
    """The ``config.json`` architecture a model loads as (a checkpoint's own, or the geometry's recipe)."""
    if checkpoint:
        cfg = Path(checkpoint) / "config.json"
        if cfg.exists():
            archs = json.loads(cfg.read_text()).get("architectures") or []
            if archs:
                return archs[0]
    return ARCHITECTURES.get(geometry.get("arch", ""), "LlamaForCausalLM")


def choose_flow(name: str, geometry: dict, checkpoint: str | None = None, backend: str = "pytorch",
                flow: str = "auto") -> str:
    """The flow of the installed TensorRT-LLM that runs this model: ``pytorch``, the only one measured.

    ``flow="auto"`` takes the PyTorch backend where its registry has the architecture. A model only the
    TensorRT engine build runs, or ``flow="tensorrt"``, is refused (it admits no whole batches), as is one
    no flow runs: a :class:`ParamsError` in one line naming the installed version and the reason.
    """
    trt, _ = _import()
    version = getattr(trt, "__version__", "unknown")
    arch = hf_architecture(geometry, checkpoint)
    archs = library_architectures()
    if backend == "_autodeploy":
        return "pytorch"
    runs = [f for f in FLOWS if archs[f] is not None and arch in archs[f]]
    if flow != "auto":
        if flow not in runs:
            raise ParamsError(f"model {name!r}: TensorRT-LLM {version}'s {flow} flow has no model for {arch}"
                              + (f"; its {runs[0]} flow has one: set flow: auto under trtllm:" if runs else
                                 "; measure it with engine: hf"))
        runs = [flow]
    if runs and runs[0] == "pytorch":
        return "pytorch"
    if runs and flow == "tensorrt":
        raise ParamsError(f"model {name!r}: trtllm flow tensorrt (TensorRT-LLM {version}'s engine build) is refused: "
                          f"its C++ executor {TENSORRT_FLOW_REFUSAL}; set flow: auto under trtllm:")
    if runs:
        raise ParamsError(f"model {name!r}: TensorRT-LLM {version} runs {arch} only in its TensorRT engine-build "
                          f"flow, whose C++ executor {TENSORRT_FLOW_REFUSAL}; measure it with engine: hf, or install "
                          "a release whose PyTorch backend lists it")
    built = ("" if archs["tensorrt"] is not None
             else " and this build has no TensorRT engine flow (tensorrt_llm._tensorrt_engine)")
    raise ParamsError(f"model {name!r}: TensorRT-LLM {version} runs {arch} in no flow (not in the PyTorch "
                      f"backend's MODEL_CLASS_MAPPING nor the TensorRT flow's MODEL_MAP{built}); measure it with "
                      "engine: hf, or install a release that lists it")


def check_supported(name: str, geometry: dict, backend: str = "pytorch", checkpoint: str | None = None,
                    flow: str = "auto") -> None:
    """Refuse, before any GPU time, a model the PyTorch backend of the installed TensorRT-LLM does not run.

    ``flow: tensorrt`` is refused everywhere. Without TensorRT-LLM installed (a machine that only plans
    or validates a sweep) there is no library to ask which architectures it runs: nothing else is
    refused here, and :meth:`TrtLlmEngine.load` asks it on the GPU machine.
    """
    if backend not in BACKENDS:
        raise ParamsError(f"trtllm backend {backend!r} is not one of {', '.join(BACKENDS)} (TensorRT-LLM "
                          f"{TARGET_VERSION}'s LLM); the TensorRT engine build is not measured: its C++ executor "
                          f"{TENSORRT_FLOW_REFUSAL}")
    if flow not in ("auto",) + FLOWS:
        raise ParamsError(f"trtllm flow {flow!r} is not one of auto, {', '.join(FLOWS)}")
    if flow == "tensorrt":
        raise ParamsError(f"model {name!r}: trtllm flow tensorrt (TensorRT-LLM's engine build) is refused: its C++ "
                          f"executor {TENSORRT_FLOW_REFUSAL}; set flow: auto under trtllm:")
    if _installed() is None:
        return
    choose_flow(name, geometry, checkpoint, backend, flow)


def _check_one_gpu(tensor_parallel_size: int) -> None:
    """Refuse, in one line, a model split over GPUs: its executor cannot run in this process."""
    if int(tensor_parallel_size) != 1:
        raise ParamsError(f"trtllm tensor_parallel_size {tensor_parallel_size}: whole batches need the executor in "
                          f"this process ({SINGLE_PROCESS_ENV}=1), which TensorRT-LLM offers for one GPU only "
                          "(more spawn MPI workers); set tensor_parallel_size: 1")


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


PROTOCOL = ("one in-process executor per batch size (no batch wait; idle fetch waits for B; CUDA graphs at B), "
            "batch and queue waits checked per call, CUDA synchronised")
"""How the engine runs a window; in the fingerprint, so that a folder measured otherwise is not resumed."""


def _seconds(v) -> float | None:
    if v is None:
        return None
    return v.total_seconds() if hasattr(v, "total_seconds") else float(v)


def batch_check(outputs: list, batch_size: int) -> dict:
    """What the perf metrics of one call say about its batch; raises :class:`EngineError` when ragged.

    Returns the iteration of the first tokens, the spread of the times to first token [s], the decode
    step [s] measured by the executor, and the last token's time on the executor's steady clock [s].
    """
    first, last, ttft, t_first, t_last, t_sched = [], [], [], [], [], []
    for out in outputs:
        m = getattr(out.outputs[0], "request_perf_metrics", None)
        t = getattr(m, "timing_metrics", None)
        if m is None or t is None or getattr(m, "first_iter", None) is None:
            raise EngineError("TensorRT-LLM returned no request perf metrics (first_iter, timing_metrics); "
                              "the batch cannot be checked: this engine needs LLM(return_perf_metrics=True)")
        first.append(int(m.first_iter))
        last.append(int(m.last_iter))
        a, s, f, z = (_seconds(getattr(t, k, None))
                      for k in ("arrival_time", "first_scheduled_time", "first_token_time", "last_token_time"))
        ttft.append(f - a)
        t_sched.append(s)
        t_first.append(f)
        t_last.append(z)
    if len(set(first)) > 1 or len(set(last)) > 1:
        raise EngineError(f"ragged batch: the {batch_size} requests' first tokens came from iterations "
                          f"{sorted(set(first))} and their last from {sorted(set(last))} (one iteration each for a "
                          "whole batch); the window is not kept and the next run measures it again")
    steps = last[0] - first[0]
    # one decode step, as the executor timed it; a call of one new token has only its prefill step
    step_s = (max(t_last) - min(t_first)) / steps if steps > 0 else max(t_first) - min(t_sched)
    return {"first_iter": first[0], "last_iter": last[0], "ttft_s": sum(ttft) / len(ttft),
            "ttft_spread_s": max(ttft) - min(ttft),
            "step_s": step_s, "last_token_time_s": max(t_last)}


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
        _check_one_gpu(params.engine_options.tensor_parallel_size)

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
        _check_one_gpu(self.gpus)
        check_supported(self.model_name, self.geometry, self.backend, self.checkpoint, self.flow_choice)
        self.trt, self.llmapi = _import()
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
