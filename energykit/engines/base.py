"""Interface of an engine: :class:`Engine`, :class:`Request` (fresh prompts per call) and :class:`Generation`."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable

from ..errors import EngineError

__all__ = ["ENGINES", "Generation", "Request", "Engine"]

ENGINES = ("hf", "trtllm")


@dataclass
class Generation:
    """Result of one batch of requests."""

    output_tokens: int
    """New tokens per sequence (verified equal for every sequence)."""
    ttft_s: float = float("nan")
    """Mean time to first token [s], where the engine reports it."""
    extra: dict = field(default_factory=dict)
    """Scalars the engine records with the window (e.g. trtllm: ``ttft_spread_s``, ``decode_graphed``)."""


class Request:
    """One cell's batch of requests, with fresh prompt token ids for every call.

    Parameters
    ----------
    make_prompts : callable
        Returns one batch of new random prompts (called by :meth:`prepare`, never inside a window).
    run : callable
        Runs one batch of prompts and returns a :class:`Generation`.
    """

    def __init__(self, make_prompts: Callable[[], Any], run: Callable[[Any], Generation]):
        self._make = make_prompts
        self._run = run
        self._ready: deque = deque()

    def prepare(self, n: int) -> None:
        """Draw ``n`` batches of fresh prompts now, so that the random generator is not metered."""
        for _ in range(int(n)):
            self._ready.append(self._make())

    @property
    def prepared(self) -> int:
        """Batches of prompts drawn and not yet sent."""
        return len(self._ready)

    def __call__(self) -> Generation:
        if not self._ready:
            raise EngineError("no fresh prompts are prepared for this call; call prepare(n) before the window opens")
        return self._run(self._ready.popleft())


class Engine(ABC):
    """Interface of an engine."""

    name = ""
    gpus = 1
    """GPUs the engine runs on (tensor parallelism); the meter reads that many."""

    @abstractmethod
    def load(self) -> None:
        """Load the model onto the device."""

    @abstractmethod
    def request(self, batch_size: int, input_len: int, output_len: int) -> Request:
        """The :class:`Request` of one cell; nothing runs until it is prepared and called."""

    def synchronize(self) -> None:
        """Wait for the device to finish queued work (before a meter reads its counter)."""

    def recover(self) -> None:
        """Release what a failed request left behind (e.g. CUDA memory after an OOM)."""

    def versions(self) -> dict:
        return {}

    def energy_counter(self):
        """A factory of the engine library's own energy counter (each a context manager over one window
        whose ``total_energy`` is in J), or None where the library has none."""
        return None

    def close(self) -> None:
        pass
