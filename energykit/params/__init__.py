"""Validated parameter sets (``params/*.yaml``): sweeps (:class:`MeasureParams`), reports (:class:`ReportParams`)
and replays (:class:`ReplayParams`).

Validation happens before any work: an unknown key, a wrong type or a bad value stops with one
line that names the file, the key and the fix. One module per use:

- :mod:`~energykit.params.read`: reading and bounding a YAML file, pydantic's error as one line;
- :mod:`~energykit.params.measure`: a sweep's parameters;
- :mod:`~energykit.params.report`: a report's parameters, the files it names, whether its pages are stale;
- :mod:`~energykit.params.replay`: a trace replay's parameters.
"""

from __future__ import annotations

from .measure import MAX_WINDOWS, MeasureParams, load_measure_params
from .read import MAX_PARAMS_BYTES, MAX_PARAMS_NODES, one_line, read_yaml, validate
from .replay import ReplayParams, load_replay_params
from .report import (BUILD_FILE, DEFAULT_PARAMS, ReportParams, default_out, input_files, input_hashes,
                     load_report_params, notebook_parameters, stale_reasons)

__all__ = ["MAX_PARAMS_BYTES", "MAX_PARAMS_NODES", "MAX_WINDOWS", "read_yaml", "one_line", "validate", "ReportParams",
           "load_report_params", "notebook_parameters", "MeasureParams", "load_measure_params", "BUILD_FILE",
           "default_out", "input_files", "input_hashes", "stale_reasons", "ReplayParams", "load_replay_params",
           "DEFAULT_PARAMS"]
