"""TensorRT-LLM's executor, faked: the request queue consulted every iteration, the executor loop, its workers.

Written from ``tensorrt_llm/_torch/pyexecutor/executor_request_queue.py``, ``py_executor.py``,
``cuda_graph_runner.py``, ``executor/executor.py``, ``executor/result.py``, the C++ queue of
``cpp/tensorrt_llm/executor/executorImpl.cpp`` and the bench's ``energy_monitor.py`` (commits and what each
says: :mod:`energykit.testing.trtllm.args`). Steps run on one simulated GPU in real time.
"""

from __future__ import annotations

import datetime
import os
import queue
import threading
import time
import types
from collections import deque
from dataclasses import dataclass, field

__all__ = ["FakeEnergyMonitor", "FakeIteration", "FakeFetch", "SHUTDOWN_REQUEST_ID", "FakeRequestQueueItem",
           "FakeExecutorRequestQueue", "FakeCppRequestQueue", "FakePyExecutor", "FakeGenerationExecutorWorker",
           "FakeGenerationExecutorProxy"]


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
