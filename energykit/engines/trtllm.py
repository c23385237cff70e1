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

**The whole batch in one iteration.** An idle executor blocks on its request queue and wakes on the
first request that arrives (``executor_request_queue.py``), so B requests submitted one by one
(``generate()`` calls ``generate_async()`` per prompt) can start as a prefill of one and a ragged
decode. The engine loads one executor per batch size B with ``max_batch_size=B`` and
``batch_wait_timeout_ms`` (the queue waits for ``max_batch_size`` requests, and returns as soon as
all B are there), submits all B with ``generate_async`` before waiting on any, and checks every call's
``request_perf_metrics``: all B first tokens from one iteration (``first_iter``), all B last tokens from
one iteration. A ragged call raises :class:`~energykit.errors.EngineError`: the window is recorded as
failed, with the iterations in its reason, and the next run measures it again.

**CUDA graphs at exactly the sweep's batch size.** ``CudaGraphConfig(batch_sizes=[B],
enable_padding=False)``: the default captures its own list (1…31, 32, 64, 128) and a sweep batch
outside it decodes eagerly. A window records ``decode_graphed``: graphs captured at B, and every
decode iteration held exactly the B requests (equal first and last iterations), which is the case
the graph runner replays.

**A window ends when the GPU's work ends.** ``generate_async(...).result()`` returns when a request's
response is sent; with the overlap scheduler (on by default) one more forward step was launched
before the last tokens were processed, and it runs on in the executor's process, where
``torch.cuda.synchronize()`` in this process does not reach. :meth:`TrtLlmEngine.synchronize` waits for
every result, then until the executor's own clock (the perf metrics' steady clock, which is
``time.monotonic``) passes the last token's time plus one measured decode step, then synchronises
CUDA in this process.

**Architectures from the library.** The PyTorch backend's registry
(``tensorrt_llm._torch.models.modeling_utils.MODEL_CLASS_MAPPING``) and the TensorRT flow's
(``tensorrt_llm.models.MODEL_MAP``, run through ``tensorrt_llm._tensorrt_engine.LLM`` with a
``BuildConfig``) are read from the installed version. A family the PyTorch backend lacks runs
through the TensorRT engine build; a model is refused only when neither flow of the installed
version has it, in one line naming the version.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
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

BATCH_WAIT_MS = 1000.0
"""``batch_wait_timeout_ms`` the engine sets: the request queue returns as soon as ``max_batch_size`` (= B)
requests are there; the timeout only bounds a lost request (whose batch is then ragged, and failed)."""


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
    """The flow of the installed TensorRT-LLM that runs this model: ``pytorch`` or ``tensorrt``.

    ``flow="auto"`` takes the PyTorch backend where its registry has the architecture, else the TensorRT
    engine build. Raises :class:`ParamsError` in one line naming the installed version when no flow can.
    """
    trt, _ = _import()
    version = getattr(trt, "__version__", "unknown")
    arch = hf_architecture(geometry, checkpoint)
    archs = library_architectures()
    if backend == "_autodeploy":
        return "pytorch"
    runs = [f for f in FLOWS if archs[f] is not None and arch in archs[f]]
    if flow != "auto":
        if flow in runs:
            return flow
        raise ParamsError(f"model {name!r}: TensorRT-LLM {version}'s {flow} flow has no model for {arch}"
                          + (f"; its {runs[0]} flow has one: set flow: auto under trtllm:" if runs else
                             "; measure it with engine: hf"))
    if runs:
        return runs[0]
    built = ("" if archs["tensorrt"] is not None
             else " and this build has no TensorRT engine flow (tensorrt_llm._tensorrt_engine)")
    raise ParamsError(f"model {name!r}: TensorRT-LLM {version} runs {arch} in no flow (not in the PyTorch "
                      f"backend's MODEL_CLASS_MAPPING nor the TensorRT flow's MODEL_MAP{built}); measure it with "
                      "engine: hf, or install a release that lists it")


def check_supported(name: str, geometry: dict, backend: str = "pytorch", checkpoint: str | None = None,
                    flow: str = "auto") -> None:
    """Refuse, before any GPU time, a model that no flow of the installed TensorRT-LLM runs.

    Without TensorRT-LLM installed (a machine that only plans or validates a sweep) there is no library
    to ask: nothing is refused here, and :meth:`TrtLlmEngine.load` asks it on the GPU machine.
    """
    if backend not in BACKENDS:
        raise ParamsError(f"trtllm backend {backend!r} is not one of {', '.join(BACKENDS)} (TensorRT-LLM "
                          f"{TARGET_VERSION}'s LLM); families the PyTorch backend lacks run through the TensorRT "
                          "engine flow on their own (trtllm: {flow: auto})")
    if flow not in ("auto",) + FLOWS:
        raise ParamsError(f"trtllm flow {flow!r} is not one of auto, {', '.join(FLOWS)}")
    if _installed() is None:
        return
    choose_flow(name, geometry, checkpoint, backend, flow)


class TrtLlmOptions(BaseModel):
    """The ``trtllm:`` section of a params file (its keys may also stand at the top level)."""

    model_config = ConfigDict(extra="forbid")

    backend: Literal[BACKENDS] = "pytorch"
    """``LLM(backend=...)``."""
    flow: Literal["auto", "pytorch", "tensorrt"] = "auto"
    """``auto``: the PyTorch backend where the installed version has the architecture, else the TensorRT
    engine build through the LLM API; or one of them by name."""
    chunked_prefill: bool = False
    """Let the library chunk prefills longer than ``max_num_tokens`` (recorded)."""
    tensor_parallel_size: StrictInt = Field(1, ge=1)
    """GPUs the model is split over; the meter reads all of them."""


PROTOCOL = "one executor per batch size (batch wait, CUDA graphs at B), batch checked per call, in-flight step waited"
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
    return {"first_iter": first[0], "ttft_s": sum(ttft) / len(ttft), "ttft_spread_s": max(ttft) - min(ttft),
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
        self._last = None  # the last call's batch check: the window waits on it
        self.max_num_tokens = self._max_num_tokens(self.max_batch_size)

    def _max_num_tokens(self, batch: int) -> int:
        return DEFAULT_MAX_NUM_TOKENS if self.chunked_prefill else max(DEFAULT_MAX_NUM_TOKENS, batch * self.max_input_len)

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
        if self.flow == "pytorch":
            self.llm = self.trt.LLM(
                backend=self.backend, batch_wait_timeout_ms=BATCH_WAIT_MS,
                cuda_graph_config=api.CudaGraphConfig(batch_sizes=[batch], enable_padding=False), **common)
        else:
            from tensorrt_llm._tensorrt_engine import LLM as TensorRTLLM  # the engine-build flow

            build = api.BuildConfig(max_batch_size=batch, max_input_len=self.max_input_len, max_seq_len=self.max_len,
                                    max_num_tokens=self.max_num_tokens)
            self.llm = TensorRTLLM(build_config=build, extended_runtime_perf_knob_config=(
                api.ExtendedRuntimePerfKnobConfig(cuda_graph_mode=True)), **common)
        self.loaded_batch = batch
        self.loads += 1

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
            # every request is enqueued before the first is waited on; the queue holds them for the batch
            futures = [self.llm.generate_async(p, params) for p in prompts]
            outputs = [f.result() for f in futures]
            if len(outputs) != batch_size:
                raise EngineError(f"sent {batch_size} requests, got {len(outputs)} outputs")
            for out in outputs:
                n = len(out.outputs[0].token_ids)
                if n != output_len:
                    raise EngineError(f"asked for {output_len} new tokens, request {out.request_id} gave {n}")
            check = batch_check(outputs, batch_size)
            self._last = check
            window["calls"] += 1
            window["ttft_spread_s"] = max(window["ttft_spread_s"], check["ttft_spread_s"])
            extra = {"first_token_iterations": 1, "ttft_spread_s": window["ttft_spread_s"],
                     "decode_graphed": self.flow is not None and self.loaded_batch == batch_size,
                     "trtllm_flow": self.flow}
            return Generation(output_tokens=output_len, ttft_s=check["ttft_s"], extra=extra)

        return Request(make_prompts, run)

    def synchronize(self) -> None:
        """Wait until the GPU's work for the calls so far has ended, in whichever process it runs.

        Every result has arrived when a call returns. With the overlap scheduler one forward step is
        still in flight after the last response: wait until the executor's steady clock (perf metrics;
        ``time.monotonic`` reads the same clock) is one measured decode step past the last token. Then
        synchronise CUDA in this process (an in-process executor).
        """
        last = self._last
        if last is not None:
            until = last["last_token_time_s"] + last["step_s"] * 1.1
            wait = until - time.monotonic()
            if wait > 0:
                time.sleep(wait)
        try:
            import torch
        except ImportError:
            return
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
                "batch_wait_timeout_ms": BATCH_WAIT_MS if self.flow == "pytorch" else 0,
                "cuda_graphs": "one executor per batch size B, graphs captured at exactly B",
                "weights": "checkpoint" if self.checkpoint else "dummy (random, from config.json)"}

    def close(self) -> None:
        if self.llm is not None:
            self.llm.shutdown()
            self.llm = None
            self.loaded_batch = None
