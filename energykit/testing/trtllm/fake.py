"""The ``tensorrt_llm`` stand-in: one module object holding the faked API, the counters a test reads, ``install``.

Its contract, upstream files and commits: :mod:`energykit.testing.trtllm.args`; the ``LLM`` classes:
:mod:`energykit.testing.trtllm.llm`; the executor they start: :mod:`energykit.testing.trtllm.executor`.
"""

from __future__ import annotations

import sys
import time
import types

from .args import (TOKENS_PER_BLOCK, TRTLLM_PYTORCH_ARCHITECTURES, TRTLLM_TENSORRT_ARCHITECTURES, FakeBuildConfig,
                   FakeCudaGraphConfig, FakeExtendedRuntimePerfKnobConfig, FakeKvCacheConfig, FakeSamplingParams)
from .executor import FakeEnergyMonitor, FakeFetch, FakeIteration
from .llm import make_llm

__all__ = ["FakeTensorRTLLM"]


def _factory(fake, name: str, cls):
    """A constructor of ``cls`` that records the call in ``fake.calls``."""
    def make(**kwargs):
        fake.calls.append((name, dict(kwargs)))
        return cls(**kwargs)
    return make


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
        self.pytorch_architectures = frozenset(pytorch_architectures)
        self.tensorrt_architectures = frozenset(tensorrt_architectures)
        self._build_llmapi()
        self._build_modules(tensorrt_flow, energy_monitor)

    def _build_llmapi(self) -> None:
        """``tensorrt_llm.LLM``/``SamplingParams`` and the ``tensorrt_llm.llmapi`` module (``llmapi/__init__.py``)."""
        llmapi = types.ModuleType("tensorrt_llm.llmapi")
        self.LLM = llmapi.LLM = make_llm(self, "pytorch")
        self.SamplingParams = llmapi.SamplingParams = _factory(self, "SamplingParams", FakeSamplingParams)
        llmapi.KvCacheConfig = _factory(self, "KvCacheConfig", FakeKvCacheConfig)
        llmapi.CudaGraphConfig = _factory(self, "CudaGraphConfig", FakeCudaGraphConfig)
        llmapi.BuildConfig = _factory(self, "BuildConfig", FakeBuildConfig)
        llmapi.ExtendedRuntimePerfKnobConfig = _factory(self, "ExtendedRuntimePerfKnobConfig",
                                                        FakeExtendedRuntimePerfKnobConfig)
        self.llmapi = llmapi

    def _build_modules(self, tensorrt_flow: bool, energy_monitor: bool) -> None:
        """The submodules the kit imports: the backends' registries, the TensorRT flow, the bench's monitor."""
        self._modules = {"tensorrt_llm": self, "tensorrt_llm.llmapi": self.llmapi}
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
            engine.LLM = make_llm(self, "tensorrt")
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
