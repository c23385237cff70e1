"""Fakes of the hardware libraries, for tests without a GPU: one module per faked library.

Nothing in the package imports this (``tests/test_architecture.py`` checks it): users' tests do,
``from energykit.testing import FakeNvml, FakeTensorRTLLM``.

- :class:`FakeNvml` (:mod:`energykit.testing.nvml`): the subset of ``pynvml`` (nvidia-ml-py) that :mod:`energykit.meters` calls,
  driven by a clock: an energy counter that advances in steps of ``counter_period_s`` at a constant
  power, optionally missing, optionally going down; or no GPU at all. :func:`fake_api_names` lists
  what it fakes, so a test can check each name exists in the real module.
- :class:`FakeTensorRTLLM` (:mod:`energykit.testing.trtllm`): a stand-in ``tensorrt_llm`` module written from TensorRT-LLM's source
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

from .nvml import (FakeNVMLError, FakeNVMLErrorInvalidArgument, FakeNVMLErrorNoPermission, FakeNVMLErrorNotSupported,
                   FakeNvml, fake_api_names)
from .trtllm import (TOKENS_PER_BLOCK, TRTLLM_BASE_ARGS, TRTLLM_MAIN_ONLY_ARGS, TRTLLM_PYTORCH_ARCHITECTURES,
                     TRTLLM_TENSORRT_ARCHITECTURES, TRTLLM_TENSORRT_ONLY_ARGS, TRTLLM_TORCH_ARGS, TRTLLM_TRT_ARGS,
                     FakeBuildConfig, FakeCudaGraphConfig, FakeEnergyMonitor, FakeExtendedRuntimePerfKnobConfig,
                     FakeIteration, FakeKvCacheConfig, FakeRequestError, FakeSamplingParams, FakeTensorRTLLM,
                     cuda_graph_batch_sizes)
from .trtllm import (SHUTDOWN_REQUEST_ID, FakeCppRequestQueue, FakeExecutorRequestQueue, FakeFetch,
                     FakeGenerationExecutorProxy, FakeGenerationExecutorWorker, FakePyExecutor, FakeRequestQueueItem)

__all__ = ["FakeNVMLError", "FakeNVMLErrorNotSupported", "FakeNVMLErrorNoPermission", "FakeNVMLErrorInvalidArgument",
           "FakeNvml", "fake_api_names", "TRTLLM_BASE_ARGS",
           "TRTLLM_TORCH_ARGS", "TRTLLM_TENSORRT_ONLY_ARGS", "TRTLLM_TRT_ARGS", "TRTLLM_MAIN_ONLY_ARGS",
           "TRTLLM_PYTORCH_ARCHITECTURES", "TRTLLM_TENSORRT_ARCHITECTURES", "TOKENS_PER_BLOCK",
           "cuda_graph_batch_sizes", "FakeSamplingParams", "FakeKvCacheConfig", "FakeCudaGraphConfig",
           "FakeExtendedRuntimePerfKnobConfig", "FakeBuildConfig", "FakeRequestError", "FakeEnergyMonitor",
           "FakeIteration", "FakeTensorRTLLM", "SHUTDOWN_REQUEST_ID", "FakeCppRequestQueue",
           "FakeExecutorRequestQueue", "FakeFetch", "FakeGenerationExecutorProxy", "FakeGenerationExecutorWorker",
           "FakePyExecutor", "FakeRequestQueueItem"]
