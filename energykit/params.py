"""Validated parameter sets (``params/*.yaml``) for the report notebooks and the CLI.

Validation happens before any work: an unknown key, a wrong type or a bad value stops with one
line that names the file, the key and the fix.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from .errors import ParamsError


def read_yaml(path: str | Path) -> dict:
    """Read a YAML mapping; a missing file or a non-mapping is a :class:`ParamsError`."""
    path = Path(path)
    if not path.exists():
        raise ParamsError(f"{path}: no such params file; check the path")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        raise ParamsError(f"{path}:{where} is not valid YAML ({getattr(e, 'problem', e)}); fix the syntax") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ParamsError(f"{path}: expected a mapping of key: value, got {type(data).__name__}")
    return data


def one_line(err: ValidationError, source: str) -> str:
    """The first pydantic error as one line: ``file: key: problem (got value)``."""
    e = err.errors()[0]
    loc = ".".join(str(x) for x in e["loc"]) or "(top level)"
    if e["type"] == "extra_forbidden":
        return f"{source}: unknown key '{loc}'; remove it or check its spelling"
    if e["type"] == "missing":
        return f"{source}: missing key '{loc}'; add it"
    msg = e["msg"].removeprefix("Value error, ")
    return f"{source}: {loc}: {msg} (got {e.get('input')!r})"


def validate(model: type[BaseModel], data: dict, source: str) -> BaseModel:
    try:
        return model.model_validate(data)
    except ValidationError as e:
        raise ParamsError(one_line(e, source)) from None


class ReportParams(BaseModel):
    """Parameters of the analysis notebooks (02_fit, 03_sweetspots, 04_workloads, 05_planning)."""

    model_config = ConfigDict(extra="forbid")

    data: list[str] = Field(min_length=1, description="measured files (.nc, .csv, .jsonl), combined along model")
    loss: Literal["l1", "l2"] = "l1"
    cv_folds: int = Field(5, ge=2)
    sweet_pct: float = Field(10.0, gt=0, lt=100)
    workload_model: str = ""
    traces: dict[str, str] = Field(default_factory=dict)
    truncate_inputs: list[int] = Field(default_factory=list)
    cap_outputs: list[int] = Field(default_factory=list)
    calibrate_data: str = ""
    predict_geometries: list[str] = Field(default_factory=list)
    design_budgets: list[int] = Field(default_factory=list)

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
