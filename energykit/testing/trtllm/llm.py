"""TensorRT-LLM's ``LLM`` faked, for both flows: the arguments it accepts and rejects, its sizes, its executor.

``tensorrt_llm.LLM`` (``llmapi/llm.py``, the PyTorch flow) and ``tensorrt_llm._tensorrt_engine.LLM`` (the
TensorRT engine-build flow) as 1.2's source has them (commits and what each file says:
:mod:`energykit.testing.trtllm.args`): ``BaseLLM.__init__`` rejects any keyword that is not a field of
the flow's args class; ``_TorchLLM`` pops ``backend`` and rejects TensorRT-only fields; ``generate()`` calls
``generate_async()`` once per prompt, then waits for each; ``_prepare_sampling_params`` and
``_check_arguments`` refuse what upstream refuses.
"""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path

from .args import (TRTLLM_MAIN_ONLY_ARGS, TRTLLM_TENSORRT_ONLY_ARGS, TRTLLM_TORCH_ARGS, TRTLLM_TRT_ARGS,
                   FakeBuildConfig, FakeCudaGraphConfig, FakeKvCacheConfig, FakeRequestError, FakeSamplingParams)
from .executor import (FakeCppRequestQueue, FakeExecutorRequestQueue, FakeGenerationExecutorProxy,
                       FakeGenerationExecutorWorker, FakePyExecutor, _FakeRequest, _Future)

__all__ = ["FakeLLM", "make_llm"]


def make_llm(fake, flow: str) -> type:
    """The ``LLM`` class of one flow (``"pytorch"`` or ``"tensorrt"``) of the stand-in ``fake``."""
    allowed = TRTLLM_TORCH_ARGS | (TRTLLM_MAIN_ONLY_ARGS if fake.main_args else frozenset())
    return type("LLM", (FakeLLM,), {"_fake": fake, "_flow": flow, "_allowed": allowed})


def _check_arguments(flow: str, kwargs: dict, allowed: frozenset) -> str:
    """The backend, after refusing keywords the flow's args class lacks (``BaseLLM.__init__``, ``_TorchLLM``)."""
    if flow != "pytorch":
        for key in kwargs:
            if key not in TRTLLM_TRT_ARGS:
                raise ValueError(f"LLM got invalid argument: {key}")
        return "tensorrt"
    backend = kwargs.pop("backend", "pytorch")
    trt_only = sorted(k for k in kwargs if k in TRTLLM_TENSORRT_ONLY_ARGS)
    if trt_only:
        raise ValueError(f"The following arguments are specific to TensorRT backend and cannot "
                         f"be used with PyTorch backend: {trt_only}.")
    for key in kwargs:
        if key not in allowed:
            raise ValueError(f"LLM got invalid argument: {key}")
    if backend not in ("pytorch", "_autodeploy"):
        raise ValueError(f"Invalid backend {backend!r}: tensorrt_llm.LLM runs 'pytorch' or '_autodeploy'")
    return backend


def _check_values(kwargs: dict) -> tuple:
    """``(kv_cache_config, batch_wait_timeout_ms)`` after the field validators of ``llm_args.py``."""
    load_format = kwargs.get("load_format", "auto")
    if load_format not in ("auto", "dummy"):
        raise ValueError(f"load_format: Input should be 'auto' or 'dummy' (got {load_format!r})")
    kv = kwargs.get("kv_cache_config", FakeKvCacheConfig())
    if not isinstance(kv, FakeKvCacheConfig):
        raise ValueError("kv_cache_config: Input should be a valid KvCacheConfig")
    wait_ms = kwargs.get("batch_wait_timeout_ms", 0) or 0
    if wait_ms < 0:
        raise ValueError("batch_wait_timeout_ms must be greater than or equal to 0")
    return kv, wait_ms


def _check_model(fake, flow: str, backend: str, model, kwargs: dict) -> None:
    """Refuse a folder without ``config.json``, an architecture the backend does not register, missing weights."""
    cfg_path = Path(str(model)) / "config.json"
    if not cfg_path.exists():
        raise ValueError(f"Failed to infer model format because no config.json exists in {model}")
    arch = (json.loads(cfg_path.read_text()).get("architectures") or ["?"])[0]
    known = fake.pytorch_architectures if flow == "pytorch" else fake.tensorrt_architectures
    if backend in ("pytorch", "tensorrt") and arch not in known:
        raise ValueError(f"Unknown architecture for AutoModelForCausalLM: {arch}")
    if kwargs.get("load_format", "auto") == "auto" and not any(Path(str(model)).glob("*.safetensors")):
        raise FileNotFoundError(f"no weights (*.safetensors) in {model}; use load_format='dummy'")


class FakeLLM:
    """Base of the stand-in's ``LLM`` classes (:func:`make_llm` binds the stand-in and the flow)."""

    _fake = None
    _flow = "pytorch"
    _allowed: frozenset = frozenset()

    def __init__(self, model, tokenizer=None, tokenizer_mode="auto", skip_tokenizer_init=False,
                 trust_remote_code=False, tensor_parallel_size=1, dtype="auto", revision=None,
                 tokenizer_revision=None, **kwargs):
        fake, flow = self._fake, self._flow
        backend = _check_arguments(flow, kwargs, self._allowed)
        kv, wait_ms = _check_values(kwargs)
        _check_model(fake, flow, backend, model, kwargs)
        fake.calls.append(("LLM", dict(model=model, skip_tokenizer_init=skip_tokenizer_init, dtype=dtype,
                                       tensor_parallel_size=tensor_parallel_size, backend=backend,
                                       flow=flow, **kwargs)))
        self.flow = flow
        self.tokenizer = None if skip_tokenizer_init else object()
        self.kv_cache_config = kv
        self._size(kwargs)
        self._start_executor(self._graphs_and_queue(kwargs, wait_ms), tensor_parallel_size)

    def _size(self, kwargs: dict) -> None:
        build = kwargs.get("build_config") if self.flow == "tensorrt" else None
        if build is not None and not isinstance(build, FakeBuildConfig):
            raise ValueError("build_config: Input should be a valid BuildConfig")
        self.max_batch_size = kwargs.get("max_batch_size") or (build.max_batch_size if build else 2048)
        self.max_num_tokens = kwargs.get("max_num_tokens") or (build.max_num_tokens if build else 8192)
        self.max_seq_len = kwargs.get("max_seq_len") or (build.max_seq_len if build else None)
        self.chunked = kwargs.get("enable_chunked_prefill", False)
        self.return_perf_metrics = kwargs.get("return_perf_metrics", False)

    def _graphs_and_queue(self, kwargs: dict, wait_ms: float):
        """The captured CUDA graph sizes, the overlap scheduler and the flow's request queue."""
        if self.flow == "pytorch":
            graphs = kwargs.get("cuda_graph_config", FakeCudaGraphConfig())
            if graphs is not None and not isinstance(graphs, FakeCudaGraphConfig):
                raise ValueError("cuda_graph_config: Input should be a valid CudaGraphConfig")
            self.graph_sizes = set(graphs.batch_sizes) if graphs else set()
            self.graph_padding = bool(graphs and graphs.enable_padding)
            self.overlap = not kwargs.get("disable_overlap_scheduler", False)
            return FakeExecutorRequestQueue(self._fake, self.max_batch_size, wait_ms)
        # the C++ runtime captures a graph per generation batch shape when cuda_graph_mode is on
        knobs = kwargs.get("extended_runtime_perf_knob_config")
        on = bool(knobs and knobs.cuda_graph_mode)
        self.graph_sizes = set(range(1, self.max_batch_size + 1)) if on else set()
        self.graph_padding = False
        self.overlap = False
        return FakeCppRequestQueue(self._fake, self.max_batch_size, 0)

    def _start_executor(self, q, tensor_parallel_size: int) -> None:
        # executor/executor.py GenerationExecutor.create: more ranks than one spawn MPI workers
        # (a proxy); one rank runs in this process only where the single-process switch is on
        fake = self._fake
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
        self._fake.calls.append(("generate_async", {"inputs": prompt, "sampling_params": sp}))
        self._fake._count_prompt(self, prompt)
        fut = _Future(self._next, prompt, sp)
        self._next += 1
        want = (max(0, sp.max_tokens - self._fake._short_by) if sp.ignore_eos
                else max(1, (sp.max_tokens - self._fake._short_by) // 2))  # random weights hit EOS early
        request = _FakeRequest(fut, want)
        self._futures = [f for f in self._futures if not f.finished] + [fut]
        if self._fake.ragged_calls > 0 and len(self._futures) == self.max_batch_size > 1:
            self._fake.ragged_calls -= 1  # the batch's last request reaches the queue late
            threading.Timer(self._fake.late_s, self._queue.enqueue_request, (request,)).start()
        else:
            self._queue.enqueue_request(request)
        time.sleep(self._fake.submit_s)  # the rest of the API's submission path; the executor runs meanwhile
        return fut

    def generate(self, inputs, sampling_params=None, use_tqdm=True, lora_request=None,
                 prompt_adapter_request=None, kv_cache_retention_config=None, disaggregated_params=None,
                 scheduling_params=None, cache_salt=None):
        batched = isinstance(inputs, list) and inputs and not isinstance(inputs[0], int)
        prompts = inputs if batched else [inputs]
        self._fake.calls.append(("generate", {"inputs": prompts, "sampling_params": sampling_params,
                                        "use_tqdm": use_tqdm}))
        futures = [self.generate_async(p, sampling_params) for p in prompts]  # as llm.py does
        outs = [f.result() for f in futures]
        return outs if batched else outs[0]

    def shutdown(self):
        self._fake.calls.append(("shutdown", {}))
        if not self._shutdown:
            self._executor.shutdown()
        self._shutdown = True
