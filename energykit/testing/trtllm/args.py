"""TensorRT-LLM 1.2's arguments, configs and sampling parameters, as its source declares them (the fake's contract).

The names of the ``LLM`` arguments of each flow, the architectures each backend registers, the strict
config models (``KvCacheConfig``, ``CudaGraphConfig``, ``ExtendedRuntimePerfKnobConfig``, ``BuildConfig``)
and ``SamplingParams``: each rejects what the real one rejects. Upstream files and commits below.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

__all__ = ["TRTLLM_BASE_ARGS", "TRTLLM_TORCH_ARGS", "TRTLLM_TENSORRT_ONLY_ARGS", "TRTLLM_TRT_ARGS",
           "TRTLLM_MAIN_ONLY_ARGS", "TRTLLM_PYTORCH_ARCHITECTURES", "TRTLLM_TENSORRT_ARCHITECTURES",
           "TOKENS_PER_BLOCK", "cuda_graph_batch_sizes", "FakeSamplingParams", "FakeKvCacheConfig",
           "FakeCudaGraphConfig", "FakeExtendedRuntimePerfKnobConfig", "FakeBuildConfig", "FakeRequestError"]

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
