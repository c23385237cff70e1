"""Readers of every outside format, one module each, returning ``(data, metadata)`` (pvlib's iotools).

- :mod:`~energykit.iotools.tidy`: :func:`read_tidy`, tidy CSV/JSONL measurements (one row per window), validated;
- :mod:`~energykit.iotools.netcdf`: :func:`read_netcdf`, a NetCDF dataset written by the kit, validated the
  same way, and :func:`check_netcdf_header`;
- :mod:`~energykit.iotools.window_log`: :func:`read_window_log`, a sweep's raw ``windows.jsonl``;
- :mod:`~energykit.iotools.trace`: :func:`read_trace` / :func:`read_arrival_trace`, production request traces
  (Azure LLM inference format, or input_len/output_len);
- :mod:`~energykit.iotools.hf_config`: :func:`read_hf_config`, a Hugging Face ``config.json``, as a geometry;
- :mod:`~energykit.iotools.checks`: what they share: :func:`resolve` (a relative path as the working directory
  or, failing that, the repository root reads it), regular files, outside text, geometries.

A new format gets one module here; :func:`energykit.dataset.load` dispatches on the suffix.
"""

from __future__ import annotations

from .checks import (MATH, MAX_ENERGY_J, MAX_INT, MAX_VOCAB, MIN_ENERGY_J, REPO_ROOT, check_geometry,
                     check_model_name, check_regular_file, check_text, escape_markdown, resolve)
from .hf_config import geometry_from_hf_config, read_hf_config
from .netcdf import MAX_NETCDF_BYTES, check_netcdf_header, read_netcdf
from .tidy import read_tidy
from .trace import read_arrival_trace, read_trace
from .window_log import read_window_log

__all__ = ["resolve", "read_tidy", "read_netcdf", "read_window_log", "read_trace", "read_arrival_trace",
           "read_hf_config", "geometry_from_hf_config", "MAX_INT", "MATH", "escape_markdown", "check_text",
           "check_model_name", "check_geometry", "MAX_VOCAB", "MIN_ENERGY_J", "MAX_ENERGY_J", "check_regular_file",
           "check_netcdf_header", "MAX_NETCDF_BYTES", "REPO_ROOT"]
