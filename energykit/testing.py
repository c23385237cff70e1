"""Fakes of the hardware libraries, for tests without a GPU.

- :class:`FakeNvml`: the subset of ``pynvml`` (nvidia-ml-py) that :mod:`energykit.meters` calls,
  driven by a clock: an energy counter that advances in steps of ``counter_period_s`` at a constant
  power, optionally missing, optionally going down; or no GPU at all. :func:`fake_api_names` lists
  what it fakes, so a test can check each name exists in the real module.
- :class:`FakeTensorRTLLM`: a stand-in ``tensorrt_llm`` module written from TensorRT-LLM 1.2's
  source. It accepts exactly the arguments the real ``LLM``, ``SamplingParams`` and
  ``KvCacheConfig`` accept, raises where the real ones raise (a missing ``end_id`` without a
  tokenizer, an unknown argument, an architecture the PyTorch backend lacks, a prompt longer than
  ``max_num_tokens``), reuses KV blocks of repeated prompts unless told not to, and counts what a
  measurement must avoid: reused prefix blocks, repeated prompts and prefills split across
  iterations.
"""

from __future__ import annotations

import json
import sys
import time
import types
from dataclasses import dataclass
from pathlib import Path

__all__ = ["FakeNVMLError", "FakeNVMLErrorNotSupported", "FakeNvml", "fake_api_names", "TRTLLM_BASE_ARGS",
           "TRTLLM_TORCH_ARGS", "TRTLLM_TENSORRT_ONLY_ARGS", "TRTLLM_PYTORCH_ARCHITECTURES",
           "TOKENS_PER_BLOCK", "FakeSamplingParams", "FakeKvCacheConfig", "FakeRequestError",
           "FakeTensorRTLLM"]


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
# TensorRT-LLM 1.2, as read from NVIDIA/TensorRT-LLM's public source:
#   tensorrt_llm/llmapi/llm.py       BaseLLM.__init__ rejects any kwarg that is not a field of the args
#                                    class ("LLM got invalid argument: KEY"); _TorchLLM pops backend
#                                    (default "pytorch") and rejects TensorRT-only fields;
#                                    _prepare_sampling_params raises "tokenizer is required to reset end_id"
#                                    when end_id is None and there is no tokenizer, and ORs in
#                                    LLM(return_perf_metrics=...); _check_arguments (pytorch backend, no
#                                    chunked prefill) refuses a prompt longer than max_num_tokens.
#   tensorrt_llm/llmapi/llm_args.py  BaseLlmArgs/TorchLlmArgs fields (extra="forbid"): max_num_tokens
#                                    default 8192, enable_chunked_prefill False, load_format 'auto'|'dummy',
#                                    return_perf_metrics; KvCacheConfig (StrictBaseModel) with
#                                    enable_block_reuse default True.
#   tensorrt_llm/sampling_params.py  SamplingParams: dataclass(slots=True, kw_only=True); unknown keyword
#                                    -> TypeError; pad_id defaults to end_id.
#   tensorrt_llm/llmapi/__init__.py  KvCacheConfig, SamplingParams, LLM are exported from tensorrt_llm.llmapi.
#   tensorrt_llm/_torch/models/__init__.py   the architectures of the PyTorch backend (no OPT, no Falcon).

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
connector_config
""".split())
TRTLLM_TENSORRT_ONLY_ARGS = frozenset("""
auto_parallel auto_parallel_world_size enable_tqdm workspace enable_build_cache
extended_runtime_perf_knob_config calib_config quant_config embedding_parallel_mode fast_build
enable_prompt_adapter max_prompt_adapter_token batching_type normalize_log_probs
""".split())
TRTLLM_PYTORCH_ARCHITECTURES = frozenset({
    "LlamaForCausalLM", "MistralForCausalLM", "MixtralForCausalLM", "Qwen2ForCausalLM", "Qwen3ForCausalLM",
    "Qwen3MoeForCausalLM", "Qwen2MoeForCausalLM", "Gemma3ForCausalLM", "DeepseekV3ForCausalLM",
    "NemotronForCausalLM", "Exaone4ForCausalLM",
})
TOKENS_PER_BLOCK = 32
"""KV cache block of the paged cache [tokens] (TensorRT-LLM's default ``tokens_per_block``)."""


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


class FakeKvCacheConfig:
    """``tensorrt_llm.llmapi.KvCacheConfig`` (a strict pydantic model): unknown fields raise."""

    FIELDS = {"enable_block_reuse": True, "max_tokens": None, "max_attention_window": None,
              "sink_token_length": None, "free_gpu_memory_fraction": None, "host_cache_size": None,
              "onboard_blocks": True, "cross_kv_cache_fraction": None, "secondary_offload_min_priority": None,
              "event_buffer_max_size": 0, "enable_partial_reuse": True, "copy_on_partial_reuse": True,
              "use_uvm": False, "dtype": "auto"}

    def __init__(self, **kwargs):
        extra = sorted(set(kwargs) - set(self.FIELDS))
        if extra:
            raise ValueError(f"1 validation error for KvCacheConfig\n{extra[0]}\n  Extra inputs are not permitted")
        for k, v in {**self.FIELDS, **kwargs}.items():
            setattr(self, k, v)


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


class FakeTensorRTLLM(types.ModuleType):
    """A ``tensorrt_llm`` stand-in on the 1.2 contract (see the source notes above); records calls.

    Install with :meth:`install` (``tensorrt_llm`` and ``tensorrt_llm.llmapi``). Counters a test reads:
    ``reused_blocks`` (prompt KV blocks served from the cache instead of prefilled),
    ``repeated_prompts`` (prompts identical to one sent before), ``split_prefills`` (``generate()``
    calls whose prompts exceed ``max_num_tokens`` and run their prefill over several iterations).
    ``short_by`` makes every request return that many tokens fewer than asked.
    """

    def __init__(self, short_by=0, version="1.2.0"):
        super().__init__("tensorrt_llm")
        self.__version__ = version
        self.calls: list[tuple] = []
        self.reused_blocks = 0
        self.repeated_prompts = 0
        self.split_prefills = 0
        self.prompts_sent = 0
        self._seen_prompts: set = set()
        self._cached_blocks: set = set()
        fake = self
        llmapi = types.ModuleType("tensorrt_llm.llmapi")

        class LLM:
            def __init__(self, model, tokenizer=None, tokenizer_mode="auto", skip_tokenizer_init=False,
                         trust_remote_code=False, tensor_parallel_size=1, dtype="auto", revision=None,
                         tokenizer_revision=None, **kwargs):
                backend = kwargs.pop("backend", "pytorch")
                trt_only = sorted(k for k in kwargs if k in TRTLLM_TENSORRT_ONLY_ARGS)
                if trt_only:
                    raise ValueError(f"The following arguments are specific to TensorRT backend and cannot be used "
                                     f"with PyTorch backend: {trt_only}.")
                for key in kwargs:
                    if key not in TRTLLM_TORCH_ARGS:
                        raise ValueError(f"LLM got invalid argument: {key}")
                if backend not in ("pytorch", "_autodeploy"):
                    raise ValueError(f"Invalid backend {backend!r}: tensorrt_llm.LLM runs 'pytorch' or '_autodeploy'")
                load_format = kwargs.get("load_format", "auto")
                if load_format not in ("auto", "dummy"):
                    raise ValueError(f"load_format: Input should be 'auto' or 'dummy' (got {load_format!r})")
                kv = kwargs.get("kv_cache_config", FakeKvCacheConfig())
                if not isinstance(kv, FakeKvCacheConfig):
                    raise ValueError("kv_cache_config: Input should be a valid KvCacheConfig")
                cfg_path = Path(str(model)) / "config.json"
                if not cfg_path.exists():
                    raise ValueError(f"Failed to infer model format because no config.json exists in {model}")
                arch = (json.loads(cfg_path.read_text()).get("architectures") or ["?"])[0]
                if backend == "pytorch" and arch not in TRTLLM_PYTORCH_ARCHITECTURES:
                    raise ValueError(f"Unknown architecture for AutoModelForCausalLM: {arch}")
                if load_format == "auto" and not any(Path(str(model)).glob("*.safetensors")):
                    raise FileNotFoundError(f"no weights (*.safetensors) in {model}; use load_format='dummy'")
                fake.calls.append(("LLM", dict(model=model, skip_tokenizer_init=skip_tokenizer_init, dtype=dtype,
                                               tensor_parallel_size=tensor_parallel_size, backend=backend, **kwargs)))
                self.tokenizer = None if skip_tokenizer_init else object()
                self.kv_cache_config = kv
                self.max_num_tokens = kwargs.get("max_num_tokens", 8192)
                self.max_seq_len = kwargs.get("max_seq_len")
                self.chunked = kwargs.get("enable_chunked_prefill", False)
                self.return_perf_metrics = kwargs.get("return_perf_metrics", False)
                self._next = 0
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

            def generate(self, inputs, sampling_params=None, use_tqdm=True, lora_request=None,
                         prompt_adapter_request=None, kv_cache_retention_config=None, disaggregated_params=None,
                         scheduling_params=None, cache_salt=None):
                if self._shutdown:
                    raise RuntimeError("LLM is shutting down")
                batched = isinstance(inputs, list) and inputs and not isinstance(inputs[0], int)
                prompts = inputs if batched else [inputs]
                fake.calls.append(("generate", {"inputs": prompts, "sampling_params": sampling_params,
                                                "use_tqdm": use_tqdm}))
                if not self.chunked and sum(len(p) for p in prompts) > self.max_num_tokens:
                    fake.split_prefills += 1
                outs = []
                for prompt in prompts:
                    sp = self._prepare(sampling_params)
                    if not self.chunked and len(prompt) > self.max_num_tokens:
                        raise FakeRequestError(f"The sum of prompt length ({len(prompt)}), query length (0) should "
                                               f"not exceed max_num_tokens ({self.max_num_tokens})")
                    if self.max_seq_len and len(prompt) + sp.max_tokens > self.max_seq_len:
                        raise FakeRequestError(f"prompt {len(prompt)} + max_tokens {sp.max_tokens} exceeds "
                                               f"max_seq_len {self.max_seq_len}")
                    key = tuple(prompt)
                    fake.repeated_prompts += key in fake._seen_prompts
                    fake._seen_prompts.add(key)
                    fake.prompts_sent += 1
                    for b in range(len(prompt) // TOKENS_PER_BLOCK):
                        block = tuple(prompt[: (b + 1) * TOKENS_PER_BLOCK])  # a block is keyed by its whole prefix
                        if self.kv_cache_config.enable_block_reuse:
                            fake.reused_blocks += block in fake._cached_blocks
                            fake._cached_blocks.add(block)
                    n = sp.max_tokens - short_by
                    if not sp.ignore_eos:
                        n = max(1, n // 2)  # random weights hit end_id early unless EOS is ignored
                    metrics = None
                    if sp.return_perf_metrics:
                        timing = types.SimpleNamespace(arrival_time=1.0, first_token_time=1.05,
                                                       first_scheduled_time=1.0, last_token_time=2.0)
                        metrics = types.SimpleNamespace(timing_metrics=timing)
                    outs.append(_RequestOutput(self._next, list(prompt), [_Completion([7] * n, metrics)]))
                    self._next += 1
                return outs if batched else outs[0]

            def shutdown(self):
                fake.calls.append(("shutdown", {}))
                self._shutdown = True

        def sampling_params(**kwargs):
            fake.calls.append(("SamplingParams", dict(kwargs)))
            return FakeSamplingParams(**kwargs)

        def kv_cache_config(**kwargs):
            fake.calls.append(("KvCacheConfig", dict(kwargs)))
            return FakeKvCacheConfig(**kwargs)

        self.LLM = llmapi.LLM = LLM
        self.SamplingParams = llmapi.SamplingParams = sampling_params
        llmapi.KvCacheConfig = kv_cache_config
        self.llmapi = llmapi

    def install(self, monkeypatch) -> "FakeTensorRTLLM":
        """Put this fake in ``sys.modules`` as ``tensorrt_llm`` and ``tensorrt_llm.llmapi``."""
        monkeypatch.setitem(sys.modules, "tensorrt_llm", self)
        monkeypatch.setitem(sys.modules, "tensorrt_llm.llmapi", self.llmapi)
        return self
