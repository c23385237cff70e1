"""A ``tensorrt_llm`` stand-in written from TensorRT-LLM 1.2's source (a few fields of the stored main snapshot, marked).

- :mod:`~energykit.testing.trtllm.args`: the arguments, configs and sampling parameters, with every upstream
  file and commit the fake was read from;
- :mod:`~energykit.testing.trtllm.executor`: the request queue, the executor loop and its workers;
- :mod:`~energykit.testing.trtllm.llm`: the ``LLM`` classes of both flows;
- :mod:`~energykit.testing.trtllm.fake`: :class:`FakeTensorRTLLM`, the module object a test installs.
"""

from __future__ import annotations

from .args import (TOKENS_PER_BLOCK, TRTLLM_BASE_ARGS, TRTLLM_MAIN_ONLY_ARGS, TRTLLM_PYTORCH_ARCHITECTURES,
                   TRTLLM_TENSORRT_ARCHITECTURES, TRTLLM_TENSORRT_ONLY_ARGS, TRTLLM_TORCH_ARGS, TRTLLM_TRT_ARGS,
                   FakeBuildConfig, FakeCudaGraphConfig, FakeExtendedRuntimePerfKnobConfig, FakeKvCacheConfig,
                   FakeRequestError, FakeSamplingParams, cuda_graph_batch_sizes)
from .executor import (SHUTDOWN_REQUEST_ID, FakeCppRequestQueue, FakeEnergyMonitor, FakeExecutorRequestQueue,
                       FakeFetch, FakeGenerationExecutorProxy, FakeGenerationExecutorWorker, FakeIteration,
                       FakePyExecutor, FakeRequestQueueItem)
from .fake import FakeTensorRTLLM
from .llm import FakeLLM, make_llm

__all__ = ["TOKENS_PER_BLOCK", "TRTLLM_BASE_ARGS", "TRTLLM_MAIN_ONLY_ARGS", "TRTLLM_PYTORCH_ARCHITECTURES",
           "TRTLLM_TENSORRT_ARCHITECTURES", "TRTLLM_TENSORRT_ONLY_ARGS", "TRTLLM_TORCH_ARGS", "TRTLLM_TRT_ARGS",
           "FakeBuildConfig", "FakeCudaGraphConfig", "FakeExtendedRuntimePerfKnobConfig", "FakeKvCacheConfig",
           "FakeRequestError", "FakeSamplingParams", "cuda_graph_batch_sizes", "SHUTDOWN_REQUEST_ID",
           "FakeCppRequestQueue", "FakeEnergyMonitor", "FakeExecutorRequestQueue", "FakeFetch",
           "FakeGenerationExecutorProxy", "FakeGenerationExecutorWorker", "FakeIteration", "FakePyExecutor",
           "FakeRequestQueueItem", "FakeTensorRTLLM", "FakeLLM", "make_llm"]
