"""Fakes of the hardware libraries, for tests without a GPU.

- :class:`FakeNvml`: the subset of ``pynvml`` (nvidia-ml-py) that :mod:`energykit.meters` calls,
  driven by a clock: an energy counter that advances in steps of ``counter_period_s`` at a constant
  power, optionally missing, optionally going down; or no GPU at all. :func:`fake_api_names` lists
  what it fakes, so a test can check each name exists in the real module.
- :class:`FakeTensorRTLLM`: a stand-in ``tensorrt_llm`` module written from TensorRT-LLM's source
  (1.2's contract; a few fields of the stored main snapshot, marked). It accepts exactly the
  arguments the real ``LLM`` (both flows), ``SamplingParams``, ``KvCacheConfig``, ``CudaGraphConfig``
  and ``BuildConfig`` accept, raises where the real ones raise, lists architectures as the library's
  registries do, and runs the executor loop in a thread, iteration by iteration, consulting its
  request queue every iteration with upstream's arguments and waiting as upstream waits (real time,
  in every call's duration): an idle executor that wakes on the first request (a batch submitted one
  by one comes out ragged), ``batch_wait_timeout_ms`` waited on every busy iteration, the executor in
  this process or behind a proxy as ``TLLM_WORKER_USE_SINGLE_PROCESS`` says, CUDA graphs only for
  captured generation-only batch sizes, the overlap scheduler's in-flight step after the last
  response, and per-request perf metrics (first/last iteration, steady-clock times). It counts what a
  measurement must avoid: reused prefix blocks, repeated prompts, split prefills, ragged and
  ungraphed iterations, decode steps that waited in the queue.
"""

from __future__ import annotations

import datetime
import json
import math
import os
import queue
import sys
import threading
import time
import types
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["FakeNVMLError", "FakeNVMLErrorNotSupported", "FakeNvml", "fake_api_names", "TRTLLM_BASE_ARGS",
           "TRTLLM_TORCH_ARGS", "TRTLLM_TENSORRT_ONLY_ARGS", "TRTLLM_TRT_ARGS", "TRTLLM_MAIN_ONLY_ARGS",
           "TRTLLM_PYTORCH_ARCHITECTURES", "TRTLLM_TENSORRT_ARCHITECTURES", "TOKENS_PER_BLOCK",
           "cuda_graph_batch_sizes", "FakeSamplingParams", "FakeKvCacheConfig", "FakeCudaGraphConfig",
           "FakeExtendedRuntimePerfKnobConfig", "FakeBuildConfig", "FakeRequestError", "FakeEnergyMonitor",
           "FakeIteration", "FakeTensorRTLLM"]


class FakeNVMLError(Exception):
    """Stands for ``pynvml.NVMLError``."""


class FakeNVMLErrorNotSupported(FakeNVMLError):
    """Stands for ``pynvml.NVMLError_NotSupported``."""


@dataclass
class _FieldValue:
    nvmlReturn: int
    value: types.SimpleNamespace


class FakeNvml:
    """Counter-driven fake of ``pynvml``.

    Parameters
    ----------
    power_w : float or list of float
        Constant board power [W]; a list gives each GPU its own.
    counter_period_s : float
        The energy counter advances every this many seconds (0.1 on an H200).
    has_counter : bool
        False: ``nvmlDeviceGetTotalEnergyConsumption`` raises NotSupported (fallback path).
    counter_drop_after : int, optional
        After this many counter reads the counter goes back to zero (driver reload).
    gpus : int
        Number of GPUs; 0 makes ``nvmlInit`` fail as on a machine without a driver.
    counter_phase_s : float or list of float
        When each GPU's counter ticks within its period [s] (GPUs tick at their own phases).
    """

    NVMLError = FakeNVMLError
    NVMLError_NotSupported = FakeNVMLErrorNotSupported
    NVML_SUCCESS = 0
    NVML_ERROR_NOT_SUPPORTED = 3
    NVML_FI_DEV_POWER_INSTANT = 186
    NVML_CLOCK_SM = 1
    NVML_CLOCK_MEM = 2
    NVML_TEMPERATURE_GPU = 0

    def __init__(self, power_w=300.0, counter_period_s=0.1, has_counter=True, counter_drop_after=None, gpus=1,
                 instant_field=True, clock=time.perf_counter, counter_phase_s=0.0):
        self.power_w = power_w
        self.counter_period_s = counter_period_s
        self.has_counter = has_counter
        self.counter_drop_after = counter_drop_after
        self.gpus = gpus
        self.instant_field = instant_field
        self.clock = clock
        self.counter_phase_s = counter_phase_s
        self.t0 = clock()
        self._energy = {}  # handle index -> (t [s since t0], energy [J] at t, energy [J] at the last tick)
        self.calls: list[str] = []
        self.counter_reads = 0
        self.initialised = False
        self.busy_pids: dict = {}
        self.mig = False

    def _log(self, name):
        self.calls.append(name)

    def nvmlInit(self):
        self._log("nvmlInit")
        if self.gpus == 0:
            raise FakeNVMLError("Driver Not Loaded")
        self.initialised = True

    def nvmlShutdown(self):
        self._log("nvmlShutdown")
        self.initialised = False

    def nvmlDeviceGetCount(self):
        self._log("nvmlDeviceGetCount")
        return self.gpus

    def nvmlDeviceGetHandleByIndex(self, index):
        self._log("nvmlDeviceGetHandleByIndex")
        if index >= self.gpus:
            raise FakeNVMLError("Invalid Argument")
        return ("handle", index)

    def nvmlDeviceGetHandleByUUID(self, uuid):
        self._log("nvmlDeviceGetHandleByUUID")
        if not str(uuid).startswith("GPU-fake-"):
            raise FakeNVMLError("Not Found")
        return ("handle", int(str(uuid).rsplit("-", 1)[1]))

    def _power(self, handle) -> float:
        return self.power_w[handle[1]] if isinstance(self.power_w, (list, tuple)) else self.power_w

    def nvmlDeviceGetUUID(self, handle):
        return f"GPU-fake-{handle[1]}"

    def nvmlDeviceGetName(self, handle):
        return "Fake H200"

    def nvmlDeviceGetTotalEnergyConsumption(self, handle):
        """Energy since 'driver load' [mJ], advancing in steps of ``counter_period_s``."""
        self._log("nvmlDeviceGetTotalEnergyConsumption")
        if not self.has_counter:
            raise FakeNVMLErrorNotSupported("Not Supported")
        self.counter_reads += 1
        if self.counter_drop_after is not None and self.counter_reads > self.counter_drop_after:
            self.t0 = self.clock()  # driver reload: the counter starts from zero again
            self.counter_drop_after = None
            self._energy = {}
        return int(self._advance(handle)[2] * 1000) + 10_000_000

    def _advance(self, handle):
        """Integrate this GPU's power up to now; the counter shows the energy at the last tick."""
        now = self.clock() - self.t0
        t, e, at_tick = self._energy.get(handle[1], (0.0, 0.0, 0.0))
        if now > t:
            p = self._power(handle)
            phase = (self.counter_phase_s[handle[1]] if isinstance(self.counter_phase_s, (list, tuple))
                     else self.counter_phase_s)
            tick = int((now - phase) / self.counter_period_s) * self.counter_period_s + phase
            if tick > t:
                at_tick = e + p * (tick - t)
            e += p * (now - t)
            t = now
        self._energy[handle[1]] = (t, e, at_tick)
        return self._energy[handle[1]]

    def set_power(self, power_w) -> None:
        """Change the board power from now on (what was drawn so far is integrated first)."""
        for i in range(max(self.gpus, 1)):
            self._advance(("handle", i))
        self.power_w = power_w

    def nvmlDeviceGetPowerUsage(self, handle):
        """Average power [mW]."""
        self._log("nvmlDeviceGetPowerUsage")
        return int(self._power(handle) * 1000)

    def nvmlDeviceGetFieldValues(self, handle, field_ids):
        self._log("nvmlDeviceGetFieldValues")
        out = []
        for fid in field_ids:
            ok = fid == self.NVML_FI_DEV_POWER_INSTANT and self.instant_field
            out.append(_FieldValue(self.NVML_SUCCESS if ok else self.NVML_ERROR_NOT_SUPPORTED,
                                   types.SimpleNamespace(uiVal=int(self._power(handle) * 1000) if ok else 0)))
        return out

    def nvmlDeviceGetComputeRunningProcesses(self, handle):
        """Processes computing on the GPU: ``busy_pids`` (a dict index -> pids) set by a test."""
        return [types.SimpleNamespace(pid=pid, usedGpuMemory=1 << 30) for pid in self.busy_pids.get(handle[1], [])]

    def nvmlDeviceGetMigMode(self, handle):
        """(current, pending) MIG mode; ``mig`` set by a test."""
        return (1, 1) if self.mig else (0, 0)

    def nvmlSystemGetDriverVersion(self):
        return "580.159.04"

    def nvmlDeviceGetEnforcedPowerLimit(self, handle):
        return 700_000

    def nvmlDeviceGetClockInfo(self, handle, clock_type):
        return 1980 if clock_type == self.NVML_CLOCK_SM else 3201

    def nvmlDeviceGetTemperature(self, handle, sensor):
        return 35


def fake_api_names() -> list[str]:
    """Names of the ``pynvml`` API that :class:`FakeNvml` fakes."""
    return [n for n in dir(FakeNvml) if n.startswith(("nvml", "NVML")) and not n.startswith("NVMLError")]


# ---------------------------------------------------------------------------------------------------
# TensorRT-LLM, as read from NVIDIA/TensorRT-LLM's public source. The contract is 1.2's; the points
# marked [main] were read at the stored main snapshot (llm_args.py at commit 0004396720054fd8, copyright
# 2026, newer than 1.2) and are what the kit targets where 1.2 lacks them. Files:
#   tensorrt_llm/llmapi/llm.py       BaseLLM.__init__ rejects any kwarg that is not a field of the args
#                                    class ("LLM got invalid argument: KEY"); _TorchLLM pops backend
#                                    (default "pytorch") and rejects TensorRT-only fields;
#                                    _prepare_sampling_params raises "tokenizer is required to reset end_id"
#                                    when end_id is None and there is no tokenizer, and ORs in
#                                    LLM(return_perf_metrics=...); _check_arguments (pytorch backend, no
#                                    chunked prefill) refuses a prompt longer than max_num_tokens.
#                                    generate() calls generate_async() once per prompt, then waits for each.
#   tensorrt_llm/_tensorrt_engine/__init__.py   ``LLM`` there is llmapi.llm._TrtLLM: the TensorRT
#                                    engine-build flow (build_config, extended_runtime_perf_knob_config).
#   tensorrt_llm/llmapi/llm_args.py  BaseLlmArgs/TorchLlmArgs fields (extra="forbid"): max_num_tokens
#                                    default 8192, enable_chunked_prefill False, load_format 'auto'|'dummy',
#                                    return_perf_metrics; KvCacheConfig (StrictBaseModel) with
#                                    enable_block_reuse default True; batch_wait_timeout_ms (default 0: "If
#                                    greater than 0, the request queue might wait up to batch_wait_timeout_ms
#                                    to receive max_batch_size requests"), batch_wait_timeout_iters,
#                                    batch_wait_max_tokens_ratio; disable_overlap_scheduler (default False);
#                                    CudaGraphConfig(batch_sizes, max_batch_size, enable_padding) whose
#                                    validator [main: BaseCudaGraphConfig.validate_base_cuda_graph_config]
#                                    sorts given batch_sizes, or generates 1..31, 32, 64, 128 (no padding)
#                                    up to max_batch_size (default 128), and refuses a max_batch_size that is
#                                    not max(batch_sizes); enable_energy_metrics [main].
#   tensorrt_llm/_torch/pyexecutor/executor_request_queue.py (read at commits a98a9061d72f and 007a7508b8f6,
#                                    stored snapshots of main, identical here; no tagged 1.2 tree was
#                                    available)  _fetch_and_process_requests,
#                                    called once per executor iteration (py_executor.py _prepare_and_schedule_batch
#                                    -> _fetch_and_activate_new_requests -> fetch_new_requests): idle (no active,
#                                    no waiting request) it calls _get_from_request_queue(None), else
#                                    _get_from_request_queue(timedelta(0)). _get_from_request_queue: an empty
#                                    queue with a timeout of None (or > 0) blocks for ONE item, otherwise it
#                                    drains the queue without blocking; then, if batch_wait_timeout_ms > 0 and
#                                    it has fewer than max_batch_size items, it waits for more until a deadline
#                                    batch_wait_timeout_ms away -- on every call, busy (decode) ones included.
#   tensorrt_llm/llmapi/utils.py     enable_worker_single_process_for_tp1(): @cache'd read of
#                                    TLLM_WORKER_USE_SINGLE_PROCESS == "1".
#   tensorrt_llm/executor/executor.py  GenerationExecutor.create: MPI workers (a GenerationExecutorProxy) for
#                                    more than one rank; for one, a GenerationExecutorWorker in this process
#                                    when enable_worker_single_process_for_tp1(), else a proxy again.
#                                    executor/base_worker.py: the worker's engine is the PyExecutor
#                                    (self.engine = _create_py_executor()), whose executor_request_queue is the
#                                    queue above; llmapi/llm.py keeps the executor as LLM._executor.
#   cpp/tensorrt_llm/executor/executorImpl.cpp (commit b35ac1b64368)  Executor::Impl::getLeaderNewReqWithIds,
#                                    the TensorRT flow's C++ queue: waits until a request is queued (or one
#                                    is active), then takes every queued one; no batch wait.
#   tensorrt_llm/_torch/pyexecutor/py_executor.py  _executor_loop_overlap: step k is launched before
#                                    step k-1's tokens are processed (_update_requests, then
#                                    _process_previous_batch sends the responses), so when the last
#                                    response leaves, one forward step (k) is still on the GPU; an idle loop
#                                    then blocks in the fetch above without processing it.
#   tensorrt_llm/_torch/pyexecutor/cuda_graph_runner.py  a CUDA graph replays only a generation-only
#                                    batch whose size was captured (or, with enable_padding, is padded up to
#                                    one); a batch with context requests runs eagerly.
#   tensorrt_llm/executor/result.py  RequestOutput.outputs[0].request_perf_metrics: timing_metrics
#                                    (arrival_time, first_scheduled_time, first_token_time, last_token_time,
#                                    timedelta on the steady clock), first_iter, last_iter.
#   tensorrt_llm/sampling_params.py  SamplingParams: dataclass(slots=True, kw_only=True); unknown keyword
#                                    -> TypeError; pad_id defaults to end_id.
#   tensorrt_llm/llmapi/__init__.py  KvCacheConfig, SamplingParams, LLM, CudaGraphConfig, BuildConfig are
#                                    exported from tensorrt_llm.llmapi.
#   tensorrt_llm/_torch/models/modeling_utils.py  MODEL_CLASS_MAPPING, filled by @register_auto_model(ARCH)
#                                    when tensorrt_llm._torch.models is imported: the PyTorch backend's
#                                    architectures (1.2: no OPT, Falcon, Gemma-2 or Granite).
#   tensorrt_llm/models/__init__.py  MODEL_MAP: the TensorRT flow's architectures (OPTForCausalLM,
#                                    FalconForCausalLM, Gemma2ForCausalLM, GraniteForCausalLM, Llama, Qwen2…).
#   tensorrt_llm/bench/benchmark/utils/energy_monitor.py [main]  EnergyMonitor(world_size): a context
#                                    manager reading nvmlDeviceGetTotalEnergyConsumption on the GPUs of
#                                    CUDA_VISIBLE_DEVICES (UUIDs or indices) at enter and exit;
#                                    total_energy [J] = sum of deltas / 1000 × world_size / devices.

TRTLLM_BASE_ARGS = frozenset("""
model tokenizer tokenizer_mode skip_tokenizer_init trust_remote_code tensor_parallel_size dtype revision
tokenizer_revision pipeline_parallel_size context_parallel_size gpus_per_node moe_cluster_parallel_size
moe_tensor_parallel_size moe_expert_parallel_size enable_attention_dp enable_lm_head_tp_in_adp cp_config
load_format fail_fast_on_attention_window_too_large enable_lora lora_config kv_cache_config
enable_chunked_prefill guided_decoding_backend batched_logits_processor iter_stats_max_iterations
request_stats_max_iterations peft_cache_config scheduler_config cache_transceiver_config
sparse_attention_config speculative_config max_batch_size max_input_len max_seq_len max_beam_width
max_num_tokens gather_generation_logits num_postprocess_workers postprocess_tokenizer_dir reasoning_parser
decoding_config mpi_session backend return_perf_metrics orchestrator_type
""".split())
TRTLLM_TORCH_ARGS = TRTLLM_BASE_ARGS | frozenset("""
build_config garbage_collection_gen0_threshold cuda_graph_config disable_overlap_scheduler moe_config
attn_backend enable_mixed_sampler enable_trtllm_sampler enable_iter_perf_stats enable_iter_req_stats
print_iter_log torch_compile_config enable_autotuner enable_layerwise_nvtx_marker enable_min_latency
stream_interval force_dynamic_quantization allreduce_strategy checkpoint_loader checkpoint_format
connector_config batch_wait_timeout_ms batch_wait_timeout_iters batch_wait_max_tokens_ratio
perf_metrics_max_requests
""".split())
TRTLLM_MAIN_ONLY_ARGS = frozenset({"enable_energy_metrics"})
"""Fields of the stored main snapshot's TorchLlmArgs that 1.2 does not have."""
TRTLLM_TENSORRT_ONLY_ARGS = frozenset("""
auto_parallel auto_parallel_world_size enable_tqdm workspace enable_build_cache
extended_runtime_perf_knob_config calib_config quant_config embedding_parallel_mode fast_build
enable_prompt_adapter max_prompt_adapter_token batching_type normalize_log_probs
""".split())
TRTLLM_TRT_ARGS = TRTLLM_BASE_ARGS | TRTLLM_TENSORRT_ONLY_ARGS | frozenset({"build_config"})
"""Arguments of the TensorRT flow's ``LLM`` (``TrtLlmArgs``): no PyTorch-backend fields."""
TRTLLM_PYTORCH_ARCHITECTURES = frozenset({
    "LlamaForCausalLM", "MistralForCausalLM", "MixtralForCausalLM", "Qwen2ForCausalLM", "Qwen3ForCausalLM",
    "Qwen3MoeForCausalLM", "Qwen2MoeForCausalLM", "Gemma3ForCausalLM", "DeepseekV3ForCausalLM",
    "NemotronForCausalLM", "Exaone4ForCausalLM",
})
"""``MODEL_CLASS_MAPPING`` keys of the PyTorch backend in 1.2."""
TRTLLM_TENSORRT_ARCHITECTURES = frozenset({
    "GPT2LMHeadModel", "GPTForCausalLM", "NemotronForCausalLM", "OPTForCausalLM", "BloomForCausalLM",
    "RWForCausalLM", "FalconForCausalLM", "PhiForCausalLM", "Phi3ForCausalLM", "GPTNeoXForCausalLM",
    "GPTJForCausalLM", "LlamaForCausalLM", "ExaoneForCausalLM", "MistralForCausalLM", "MixtralForCausalLM",
    "InternLMForCausalLM", "GraniteForCausalLM", "GraniteMoeForCausalLM", "BaichuanForCausalLM",
    "GemmaForCausalLM", "Gemma2ForCausalLM", "Gemma3ForCausalLM", "QWenForCausalLM", "Qwen2ForCausalLM",
    "Qwen2MoeForCausalLM", "Qwen3ForCausalLM", "Qwen3MoeForCausalLM", "DbrxForCausalLM", "CohereForCausalLM",
    "DeepseekForCausalLM", "DeepseekV2ForCausalLM",
})
"""Causal-LM keys of ``tensorrt_llm.models.MODEL_MAP`` (the TensorRT engine-build flow)."""
TOKENS_PER_BLOCK = 32
"""KV cache block of the paged cache [tokens] (TensorRT-LLM's default ``tokens_per_block``)."""


def cuda_graph_batch_sizes(max_batch_size: int, enable_padding: bool) -> list[int]:
    """``BaseCudaGraphConfig._generate_cuda_graph_batch_sizes``: the sizes captured when none are given."""
    if enable_padding:
        sizes = [1, 2, 4] + [i * 8 for i in range(1, 17)]
        while sizes[-1] + 64 <= max_batch_size:
            sizes.append(sizes[-1] + 64)
    else:
        sizes = list(range(1, 32)) + [32, 64, 128]
        sizes += [2 ** i for i in range(8, math.ceil(math.log(max_batch_size, 2)))] if max_batch_size > 1 else []
    sizes = sorted(s for s in sizes if s <= max_batch_size)
    if not sizes or max_batch_size != sizes[-1]:
        sizes.append(max_batch_size)
    return sizes


@dataclass(slots=True, kw_only=True)
class FakeSamplingParams:
    """``tensorrt_llm.SamplingParams``: the fields the kit may use, keyword-only; others raise TypeError."""

    end_id: int | None = None
    pad_id: int | None = None
    max_tokens: int = 32
    n: int = 1
    best_of: int | None = None
    use_beam_search: bool = False
    top_k: int | None = None
    top_p: float | None = None
    seed: int | None = None
    temperature: float | None = None
    min_tokens: int | None = None
    stop_token_ids: list | None = None
    return_context_logits: bool = False
    return_generation_logits: bool = False
    exclude_input_from_output: bool = True
    return_perf_metrics: bool = False
    ignore_eos: bool = False
    detokenize: bool = True
    add_special_tokens: bool = True
    truncate_prompt_tokens: int | None = None
    skip_special_tokens: bool = True

    def __post_init__(self):
        if self.pad_id is None:
            self.pad_id = self.end_id
        self.best_of = self.best_of or self.n
        if self.best_of < self.n:
            raise ValueError(f"best_of ({self.best_of}) cannot be less than n ({self.n})")


class _StrictModel:
    """A pydantic ``StrictBaseModel`` stand-in: unknown fields raise ``ValueError`` ("Extra inputs")."""

    FIELDS: dict = {}
    NAME = ""

    def __init__(self, **kwargs):
        extra = sorted(set(kwargs) - set(self.FIELDS))
        if extra:
            raise ValueError(f"1 validation error for {self.NAME}\n{extra[0]}\n  Extra inputs are not permitted")
        for k, v in {**self.FIELDS, **kwargs}.items():
            setattr(self, k, v)


class FakeKvCacheConfig(_StrictModel):
    """``tensorrt_llm.llmapi.KvCacheConfig`` (a strict pydantic model): unknown fields raise."""

    NAME = "KvCacheConfig"
    FIELDS = {"enable_block_reuse": True, "max_tokens": None, "max_attention_window": None,
              "sink_token_length": None, "free_gpu_memory_fraction": None, "host_cache_size": None,
              "onboard_blocks": True, "cross_kv_cache_fraction": None, "secondary_offload_min_priority": None,
              "event_buffer_max_size": 0, "enable_partial_reuse": True, "copy_on_partial_reuse": True,
              "use_uvm": False, "dtype": "auto"}


class FakeCudaGraphConfig(_StrictModel):
    """``tensorrt_llm.llmapi.CudaGraphConfig``, with the validator of ``llm_args.py``."""

    NAME = "CudaGraphConfig"
    FIELDS = {"batch_sizes": None, "max_batch_size": 0, "enable_padding": False}

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        if self.batch_sizes:
            self.batch_sizes = sorted(self.batch_sizes)
            if self.max_batch_size == 0:
                self.max_batch_size = max(self.batch_sizes)
            elif self.max_batch_size != max(self.batch_sizes):
                raise ValueError("CudaGraphConfig.max_batch_size is incompatible with CudaGraphConfig.batch_sizes. "
                                 "When both are provided, max_batch_size must equal max(batch_sizes).")
        else:
            self.max_batch_size = self.max_batch_size or 128
            self.batch_sizes = cuda_graph_batch_sizes(self.max_batch_size, self.enable_padding)


class FakeExtendedRuntimePerfKnobConfig(_StrictModel):
    """``tensorrt_llm.llmapi.ExtendedRuntimePerfKnobConfig`` (TensorRT flow): ``cuda_graph_mode`` off by default."""

    NAME = "ExtendedRuntimePerfKnobConfig"
    FIELDS = {"multi_block_mode": True, "enable_context_fmha_fp32_acc": False, "cuda_graph_mode": False,
              "cuda_graph_cache_size": 0}


@dataclass(kw_only=True)
class FakeBuildConfig:
    """``tensorrt_llm.llmapi.BuildConfig`` (a dataclass in 1.2): unknown keywords raise TypeError."""

    max_batch_size: int = 2048
    max_input_len: int = 1024
    max_seq_len: int | None = None
    max_num_tokens: int = 8192
    max_beam_width: int = 1
    gather_context_logits: bool = False


class FakeRequestError(RuntimeError):
    """``tensorrt_llm.executor.utils.RequestError``."""


@dataclass
class _Completion:
    token_ids: list
    request_perf_metrics: object = None


@dataclass
class _RequestOutput:
    request_id: int
    prompt_token_ids: list
    outputs: list
    finished: bool = True


class _Future:
    """What ``LLM.generate_async`` returns (``RequestOutput``): ``result()`` waits for the executor's response."""

    def __init__(self, request_id, prompt, sp):
        self.request_id, self.prompt_token_ids, self.sp = request_id, list(prompt), sp
        self.outputs: list = []
        self.finished = False
        self.submitted_at = time.monotonic()
        self._done = threading.Event()
        self._error: BaseException | None = None

    def _respond(self, outputs=None, error=None):
        self.outputs, self._error, self.finished = outputs or [], error, True
        self._done.set()

    def result(self, timeout=None):
        if not self._done.wait(timeout):
            raise TimeoutError(f"request {self.request_id} got no response within {timeout} s")
        if self._error is not None:
            raise self._error
        return self


class FakeEnergyMonitor:
    """``tensorrt_llm.bench.benchmark.utils.energy_monitor.EnergyMonitor`` [main], on the installed ``pynvml``."""

    def __init__(self, world_size):
        import pynvml  # the real module imports it at import time; here whatever the test installed

        self._nvml = pynvml
        self._world_size = world_size
        self._start_energies = None
        self._total_energy = None
        pynvml.nvmlInit()
        ids = [e.strip() for e in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if e.strip()]
        if not ids:
            self._handles = [pynvml.nvmlDeviceGetHandleByIndex(i)
                             for i in range(min(pynvml.nvmlDeviceGetCount(), world_size))]
        else:
            self._handles = [pynvml.nvmlDeviceGetHandleByUUID(d) if d.startswith(("GPU-", "MIG-"))
                             else pynvml.nvmlDeviceGetHandleByIndex(int(d)) for d in ids[:world_size]]
        self._device_count = len(self._handles)

    def __enter__(self):
        self._start_energies = [self._nvml.nvmlDeviceGetTotalEnergyConsumption(h) for h in self._handles]
        return self

    def __exit__(self, exc_type, exc, tb):
        total = sum((self._nvml.nvmlDeviceGetTotalEnergyConsumption(h) - s) / 1000.0
                    for h, s in zip(self._handles, self._start_energies))
        self._total_energy = total * self._world_size / self._device_count
        self._nvml.nvmlShutdown()
        return False

    @property
    def total_energy(self):
        return self._total_energy


@dataclass
class FakeIteration:
    """One executor iteration as the stand-in ran it."""

    iter: int
    context_requests: int
    generation_requests: int
    graphed: bool
    in_flight: bool = False
    """The overlap scheduler's extra step, launched before the batch's last tokens were processed."""


@dataclass
class FakeFetch:
    """One consultation of the request queue by the executor loop (one per iteration)."""

    idle: bool
    """No active and no waiting request: upstream fetches with ``timeout=None`` (blocks for the first)."""
    waited_s: float
    """Seconds the fetch waited [s]: busy, blocked in the queue's ``get``; idle, from the first request's
    arrival to its return (the time blocked before it, with nothing running, is no call's wait)."""
    requests: int
    """Requests it returned."""


SHUTDOWN_REQUEST_ID = -1
"""``executor_request_queue.py``: the id of the queue item that stops the executor loop."""


@dataclass
class FakeRequestQueueItem:
    """``executor_request_queue.RequestQueueItem``: an id and the request (None for a control item)."""

    id: int
    request: object = None
    queued_at: float = field(default_factory=time.monotonic)
    """When it was put in the queue (the stand-in's bookkeeping)."""

    @property
    def is_shutdown_request(self):
        return self.id == SHUTDOWN_REQUEST_ID

    @property
    def is_normal_request(self):
        return not self.is_shutdown_request


class _TimedQueue(queue.Queue):
    """A ``queue.Queue`` that adds up the seconds its blocking ``get`` calls waited (``blocked_s``)."""

    def __init__(self):
        super().__init__()
        self.blocked_s = 0.0

    def get(self, block=True, timeout=None):
        if not block:
            return super().get(False)
        t0 = time.monotonic()
        try:
            return super().get(True, timeout)
        finally:
            self.blocked_s += time.monotonic() - t0


class FakeExecutorRequestQueue:
    """``tensorrt_llm/_torch/pyexecutor/executor_request_queue.py``'s ``ExecutorRequestQueue``, as upstream runs it.

    :meth:`_get_from_request_queue` is upstream's logic line for line: with a ``timeout`` of None (or
    over 0) and an empty queue it blocks for one item, else it drains the queue without waiting; then,
    with ``batch_wait_timeout_ms > 0`` and fewer than ``max_batch_size`` items, it waits until a
    deadline ``batch_wait_timeout_ms`` away for more — on *every* call, whether the executor is idle
    or decoding. :meth:`fetch_new_requests` is ``_fetch_new_requests_attention_tp`` →
    ``_fetch_and_process_requests``: ``timeout=None`` when idle (no active request, empty waiting
    queue), else ``timedelta(0)``; called once per executor iteration. It calls
    ``self._get_from_request_queue`` through the instance, so a wrapper set on the instance is what runs.
    """

    def __init__(self, fake, max_batch_size, batch_wait_timeout_ms):
        self._fake = fake
        self.request_queue: queue.Queue = _TimedQueue()
        self.waiting_queue: deque = deque()
        self.max_batch_size = max_batch_size
        self.max_num_active_requests = max_batch_size
        self.batch_wait_timeout_ms = batch_wait_timeout_ms
        self.is_shutdown = False
        self.active = True

    def _get_from_request_queue(self, timeout):
        items = []
        timeout_secs = timeout.total_seconds() if timeout is not None else None
        try:
            if self.request_queue.empty() and (timeout_secs is None or timeout_secs > 0):
                items.append(self.request_queue.get(timeout=timeout_secs))  # queue empty and may wait: wait
            else:
                while True:  # not empty, or no waiting: take what is there
                    items.append(self.request_queue.get_nowait())
        except queue.Empty:
            pass
        if self.batch_wait_timeout_ms == 0:
            return items
        if len(items) >= self.max_batch_size:
            return items
        deadline = time.monotonic() + self.batch_wait_timeout_ms / 1000.0
        while len(items) < self.max_batch_size:
            remaining_timeout = deadline - time.monotonic()
            if remaining_timeout <= 0:
                break
            try:
                items.append(self.request_queue.get(timeout=remaining_timeout))
            except queue.Empty:
                break
        return items

    def fetch_new_requests(self, num_active_requests: int) -> list:
        idle = num_active_requests == 0 and len(self.waiting_queue) == 0
        timeout = None if idle else datetime.timedelta(0)
        t0, b0 = time.monotonic(), self.request_queue.blocked_s
        new = self._get_from_request_queue(timeout)
        t1 = time.monotonic()
        if idle:  # blocked until the first request arrived (nothing ran, no call waited), then maybe more
            waited = t1 - max(t0, min(item.queued_at for item in new)) if new else 0.0
        else:  # busy: the time blocked in the queue (its own bookkeeping, not the host's hiccups)
            waited = self.request_queue.blocked_s - b0
        self._fake.fetches.append(FakeFetch(idle, max(0.0, waited), len(new)))
        normal = []
        for item in new:
            if item.is_shutdown_request:
                self.is_shutdown = True
            else:
                normal.append(item)
        self.waiting_queue.extend(normal)
        take = max(0, self.max_num_active_requests - num_active_requests)
        return [self.waiting_queue.popleft().request for _ in range(min(take, len(self.waiting_queue)))]

    def enqueue_request(self, request) -> None:
        self.request_queue.put(FakeRequestQueueItem(request.future.request_id, request))

    def enqueue_shutdown_request(self) -> None:
        self.request_queue.put(FakeRequestQueueItem(SHUTDOWN_REQUEST_ID))
        self.active = False


class FakeCppRequestQueue(FakeExecutorRequestQueue):
    """The TensorRT flow's C++ executor queue (``cpp/tensorrt_llm/executor/executorImpl.cpp``,
    ``Executor::Impl::getLeaderNewReqWithIds``): with no active request it waits until the queue holds
    one, then takes every queued request (up to the free slots); there is no batch wait."""

    def _get_from_request_queue(self, timeout):
        items = []
        if timeout is None:
            items.append(self.request_queue.get())
        try:
            while True:
                items.append(self.request_queue.get_nowait())
        except queue.Empty:
            pass
        return items


@dataclass
class _FakeRequest:
    """An ``LlmRequest`` inside the stand-in's executor."""

    future: _Future
    want: int
    steps: int = 0
    made: int = 0
    finished: bool = False
    first_scheduled: float | None = None
    first_iter: int | None = None
    last_iter: int | None = None
    t_first: float | None = None
    t_last: float | None = None


class FakePyExecutor:
    """The executor loop (``py_executor.py``: ``_executor_loop`` / ``_executor_loop_overlap``) in a thread.

    Every iteration: fetch new requests from the queue (:meth:`FakeExecutorRequestQueue.fetch_new_requests`,
    which may wait as upstream waits), schedule every unfinished active request (a new one prefills, the
    others decode one token; context requests only while their prompt tokens fit ``max_num_tokens``),
    launch the step on the simulated GPU (``step_s`` each, one after another), then — with the overlap
    scheduler, *after* launching the next step — wait for the previous step, take its tokens and send
    the responses of finished requests. So with overlap, when a call's last response is sent, one more
    step (launched with the finished requests) still runs on the GPU, and an idle loop blocks in the
    fetch without processing it.
    """

    def __init__(self, fake, llm, request_queue, in_process):
        self._fake, self._llm = fake, llm
        self.executor_request_queue = request_queue
        self.in_process = in_process
        self.active_requests: list[_FakeRequest] = []
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._loop, name="fake-trtllm-executor", daemon=True)
        self._thread.start()

    def _loop(self):
        prev = None
        try:
            while True:
                live = [r for r in self.active_requests if not r.finished]
                idle = not live and not self.executor_request_queue.waiting_queue
                new = self.executor_request_queue.fetch_new_requests(len(live))
                waited = self._fake.fetches[-1].waited_s >= 0.001 if self._fake.fetches else False
                if self.executor_request_queue.is_shutdown:
                    break
                self.active_requests = live + new
                launched = self._launch(self.active_requests, idle or waited) if self.active_requests else None
                if self._llm.overlap:
                    if prev is not None:
                        self._process(prev)
                    if launched is not None and all(r.finished for r in launched[1]):
                        launched[0].in_flight = True  # launched with requests that had just finished
                    prev = launched
                elif launched is not None:
                    self._process(launched)
        except BaseException as e:  # a bug of the stand-in: fail the waiting calls, never hang them
            self.error = e
            for r in self.active_requests:
                r.future._respond(error=e)

    def _launch(self, batch, after_wait=True):
        fake, llm = self._fake, self._llm
        ctx, gen, tokens = [], [], 0
        for r in batch:
            if r.steps == 0:
                n = len(r.future.prompt_token_ids)
                if ctx and not llm.chunked and tokens + n > llm.max_num_tokens:
                    continue  # does not fit this iteration: it prefills in a later one
                ctx.append(r)
                tokens += n
            else:
                gen.append(r)
        if len(ctx) < sum(1 for r in batch if r.steps == 0):
            fake.split_prefills += 1
        n = len(gen)
        graphed = not ctx and n > 0 and (n in llm.graph_sizes or (llm.graph_padding and llm.graph_sizes
                                                                  and n <= max(llm.graph_sizes)))
        it = fake._iter
        fake._iter += 1
        rec = FakeIteration(it, len(ctx), n, graphed)
        fake.iterations.append(rec)
        # a step starts when the GPU is free and, after an idle loop or a fetch that waited, not before its
        # launch. (Otherwise the host is taken to launch in time: a late thread of this test process is not
        # the modelled executor's.)
        t_start = max(time.monotonic(), fake.gpu_busy_until) if after_wait else fake.gpu_busy_until
        t_end = t_start + fake.step_s
        fake.gpu_busy_until = t_end
        if self.in_process:
            fake.in_process_busy_until = t_end
        for r in ctx + gen:
            r.steps += 1
            if r.first_scheduled is None:
                r.first_scheduled = t_start
        return rec, ctx + gen, t_end, it

    def _process(self, step):
        rec, batch, t_end, it = step
        wait = t_end - time.monotonic()
        if wait > 0:
            time.sleep(wait)  # the host waits for the step's tokens
        if all(r.finished for r in batch):
            rec.in_flight = True
        for r in batch:
            if r.finished:
                continue
            r.made += 1
            if r.first_iter is None:
                r.first_iter, r.t_first = it, t_end
            if r.made >= r.want:
                r.finished, r.last_iter, r.t_last = True, it, t_end
                self._respond(r)

    def _respond(self, r):
        f = r.future
        metrics = None
        if f.sp.return_perf_metrics:
            since = datetime.timedelta
            timing = types.SimpleNamespace(
                arrival_time=since(seconds=f.submitted_at), first_scheduled_time=since(seconds=r.first_scheduled),
                first_token_time=since(seconds=r.t_first), last_token_time=since(seconds=r.t_last))
            metrics = types.SimpleNamespace(timing_metrics=timing, first_iter=r.first_iter, last_iter=r.last_iter)
        f._respond([_Completion([7] * r.want, metrics)])

    def shutdown(self):
        self.executor_request_queue.enqueue_shutdown_request()
        self._thread.join(timeout=5)


class FakeGenerationExecutorWorker:
    """``tensorrt_llm/executor/worker.py``'s ``GenerationExecutorWorker``: the executor in this process;
    ``engine`` is the ``PyExecutor`` (``base_worker.py``: ``self.engine = _create_py_executor()``), or the
    C++ ``tllm.Executor`` for the TensorRT flow."""

    def __init__(self, engine):
        self.engine = engine

    def shutdown(self):
        self.engine.shutdown()


class FakeGenerationExecutorProxy:
    """``tensorrt_llm/executor/proxy.py``'s ``GenerationExecutorProxy``: the worker runs in an MPI process;
    this process holds no ``engine``, and its CUDA calls do not reach the worker's GPU work."""

    def __init__(self, engine):
        self._remote = engine

    def shutdown(self):
        self._remote.shutdown()


class FakeTensorRTLLM(types.ModuleType):
    """A ``tensorrt_llm`` stand-in on the contract read above; records what a measurement must avoid.

    Install with :meth:`install` (``tensorrt_llm``, ``tensorrt_llm.llmapi``, ``tensorrt_llm._tensorrt_engine``,
    ``tensorrt_llm._torch.models.modeling_utils``, ``tensorrt_llm.models``, where ``energy_monitor`` the
    bench's ``EnergyMonitor``, and ``torch.cuda.synchronize``).

    Each ``LLM`` starts an executor loop in a thread (:class:`FakePyExecutor`) that consults its request
    queue every iteration with upstream's arguments (:class:`FakeExecutorRequestQueue`), so it waits
    where upstream waits and the wait is real time in every call's duration. Where the executor runs
    follows ``GenerationExecutor.create`` (``executor/executor.py``): in this process
    (:class:`FakeGenerationExecutorWorker`, ``llm._executor.engine``) when ``TLLM_WORKER_USE_SINGLE_PROCESS=1``
    was set before the first ``LLM`` (``llmapi/utils.py``'s ``enable_worker_single_process_for_tp1`` is
    ``@cache``d) and ``tensor_parallel_size`` is 1, else behind a proxy (an MPI worker process). Steps run
    one after another on one simulated GPU (``step_s`` each, on ``time.monotonic``); ``torch.cuda.synchronize()``
    in this process waits for the steps an in-process executor launched, never for a proxy's.

    Counters a test reads: ``reused_blocks``, ``repeated_prompts``, ``split_prefills`` (iterations whose
    context requests did not fit ``max_num_tokens``), ``iterations`` (a :class:`FakeIteration` per step),
    ``fetches`` (a :class:`FakeFetch` per consultation of the queue), :meth:`decode_queue_waits`.
    ``short_by`` makes every request return that many tokens fewer than asked; ``ragged_calls`` makes
    that many submissions enqueue their last request ``late_s`` after the others (a request lost past
    any admission wait). ``submit_s`` is the time one ``generate_async`` takes [s] (the LLM API's input
    processing and request objects, about 0.1-1 ms): the executor thread runs meanwhile, so an idle
    executor wakes on the first request of a batch, as a real one does.
    """

    def __init__(self, short_by=0, version="1.2.0", step_s=0.001, pytorch_architectures=TRTLLM_PYTORCH_ARCHITECTURES,
                 tensorrt_architectures=TRTLLM_TENSORRT_ARCHITECTURES, tensorrt_flow=True, energy_monitor=False,
                 ragged_calls=0, late_s=0.2, submit_s=0.0002):
        super().__init__("tensorrt_llm")
        self.__version__ = version
        self.step_s = step_s
        self.calls: list[tuple] = []
        self.reused_blocks = 0
        self.repeated_prompts = 0
        self.split_prefills = 0
        self.prompts_sent = 0
        self.iterations: list[FakeIteration] = []
        self.fetches: list[FakeFetch] = []
        self.gpu_busy_until = 0.0
        self.in_process_busy_until = 0.0
        self.single_process_worker: bool | None = None  # enable_worker_single_process_for_tp1(), read once
        self._seen_prompts: set = set()
        self._cached_blocks: set = set()
        self._iter = 0
        self._short_by = short_by
        self.ragged_calls = ragged_calls
        self.late_s = late_s
        self.submit_s = submit_s
        self.main_args = energy_monitor  # a build with the main snapshot's fields
        self._executors: list = []
        fake = self
        llmapi = types.ModuleType("tensorrt_llm.llmapi")

        def make_llm(flow):
            allowed = TRTLLM_TORCH_ARGS | (TRTLLM_MAIN_ONLY_ARGS if fake.main_args else frozenset())

            class LLM:
                def __init__(self, model, tokenizer=None, tokenizer_mode="auto", skip_tokenizer_init=False,
                             trust_remote_code=False, tensor_parallel_size=1, dtype="auto", revision=None,
                             tokenizer_revision=None, **kwargs):
                    if flow == "pytorch":
                        backend = kwargs.pop("backend", "pytorch")
                        trt_only = sorted(k for k in kwargs if k in TRTLLM_TENSORRT_ONLY_ARGS)
                        if trt_only:
                            raise ValueError(f"The following arguments are specific to TensorRT backend and cannot "
                                             f"be used with PyTorch backend: {trt_only}.")
                        for key in kwargs:
                            if key not in allowed:
                                raise ValueError(f"LLM got invalid argument: {key}")
                        if backend not in ("pytorch", "_autodeploy"):
                            raise ValueError(f"Invalid backend {backend!r}: tensorrt_llm.LLM runs 'pytorch' or "
                                             "'_autodeploy'")
                    else:
                        backend = "tensorrt"
                        for key in kwargs:
                            if key not in TRTLLM_TRT_ARGS:
                                raise ValueError(f"LLM got invalid argument: {key}")
                    load_format = kwargs.get("load_format", "auto")
                    if load_format not in ("auto", "dummy"):
                        raise ValueError(f"load_format: Input should be 'auto' or 'dummy' (got {load_format!r})")
                    kv = kwargs.get("kv_cache_config", FakeKvCacheConfig())
                    if not isinstance(kv, FakeKvCacheConfig):
                        raise ValueError("kv_cache_config: Input should be a valid KvCacheConfig")
                    wait_ms = kwargs.get("batch_wait_timeout_ms", 0) or 0
                    if wait_ms < 0:
                        raise ValueError("batch_wait_timeout_ms must be greater than or equal to 0")
                    cfg_path = Path(str(model)) / "config.json"
                    if not cfg_path.exists():
                        raise ValueError(f"Failed to infer model format because no config.json exists in {model}")
                    arch = (json.loads(cfg_path.read_text()).get("architectures") or ["?"])[0]
                    known = fake.pytorch_architectures if flow == "pytorch" else fake.tensorrt_architectures
                    if backend in ("pytorch", "tensorrt") and arch not in known:
                        raise ValueError(f"Unknown architecture for AutoModelForCausalLM: {arch}")
                    if load_format == "auto" and not any(Path(str(model)).glob("*.safetensors")):
                        raise FileNotFoundError(f"no weights (*.safetensors) in {model}; use load_format='dummy'")
                    fake.calls.append(("LLM", dict(model=model, skip_tokenizer_init=skip_tokenizer_init, dtype=dtype,
                                                   tensor_parallel_size=tensor_parallel_size, backend=backend,
                                                   flow=flow, **kwargs)))
                    self.flow = flow
                    self.tokenizer = None if skip_tokenizer_init else object()
                    self.kv_cache_config = kv
                    build = kwargs.get("build_config") if flow == "tensorrt" else None
                    if build is not None and not isinstance(build, FakeBuildConfig):
                        raise ValueError("build_config: Input should be a valid BuildConfig")
                    self.max_batch_size = kwargs.get("max_batch_size") or (build.max_batch_size if build else 2048)
                    self.max_num_tokens = kwargs.get("max_num_tokens") or (build.max_num_tokens if build else 8192)
                    self.max_seq_len = kwargs.get("max_seq_len") or (build.max_seq_len if build else None)
                    self.chunked = kwargs.get("enable_chunked_prefill", False)
                    self.return_perf_metrics = kwargs.get("return_perf_metrics", False)
                    if flow == "pytorch":
                        graphs = kwargs.get("cuda_graph_config", FakeCudaGraphConfig())
                        if graphs is not None and not isinstance(graphs, FakeCudaGraphConfig):
                            raise ValueError("cuda_graph_config: Input should be a valid CudaGraphConfig")
                        self.graph_sizes = set(graphs.batch_sizes) if graphs else set()
                        self.graph_padding = bool(graphs and graphs.enable_padding)
                        self.overlap = not kwargs.get("disable_overlap_scheduler", False)
                        q = FakeExecutorRequestQueue(fake, self.max_batch_size, wait_ms)
                    else:  # the C++ runtime captures a graph per generation batch shape when cuda_graph_mode is on
                        knobs = kwargs.get("extended_runtime_perf_knob_config")
                        on = bool(knobs and knobs.cuda_graph_mode)
                        self.graph_sizes = set(range(1, self.max_batch_size + 1)) if on else set()
                        self.graph_padding = False
                        self.overlap = False
                        q = FakeCppRequestQueue(fake, self.max_batch_size, 0)
                    # executor/executor.py GenerationExecutor.create: more ranks than one spawn MPI workers
                    # (a proxy); one rank runs in this process only where the single-process switch is on
                    if fake.single_process_worker is None:
                        fake.single_process_worker = os.environ.get("TLLM_WORKER_USE_SINGLE_PROCESS", "0") == "1"
                    in_process = tensor_parallel_size == 1 and fake.single_process_worker
                    engine = FakePyExecutor(fake, self, q, in_process)
                    fake._executors.append(engine)
                    self._executor = (FakeGenerationExecutorWorker if in_process else FakeGenerationExecutorProxy)(engine)
                    self._queue = q
                    self._next = 0
                    self._futures: list[_Future] = []  # submitted and not yet answered
                    self._shutdown = False

                def _prepare(self, sp):
                    if sp is None:
                        sp = FakeSamplingParams()
                    if not isinstance(sp, FakeSamplingParams):
                        raise TypeError(f"The sampling_params must be type SamplingParams or None, but got {type(sp)}")
                    if sp.end_id is None and self.tokenizer is None:
                        raise ValueError("tokenizer is required to reset end_id if it is None, or you can explicitly "
                                         "specify the end_id for sampling_params")
                    sp.return_perf_metrics = sp.return_perf_metrics or self.return_perf_metrics
                    return sp

                def generate_async(self, inputs, sampling_params=None, lora_request=None, prompt_adapter_request=None,
                                   streaming=False, kv_cache_retention_config=None, disaggregated_params=None,
                                   scheduling_params=None, cache_salt=None):
                    if self._shutdown:
                        raise RuntimeError("LLM is shutting down")
                    sp = self._prepare(sampling_params)
                    prompt = list(inputs)
                    if not self.chunked and len(prompt) > self.max_num_tokens:
                        raise FakeRequestError(f"The sum of prompt length ({len(prompt)}), query length (0) should "
                                               f"not exceed max_num_tokens ({self.max_num_tokens})")
                    if self.max_seq_len and len(prompt) + sp.max_tokens > self.max_seq_len:
                        raise FakeRequestError(f"prompt {len(prompt)} + max_tokens {sp.max_tokens} exceeds "
                                               f"max_seq_len {self.max_seq_len}")
                    fake.calls.append(("generate_async", {"inputs": prompt, "sampling_params": sp}))
                    fake._count_prompt(self, prompt)
                    fut = _Future(self._next, prompt, sp)
                    self._next += 1
                    want = (max(0, sp.max_tokens - fake._short_by) if sp.ignore_eos
                            else max(1, (sp.max_tokens - fake._short_by) // 2))  # random weights hit EOS early
                    request = _FakeRequest(fut, want)
                    self._futures = [f for f in self._futures if not f.finished] + [fut]
                    if fake.ragged_calls > 0 and len(self._futures) == self.max_batch_size > 1:
                        fake.ragged_calls -= 1  # the batch's last request reaches the queue late
                        threading.Timer(fake.late_s, self._queue.enqueue_request, (request,)).start()
                    else:
                        self._queue.enqueue_request(request)
                    time.sleep(fake.submit_s)  # the rest of the API's submission path; the executor runs meanwhile
                    return fut

                def generate(self, inputs, sampling_params=None, use_tqdm=True, lora_request=None,
                             prompt_adapter_request=None, kv_cache_retention_config=None, disaggregated_params=None,
                             scheduling_params=None, cache_salt=None):
                    batched = isinstance(inputs, list) and inputs and not isinstance(inputs[0], int)
                    prompts = inputs if batched else [inputs]
                    fake.calls.append(("generate", {"inputs": prompts, "sampling_params": sampling_params,
                                                    "use_tqdm": use_tqdm}))
                    futures = [self.generate_async(p, sampling_params) for p in prompts]  # as llm.py does
                    outs = [f.result() for f in futures]
                    return outs if batched else outs[0]

                def shutdown(self):
                    fake.calls.append(("shutdown", {}))
                    if not self._shutdown:
                        self._executor.shutdown()
                    self._shutdown = True

            return LLM

        def factory(name, cls):
            def make(**kwargs):
                fake.calls.append((name, dict(kwargs)))
                return cls(**kwargs)
            return make

        self.LLM = llmapi.LLM = make_llm("pytorch")
        self.SamplingParams = llmapi.SamplingParams = factory("SamplingParams", FakeSamplingParams)
        llmapi.KvCacheConfig = factory("KvCacheConfig", FakeKvCacheConfig)
        llmapi.CudaGraphConfig = factory("CudaGraphConfig", FakeCudaGraphConfig)
        llmapi.BuildConfig = factory("BuildConfig", FakeBuildConfig)
        llmapi.ExtendedRuntimePerfKnobConfig = factory("ExtendedRuntimePerfKnobConfig", FakeExtendedRuntimePerfKnobConfig)
        self.llmapi = llmapi
        self.pytorch_architectures = frozenset(pytorch_architectures)
        self.tensorrt_architectures = frozenset(tensorrt_architectures)
        self._modules = {"tensorrt_llm": self, "tensorrt_llm.llmapi": llmapi}
        torch_pkg = types.ModuleType("tensorrt_llm._torch")
        torch_models = types.ModuleType("tensorrt_llm._torch.models")
        modeling_utils = types.ModuleType("tensorrt_llm._torch.models.modeling_utils")
        modeling_utils.MODEL_CLASS_MAPPING = {a: object for a in self.pytorch_architectures}
        self._modules.update({"tensorrt_llm._torch": torch_pkg, "tensorrt_llm._torch.models": torch_models,
                              "tensorrt_llm._torch.models.modeling_utils": modeling_utils})
        if tensorrt_flow:
            models = types.ModuleType("tensorrt_llm.models")
            models.MODEL_MAP = {a: object for a in self.tensorrt_architectures}
            engine = types.ModuleType("tensorrt_llm._tensorrt_engine")
            engine.LLM = make_llm("tensorrt")
            self._modules.update({"tensorrt_llm.models": models, "tensorrt_llm._tensorrt_engine": engine})
        if energy_monitor:
            em = types.ModuleType("tensorrt_llm.bench.benchmark.utils.energy_monitor")
            em.EnergyMonitor = FakeEnergyMonitor
            for name in ("tensorrt_llm.bench", "tensorrt_llm.bench.benchmark", "tensorrt_llm.bench.benchmark.utils"):
                self._modules[name] = types.ModuleType(name)
            self._modules["tensorrt_llm.bench.benchmark.utils.energy_monitor"] = em

    # -- what the executors share ---------------------------------------------------------------------
    def _count_prompt(self, llm, prompt: list) -> None:
        key = tuple(prompt)
        self.repeated_prompts += key in self._seen_prompts
        self._seen_prompts.add(key)
        self.prompts_sent += 1
        for b in range(len(key) // TOKENS_PER_BLOCK):
            block = key[: (b + 1) * TOKENS_PER_BLOCK]  # a block is keyed by its whole prefix
            if llm.kv_cache_config.enable_block_reuse:
                self.reused_blocks += block in self._cached_blocks
                self._cached_blocks.add(block)

    def cuda_synchronize(self, device=None) -> None:
        """``torch.cuda.synchronize()`` in the test's process: waits for the steps of in-process executors."""
        wait = self.in_process_busy_until - time.monotonic()
        if wait > 0:
            time.sleep(wait)

    def decode_queue_waits(self, min_s: float = 0.001) -> list[float]:
        """Seconds of each fetch that waited at least ``min_s`` while requests were active (a decode step's wait)."""
        return [f.waited_s for f in self.fetches if not f.idle and f.waited_s >= min_s]

    def ragged_batches(self) -> int:
        """Iterations that prefilled some requests while others of the same submission were decoding."""
        return sum(1 for i in self.iterations if i.context_requests and i.generation_requests)

    def ungraphed_decode_steps(self) -> int:
        """Iterations with generation requests that ran without a CUDA graph (the in-flight step aside)."""
        return sum(1 for i in self.iterations if i.generation_requests and not i.graphed and not i.in_flight)

    def install(self, monkeypatch) -> "FakeTensorRTLLM":
        """Put this fake in ``sys.modules`` (``tensorrt_llm`` and the submodules the kit imports), point
        ``torch.cuda.synchronize`` at :meth:`cuda_synchronize` (undone when the test ends)."""
        for name, module in self._modules.items():
            monkeypatch.setitem(sys.modules, name, module)
        monkeypatch.delenv("TLLM_WORKER_USE_SINGLE_PROCESS", raising=False)  # restored when the test ends
        try:
            import torch
        except ImportError:
            torch = types.ModuleType("torch")
            torch.cuda = types.SimpleNamespace()
            monkeypatch.setitem(sys.modules, "torch", torch)
        monkeypatch.setattr(torch.cuda, "is_available", lambda: True, raising=False)
        monkeypatch.setattr(torch.cuda, "synchronize", self.cuda_synchronize, raising=False)
        return self

    def stop(self) -> None:
        """Stop every executor loop still running (an LLM the test did not shut down)."""
        for ex in self._executors:
            if ex.executor_request_queue.active:
                ex.shutdown()
