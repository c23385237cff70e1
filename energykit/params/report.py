"""Parameters of a report (``params/report*.yaml``): :class:`ReportParams`, what each notebook receives, the files a
set names and whether its pages are stale (light enough for make to ask).

The report's defaults have one home, the default parameter set :data:`DEFAULT_PARAMS` (``params/report.yaml``):
:class:`ReportParams`' defaults and each notebook's ``parameters`` cell equal its values (the tests check both;
papermill needs the cell's values written out).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from ..state import file_sha256
from .read import read_yaml, validate

__all__ = ["DEFAULT_PARAMS", "ReportParams", "load_report_params", "notebook_parameters", "BUILD_FILE",
           "default_out", "input_files", "input_hashes", "stale_reasons"]

DEFAULT_PARAMS = "params/report.yaml"
"""The default parameter set of ``energykit report``, ``make report`` and :func:`energykit.report.build`
(relative to the repository root): the one home of the report's defaults."""


class ReportParams(BaseModel):
    """Parameters of the analysis notebooks (02_fit, 03_sweetspots, 04_workloads, 05_planning)."""

    model_config = ConfigDict(extra="forbid")

    data: list[str] = Field(min_length=1, description="measured files (.nc, .csv, .jsonl), combined along model")
    label: str = Field("", description="what this parameter set is (e.g. 'PILOT: ...', 'APPENDIX: ...'), shown on "
                                       "every page's header and in reports/index.html")
    loss: Literal["l1", "l2"] = "l1"
    cv_folds: int = Field(5, ge=2)
    fit_file: str = Field("", description="fits stored by energykit fit --save; empty: each page fits the data")
    sweet_pct: float = Field(10.0, gt=0, lt=100)
    workload_model: str = ""
    traces: dict[str, str] = Field(default_factory=dict)
    truncate_inputs: list[int] = Field(default_factory=list)
    cap_outputs: list[int] = Field(default_factory=list)
    calibrate_data: str = ""
    predict_geometries: list[str] = Field(default_factory=list)
    design_budgets: list[int] = Field(default_factory=list)
    replay_dir: str = Field("", description="07_replay: a folder written by energykit replay; empty: a replay "
                                            "SIMULATED from calibrate_data")
    replay_fit: str = Field("", description="07_replay: fits (energykit fit --save) or data at several batch sizes "
                                            "of the replayed server; empty: data")
    replay_trace: str = Field("", description="07_replay: the trace of the simulated replay")
    replay_requests: int = Field(30, ge=1, description="07_replay: requests of the simulated replay")
    replay_time_scale: float = Field(1.0, gt=0, description="07_replay: the simulated replay's arrivals, sped up by this")
    replay_window_s: float = Field(10.0, gt=0, description="07_replay: predicted vs measured per window of this [s]")

    @field_validator("truncate_inputs", "cap_outputs", "design_budgets")
    @classmethod
    def _positive(cls, v: list[int]) -> list[int]:
        bad = [x for x in v if x <= 0]
        if bad:
            raise ValueError(f"lengths must be positive integers; got {bad[0]}")
        return v


def load_report_params(path: str | Path) -> ReportParams:
    """Read and validate a report parameter file."""
    return validate(ReportParams, read_yaml(path), str(path))


def notebook_parameters(params: BaseModel, declared: dict[str, Any]) -> dict[str, Any]:
    """The subset of ``params`` that a notebook declares in its ``parameters`` cell."""
    values = params.model_dump()
    return {k: v for k, v in values.items() if k in declared}


BUILD_FILE = "build.json"
"""What a report build read and how it was run (params, label, data, command, commit, time, the SHA-256 of every
input file), beside its pages."""


def _shown(path: Path, root: Path) -> str:
    return str(path.relative_to(root)) if path.is_relative_to(root) else str(path)


def default_out(params_path: str | Path) -> Path:
    """Where a parameter set's pages go by default: ``reports/<params-stem>/`` (one folder per set).

    >>> str(default_out("params/report_probes.yaml"))
    'reports/report_probes'
    """
    return Path("reports") / Path(params_path).stem


def input_files(params: ReportParams) -> list[str]:
    """Every file a parameter set names (data, traces, calibration data, a given fit file), as written there."""
    named = list(params.data) + list(params.traces.values()) + [params.calibrate_data, params.fit_file]
    return list(dict.fromkeys(f for f in named if f))


def _digest(path: Path) -> str:
    """SHA-256 of a file; of a folder, its files' names and hashes; ``missing`` when there is nothing."""
    if path.is_dir():
        return ",".join(f"{p.relative_to(path)}:{file_sha256(p)}" for p in sorted(path.rglob("*")) if p.is_file())
    return file_sha256(path) if path.is_file() else "missing"


def input_hashes(params_path: Path, params: ReportParams, root: Path) -> dict[str, str]:
    """``{"params": SHA-256 of the params file, FILE: SHA-256, ...}`` for every file the params name."""
    out = {"params": _digest(params_path)}
    for f in input_files(params):
        out[f] = _digest(Path(f) if Path(f).is_absolute() else root / f)
    return out


def stale_reasons(params_path: str | Path, out_dir: str | Path | None, root: Path) -> list[str]:
    """Why the pages in ``out_dir`` (default :func:`default_out`) do not show what ``params_path`` names now
    (relative paths: from ``root``, the repository).

    Empty when the last build read exactly these files: the same params file and, byte for byte, the same data,
    traces, calibration data and fit file (their SHA-256, recorded in ``build.json``). ``make report`` asks this
    (``energykit report --check-stale``), so a report is rebuilt when data the params name anywhere changes, not
    only the files under ``data/`` whose times make sees.
    """
    out = Path(default_out(params_path) if out_dir is None else out_dir)
    out = out if out.is_absolute() else root / out
    params_path = Path(params_path)
    params_path = params_path if params_path.is_absolute() else root / params_path
    info_path = out / BUILD_FILE
    if not info_path.is_file():
        return [f"{_shown(out, root)} holds no build yet"]
    try:
        info = json.loads(info_path.read_text())
        recorded = info.get("inputs") if isinstance(info, dict) else None
    except (OSError, ValueError):
        recorded = None
    if not isinstance(recorded, dict):
        return [f"{_shown(info_path, root)} records no input hashes (built by an older energykit)"]
    now = input_hashes(params_path, load_report_params(params_path), root)
    reasons = [f"{_shown(params_path, root) if k == 'params' else k} "
               f"{'was not read by the last build' if k not in recorded else 'changed since the last build'}"
               for k, v in now.items() if recorded.get(k) != v]
    return reasons + [f"{k} is no longer named by the params" for k in recorded if k not in now]
