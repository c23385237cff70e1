"""The kit's vocabulary, written once: dimension names, units, the glossary and the geometry columns.

Every other module takes these names from here. Quantities carry their SI unit in their name
(``energy_j``, ``duration_s``, ``tokens_per_j``) and in ``attrs["units"]``; vendor units (NVML's
mJ and mW) are converted at the device boundary in :mod:`energykit.meters`.
"""

from __future__ import annotations

__all__ = ["DIMS", "INT_DIMS", "PROVENANCE_COLUMNS", "GEOMETRY_KEYS", "GEOMETRY_COLUMNS", "ENERGY_UNITS_J",
           "DURATION_UNITS_S", "UNITS", "GLOSSARY"]

DIMS = ("model", "batch_size", "input_len", "output_len", "repeat")
"""Dimensions of a measurement dataset: one measured window per (model, batch_size, input_len, output_len, repeat)."""
INT_DIMS = DIMS[1:]
"""The integer dimensions (everything but ``model``)."""
PROVENANCE_COLUMNS = ("engine", "gpu", "dtype")
"""Per-model provenance columns of a tidy file."""
GEOMETRY_KEYS = (
    "arch", "num_layers", "hidden_size", "num_heads", "num_kv_heads", "head_dim",
    "intermediate_size", "ffn_gated", "vocab_size", "tied_embeddings",
)
"""A model geometry: what energy depends on (see :mod:`energykit.presets`)."""
GEOMETRY_COLUMNS = GEOMETRY_KEYS + ("params",)
"""Geometry columns of a tidy file: the geometry plus its parameter count."""
ENERGY_UNITS_J = {"j": 1.0, "mj": 1e-3, "kj": 1e3, "wh": 3600.0, "kwh": 3.6e6}
"""Joules per unit of an ``energy_<unit>`` column (units are case-sensitive)."""
DURATION_UNITS_S = {"s": 1.0, "ms": 1e-3, "us": 1e-6}
"""Seconds per unit of a ``duration_<unit>`` column."""
UNITS = {
    "energy_j": "J",
    "duration_s": "s",
    "output_tokens": "tokens",
    "input_len": "tokens",
    "output_len": "tokens",
    "batch_size": "sequences",
    "iterations": "calls",
    "ttft_s": "s",
    "window_energy_j": "J",
    "window_duration_s": "s",
    "idle_power_w": "W",
    "ttft_spread_s": "s",
    "library_energy_j": "J",
    "library_energy_diff": "1",
    "step_s": "s",
    "pilot_step_s": "s",
    "executor_step_s": "s",
}
"""``attrs["units"]`` of each variable and coordinate."""
GLOSSARY = {
    "energy_j": "energy of one generate() call on the whole batch, whole board, idle included",
    "duration_s": "wall time of one generate() call, device synchronised before and after",
    "output_tokens": "new tokens actually produced per sequence",
    "iterations": "identical generate() calls inside one meter window (energy_j is per call)",
    "ttft_spread_s": "largest spread of the batch's times to first token in a window's calls (trtllm)",
    "first_token_iterations": "executor iterations the batch's first tokens came from (1: one batch; trtllm)",
    "decode_graphed": "decode ran as CUDA graphs captured at this batch size (trtllm)",
    "library_energy_j": "the engine library's own energy counter over the same windows, per call",
    "library_energy_diff": "(library_energy - window_energy) / window_energy of the kit's meter",
    "step_s": "wall time per forward step of one call (duration_s over the engine's steps, else over output_tokens)",
    "pilot_step_s": "the same from the unmetered pilot calls; a window over 10x it fails",
    "executor_step_s": "one decode step as the engine's executor timed it (trtllm perf metrics)",
}
"""``attrs["long_name"]`` of the main variables."""
