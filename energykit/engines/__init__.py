"""Inference engines, imported lazily: ``hf`` (transformers/PyTorch) and ``trtllm`` (TensorRT-LLM LLM API).

An engine loads one model and turns a cell (batch size, input length, output length) into a
callable that runs one batch of requests and returns a :class:`Generation`; the sweep runner times
and meters that callable inside windows.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Callable

from ..errors import ParamsError

ENGINES = ("hf", "trtllm")


@dataclass
class Generation:
    """Result of one batch of requests."""

    output_tokens: int
    """New tokens per sequence (verified equal for every sequence)."""
    ttft_s: float = float("nan")
    """Mean time to first token [s], where the engine reports it."""


class Engine(ABC):
    """Interface of an engine."""

    name = ""

    @abstractmethod
    def load(self) -> None:
        """Load the model onto the device."""

    @abstractmethod
    def request(self, batch_size: int, input_len: int, output_len: int) -> Callable[[], Generation]:
        """Prepare the inputs of one cell; the returned callable runs one batch of requests."""

    def synchronize(self) -> None:
        """Wait for the device to finish queued work (before a meter reads its counter)."""

    def recover(self) -> None:
        """Release what a failed request left behind (e.g. CUDA memory after an OOM)."""

    def versions(self) -> dict:
        return {}

    def close(self) -> None:
        pass


def make_engine(kind: str, **kwargs) -> Engine:
    """An engine by name; its heavy libraries are imported when it loads."""
    if kind == "hf":
        from .hf import HFEngine

        return HFEngine(**kwargs)
    if kind == "trtllm":
        from .trtllm import TrtLlmEngine

        return TrtLlmEngine(**kwargs)
    raise ParamsError(f"unknown engine {kind!r}; use one of {', '.join(ENGINES)}")
