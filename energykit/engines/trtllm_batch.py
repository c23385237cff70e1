"""Whole batches from TensorRT-LLM's in-process PyTorch executor: the fetch wrapper that admits a batch's B
requests in one iteration (:class:`WholeBatchFetch`), and the check of each call's perf metrics
(:func:`batch_check`) that fails a ragged batch.

Written against TensorRT-LLM 1.2's ``tensorrt_llm/_torch/pyexecutor/executor_request_queue.py``
(``_fetch_and_process_requests`` → ``_get_from_request_queue``); the stand-in
:class:`energykit.testing.FakeTensorRTLLM` cites the files. The engine that uses them is
:class:`energykit.engines.trtllm.TrtLlmEngine`.
"""

from __future__ import annotations

import queue
import time

from ..errors import EngineError

__all__ = ["BATCH_WAIT_MS", "ADMIT_WAIT_S", "QUEUE_WAIT_S", "PROTOCOL", "WholeBatchFetch", "batch_check"]

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

PROTOCOL = ("one in-process executor per batch size (no batch wait; idle fetch waits for B; CUDA graphs at B), "
            "batch and queue waits checked per call, CUDA synchronised")
"""How the engine runs a window; in the fingerprint, so that a folder measured otherwise is not resumed."""


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
        """While true, an idle fetch returns what upstream returns (the engine's primer request, ``TrtLlmEngine._prime``)."""
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
