"""Inference engines, imported lazily: ``hf`` (transformers/PyTorch), ``trtllm`` (TensorRT-LLM LLM API) and
``serve`` (any OpenAI-compatible server, over HTTP).

An engine loads one model and turns a cell (batch size, input length, output length) into a
:class:`Request`: an object that prepares fresh prompts (outside any meter window) and runs one
batch of requests per call, returning a :class:`Generation`. The sweep runner times and meters
those calls inside windows (:func:`energykit.windows.measure`).

Every call sends token ids that no earlier call sent. Engines that cache prefixes (TensorRT-LLM
reuses KV blocks by default) would otherwise skip the prefill of a repeated prompt and understate
the prefill terms θ1 and θ3 of the model.

:data:`ENGINES` is the registry: a new engine is one module with an :class:`Engine` subclass and
one line here. The core looks engines up by name and asks the class everything else.
"""

from __future__ import annotations

from ..errors import ParamsError
from .base import Engine, Generation, NoOptions, Request
from .hf import HFEngine
from .trtllm import TrtLlmEngine
from .serve import ServeEngine

__all__ = ["ENGINES", "Engine", "Generation", "NoOptions", "Request", "HFEngine", "TrtLlmEngine", "ServeEngine", "engine_class",
           "make_engine", "caveat"]

ENGINES: dict[str, type[Engine]] = {
    HFEngine.name: HFEngine,
    TrtLlmEngine.name: TrtLlmEngine,
    ServeEngine.name: ServeEngine,
}
"""Registered engines by the name a params file gives in ``engine:``."""


def engine_class(kind: str) -> type[Engine]:
    """The registered engine class of a name, or a one-line :class:`ParamsError` listing the names."""
    try:
        return ENGINES[kind]
    except (KeyError, TypeError):
        raise ParamsError(f"unknown engine {kind!r}; use one of {', '.join(ENGINES)}") from None


def make_engine(kind: str, **kwargs) -> Engine:
    """An engine by name; its heavy libraries are imported when it loads."""
    return engine_class(kind)(**kwargs)


def caveat(label: str) -> str:
    """Every registered engine's caveat on comparing attention kinds for data labelled ``label``."""
    return "".join(cls.caveat(label) for cls in ENGINES.values())
