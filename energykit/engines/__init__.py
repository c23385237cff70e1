"""Inference engines, imported lazily: ``hf`` (transformers/PyTorch) and ``trtllm`` (TensorRT-LLM LLM API).

An engine loads one model and turns a cell (batch size, input length, output length) into a
:class:`Request`: an object that prepares fresh prompts (outside any meter window) and runs one
batch of requests per call, returning a :class:`Generation`. The sweep runner times and meters
those calls inside windows (:func:`energykit.windows.measure`).

Every call sends token ids that no earlier call sent. Engines that cache prefixes (TensorRT-LLM
reuses KV blocks by default) would otherwise skip the prefill of a repeated prompt and understate
the prefill terms θ1 and θ3 of the model.
"""

from __future__ import annotations

from ..errors import ParamsError
from .base import ENGINES, Engine, Generation, Request
from .hf import HFEngine
from .trtllm import TrtLlmEngine

__all__ = ["ENGINES", "Engine", "Generation", "Request", "HFEngine", "TrtLlmEngine", "engine_class", "make_engine"]

_CLASSES = {"hf": HFEngine, "trtllm": TrtLlmEngine}


def engine_class(kind: str) -> type:
    """The engine class of a name (nothing is imported or loaded)."""
    if kind not in _CLASSES:
        raise ParamsError(f"unknown engine {kind!r}; use one of {', '.join(ENGINES)}")
    return _CLASSES[kind]


def make_engine(kind: str, **kwargs) -> Engine:
    """An engine by name; its heavy libraries are imported when it loads."""
    return engine_class(kind)(**kwargs)
