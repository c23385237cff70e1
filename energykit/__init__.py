"""energykit: find the energy-efficiency sweet spots of LLM inference.

Measure the energy of LLM requests as a function of input and output length, fit the
SweetSpot analytical model (Pizzini Cavagna et al., arXiv:2602.05695), locate the sweet spots
and estimate what a production workload would save by moving toward them.

The public API is what ``__all__`` names: the submodules (imported when first used, PEP 562, so
``import energykit`` is instant) and the functions a notebook reaches for first. Heavy and optional
dependencies (torch, transformers, tensorrt_llm, submitit) are imported only by the code that
needs them. The layers are described in ARCHITECTURE.md.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

SUBMODULES = (
    "schema", "errors", "iotools", "dataset", "physics", "model", "intervals", "price", "presets", "fit",
    "uncertainty", "sweetspots",
    "workloads", "design", "hardware", "plots", "report", "params", "state", "meters", "windows", "engines",
    "sweep", "replay_run", "testing", "cli", "replay", "paper", "findings", "notebook", "merge", "provenance", "shards",
    "summary", "submit",
)
FUNCTIONS = {
    "load": "dataset", "load_many": "dataset", "combine": "dataset", "measured_cells": "dataset",
    "fit_dataset": "fit", "load_fits": "fit", "o_star": "fit", "sweetspot_energy": "fit",
    "fitted_map": "sweetspots", "measured_map": "sweetspots",
    "policy_savings": "workloads", "trace_summary": "workloads",
    "calibrate": "hardware", "resolve": "presets",
    "SWEETSPOT": "model", "BATCHED": "model", "price_card": "fit",
}
__all__ = ["__version__", *SUBMODULES, *FUNCTIONS]


def __getattr__(name: str):
    if name in SUBMODULES:
        return importlib.import_module(f".{name}", __name__)
    if name in FUNCTIONS:
        return getattr(importlib.import_module(f".{FUNCTIONS[name]}", __name__), name)
    raise AttributeError(f"module 'energykit' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(__all__))
