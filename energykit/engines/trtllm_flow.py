"""Which flow of the installed TensorRT-LLM runs a model, checked before any GPU time: the release the
engine is written against, the architectures each flow registers, and the refusals in one line (the
TensorRT engine-build flow, a model split over GPUs).

The PyTorch backend's registry (``tensorrt_llm._torch.models.modeling_utils.MODEL_CLASS_MAPPING``) and the
TensorRT flow's (``tensorrt_llm.models.MODEL_MAP``, through ``tensorrt_llm._tensorrt_engine.LLM``) are read
from the installed version, never kept as a list here. Nothing imports ``tensorrt_llm`` at import time.
The engine itself is :class:`energykit.engines.trtllm.TrtLlmEngine`.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import sys
from pathlib import Path

from ..errors import MissingExtraError, ParamsError
from .hf_config import ARCHITECTURES

__all__ = ["INSTALL_HINT", "TARGET_VERSION", "BACKENDS", "FLOWS", "SINGLE_PROCESS_ENV", "TENSORRT_FLOW_REFUSAL",
           "import_library", "library_architectures", "hf_architecture", "choose_flow", "check_supported",
           "check_one_gpu"]

INSTALL_HINT = ("its wheels come from NVIDIA's index (https://nvidia.github.io/TensorRT-LLM/installation/linux.html); "
                "on a cluster run it in NVIDIA's release container: see containers/")
TARGET_VERSION = "1.2"
"""The TensorRT-LLM release whose LLM API the engine is written against."""

BACKENDS = ("pytorch", "_autodeploy")
"""``LLM(backend=...)`` values of ``tensorrt_llm.LLM`` in 1.2."""

FLOWS = ("pytorch", "tensorrt")
"""How a model runs: the PyTorch backend, or a TensorRT engine built through the LLM API."""

SINGLE_PROCESS_ENV = "TLLM_WORKER_USE_SINGLE_PROCESS"
"""The switch of ``tensorrt_llm/llmapi/utils.py`` (``enable_worker_single_process_for_tp1``, read once per
process) that makes ``GenerationExecutor.create`` run a one-GPU executor in this process."""

TENSORRT_FLOW_REFUSAL = ("admits whatever is queued when it wakes and has no batch wait "
                         "(executorImpl.cpp, getLeaderNewReqWithIds), so its batches come back ragged and every "
                         "window would fail")


def import_library():
    """``(tensorrt_llm, tensorrt_llm.llmapi)``, or a one-line :class:`MissingExtraError` naming the ``trtllm`` extra."""
    try:
        import tensorrt_llm
        from tensorrt_llm import llmapi
    except ImportError:
        raise MissingExtraError("tensorrt_llm", "trtllm", INSTALL_HINT) from None
    return tensorrt_llm, llmapi


def _installed():
    """The installed ``tensorrt_llm`` module, or None (nothing imported when it is absent)."""
    if "tensorrt_llm" in sys.modules:
        return sys.modules["tensorrt_llm"]
    if importlib.util.find_spec("tensorrt_llm") is None:
        return None
    return import_library()[0]


def library_architectures() -> dict[str, frozenset | None]:
    """Architectures each flow of the installed TensorRT-LLM runs: ``{"pytorch": …, "tensorrt": … or None}``.

    PyTorch backend: the keys of ``tensorrt_llm._torch.models.modeling_utils.MODEL_CLASS_MAPPING``
    (filled by ``@register_auto_model`` when ``tensorrt_llm._torch.models`` is imported). TensorRT flow:
    the keys of ``tensorrt_llm.models.MODEL_MAP``, where ``tensorrt_llm._tensorrt_engine`` exists.
    """
    importlib.import_module("tensorrt_llm._torch.models")  # registers every model class
    mapping = importlib.import_module("tensorrt_llm._torch.models.modeling_utils").MODEL_CLASS_MAPPING
    out = {"pytorch": frozenset(mapping), "tensorrt": None}
    try:
        importlib.import_module("tensorrt_llm._tensorrt_engine")
        out["tensorrt"] = frozenset(importlib.import_module("tensorrt_llm.models").MODEL_MAP)
    except ImportError:
        pass
    return out


def hf_architecture(geometry: dict, checkpoint: str | None = None) -> str:
    """The ``config.json`` architecture a model loads as (a checkpoint's own, or the geometry's recipe)."""
    if checkpoint:
        cfg = Path(checkpoint) / "config.json"
        if cfg.exists():
            archs = json.loads(cfg.read_text()).get("architectures") or []
            if archs:
                return archs[0]
    return ARCHITECTURES.get(geometry.get("arch", ""), "LlamaForCausalLM")


def choose_flow(name: str, geometry: dict, checkpoint: str | None = None, backend: str = "pytorch",
                flow: str = "auto") -> str:
    """The flow of the installed TensorRT-LLM that runs this model: ``pytorch``, the only one measured.

    ``flow="auto"`` takes the PyTorch backend where its registry has the architecture. A model only the
    TensorRT engine build runs, or ``flow="tensorrt"``, is refused (it admits no whole batches), as is one
    no flow runs: a :class:`ParamsError` in one line naming the installed version and the reason.
    """
    trt, _ = import_library()
    version = getattr(trt, "__version__", "unknown")
    arch = hf_architecture(geometry, checkpoint)
    archs = library_architectures()
    if backend == "_autodeploy":
        return "pytorch"
    runs = [f for f in FLOWS if archs[f] is not None and arch in archs[f]]
    if flow != "auto":
        if flow not in runs:
            raise ParamsError(f"model {name!r}: TensorRT-LLM {version}'s {flow} flow has no model for {arch}"
                              + (f"; its {runs[0]} flow has one: set flow: auto under trtllm:" if runs else
                                 "; measure it with engine: hf"))
        runs = [flow]
    if runs and runs[0] == "pytorch":
        return "pytorch"
    if runs and flow == "tensorrt":
        raise ParamsError(f"model {name!r}: trtllm flow tensorrt (TensorRT-LLM {version}'s engine build) is refused: "
                          f"its C++ executor {TENSORRT_FLOW_REFUSAL}; set flow: auto under trtllm:")
    if runs:
        raise ParamsError(f"model {name!r}: TensorRT-LLM {version} runs {arch} only in its TensorRT engine-build "
                          f"flow, whose C++ executor {TENSORRT_FLOW_REFUSAL}; measure it with engine: hf, or install "
                          "a release whose PyTorch backend lists it")
    built = ("" if archs["tensorrt"] is not None
             else " and this build has no TensorRT engine flow (tensorrt_llm._tensorrt_engine)")
    raise ParamsError(f"model {name!r}: TensorRT-LLM {version} runs {arch} in no flow (not in the PyTorch "
                      f"backend's MODEL_CLASS_MAPPING nor the TensorRT flow's MODEL_MAP{built}); measure it with "
                      "engine: hf, or install a release that lists it")


def check_supported(name: str, geometry: dict, backend: str = "pytorch", checkpoint: str | None = None,
                    flow: str = "auto") -> None:
    """Refuse, before any GPU time, a model the PyTorch backend of the installed TensorRT-LLM does not run.

    ``flow: tensorrt`` is refused everywhere. Without TensorRT-LLM installed (a machine that only plans
    or validates a sweep) there is no library to ask which architectures it runs: nothing else is
    refused here, and :meth:`~energykit.engines.trtllm.TrtLlmEngine.load` asks it on the GPU machine.
    """
    if backend not in BACKENDS:
        raise ParamsError(f"trtllm backend {backend!r} is not one of {', '.join(BACKENDS)} (TensorRT-LLM "
                          f"{TARGET_VERSION}'s LLM); the TensorRT engine build is not measured: its C++ executor "
                          f"{TENSORRT_FLOW_REFUSAL}")
    if flow not in ("auto",) + FLOWS:
        raise ParamsError(f"trtllm flow {flow!r} is not one of auto, {', '.join(FLOWS)}")
    if flow == "tensorrt":
        raise ParamsError(f"model {name!r}: trtllm flow tensorrt (TensorRT-LLM's engine build) is refused: its C++ "
                          f"executor {TENSORRT_FLOW_REFUSAL}; set flow: auto under trtllm:")
    if _installed() is None:
        return
    choose_flow(name, geometry, checkpoint, backend, flow)


def check_one_gpu(tensor_parallel_size: int) -> None:
    """Refuse, in one line, a model split over GPUs: its executor cannot run in this process."""
    if int(tensor_parallel_size) != 1:
        raise ParamsError(f"trtllm tensor_parallel_size {tensor_parallel_size}: whole batches need the executor in "
                          f"this process ({SINGLE_PROCESS_ENV}=1), which TensorRT-LLM offers for one GPU only "
                          "(more spawn MPI workers); set tensor_parallel_size: 1")
