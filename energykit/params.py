"""Validated parameter sets (``params/*.yaml``): sweeps (:class:`MeasureParams`) and reports
(:class:`ReportParams`).

Validation happens before any work: an unknown key, a wrong type or a bad value stops with one
line that names the file, the key and the fix.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal, Union

import yaml
from pydantic import (BaseModel, ConfigDict, Field, PrivateAttr, StrictInt, ValidationError, field_validator,
                      model_validator)

from .engines.trtllm import check_supported
from .errors import ParamsError
from .presets import resolve

__all__ = ["read_yaml", "one_line", "validate", "ReportParams", "load_report_params", "notebook_parameters",
           "MeasureParams", "load_measure_params"]


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
    fit_file: str = Field("", description="fits stored by energykit fit --save; empty: each page fits the data")
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


class MeasureParams(BaseModel):
    """Parameters of a sweep (``params/measure_*.yaml``)."""

    model_config = ConfigDict(extra="forbid")

    engine: Literal["hf", "trtllm"]
    models: list[Union[str, dict[str, Any]]] = Field(min_length=1)
    dtype: Literal["bfloat16", "float16", "float32"] = "bfloat16"
    batch_sizes: list[StrictInt] = Field(min_length=1)
    input_lens: list[StrictInt] = Field(min_length=1)
    output_lens: list[StrictInt] = Field(min_length=1)
    cells: list[tuple[StrictInt, StrictInt]] | None = None
    repeats: StrictInt = Field(3, ge=1)
    min_window_s: float = Field(2.0, ge=0, allow_inf_nan=False)
    meter: Literal["nvml", "none"] = "nvml"
    output: str
    warmup: StrictInt = Field(3, ge=0)
    cooldown_s: float = Field(0.0, ge=0, le=3600, allow_inf_nan=False)
    idle_s: float = Field(5.0, ge=0, le=3600, allow_inf_nan=False)
    timeline: bool = False
    device: Literal["auto", "cuda", "cpu"] = "auto"
    compile: bool = True
    attention: Literal["flex_attention", "sdpa", "eager"] = "flex_attention"
    decode: Literal["loop", "generate"] | None = None
    """hf engine: ``loop`` (the kit's decode loop; default with flex attention) or ``generate`` (default otherwise)."""
    compile_cache: str = ""
    """Folder of Inductor's and Triton's caches: reruns and array tasks on the same GPU type skip compiling."""
    seed: StrictInt = 0
    backend: Literal["pytorch", "_autodeploy"] = "pytorch"
    chunked_prefill: bool = False
    tensor_parallel_size: StrictInt = Field(1, ge=1)
    plan_timing: str = ""
    """An earlier sweep's dataset: shards are balanced by its measured seconds instead of tokens moved."""
    _resolved: list = PrivateAttr(default_factory=list)

    @field_validator("batch_sizes", "input_lens", "output_lens")
    @classmethod
    def _positive(cls, v):
        bad = [x for x in v if x <= 0]
        if bad:
            raise ValueError(f"must be positive integers; got {bad[0]}. Use values such as 16, 64, 256")
        if len(set(v)) != len(v):
            raise ValueError("lists each length once; remove the duplicate")
        return v

    @field_validator("cells")
    @classmethod
    def _cells(cls, v):
        if v is not None:
            bad = [c for c in v if c[0] <= 0 or c[1] <= 0]
            if bad:
                raise ValueError(f"cells are [input_len, output_len] pairs of positive integers; got {list(bad[0])}")
        return v

    @model_validator(mode="after")
    def _models(self):
        seen = set()
        self._resolved = []
        for spec in self.models:
            try:
                name, geom, ckpt = resolve(spec)
            except ParamsError as e:
                raise ValueError(str(e)) from None
            if name in seen:
                raise ValueError(f"model {name!r} is listed twice")
            seen.add(name)
            need = self.max_len
            ctx = geom.get("max_position_embeddings", 0)
            # checkpoints and inline geometries have a fixed context; random-weight presets extend
            # their position tables to the sweep's longest request, as the shared H200 data did
            if (ckpt or isinstance(spec, dict)) and need > ctx:
                raise ValueError(
                    f"longest request {need} tokens exceeds {name!r}'s context of {ctx}; shorten input_lens/output_lens"
                )
            if self.engine == "trtllm":
                try:
                    check_supported(name, geom, self.backend, ckpt)
                except ParamsError as e:
                    raise ValueError(str(e)) from None
            elif self.tensor_parallel_size != 1:
                raise ValueError("tensor_parallel_size applies to engine trtllm only; the hf engine runs on one GPU")
            if self.engine == "hf" and self.decode_mode == "loop" and self.attention != "flex_attention":
                raise ValueError(f"decode: loop runs the kit's flex attention; attention {self.attention!r} "
                                 "needs decode: generate")
            if self.engine == "hf" and self.decode_mode == "loop" and geom.get("arch") == "falcon":
                raise ValueError(f"model {name!r} (falcon) has no flex attention in transformers: its sdpa path "
                                 "attends over the whole static cache and expands the KV heads, so decode cost would "
                                 "not follow the context; drop it, or use decode: generate with attention: sdpa")
            if self.engine == "hf" and self.meter == "nvml" and self.device == "cpu":
                raise ValueError("meter nvml with device cpu would meter a GPU while the model runs on the CPU; "
                                 "use device: cuda (or auto on a GPU machine), or meter: none")
            self._resolved.append((name, geom, ckpt))
        return self

    @property
    def grid(self) -> list[tuple[int, int]]:
        """(input_len, output_len) cells: the design's ``cells`` or the full grid."""
        if self.cells is not None:
            return [tuple(c) for c in self.cells]
        return [(i, o) for i in self.input_lens for o in self.output_lens]

    @property
    def decode_mode(self) -> str:
        """The hf engine's decoding: ``decode``, or by default ``loop`` with flex attention, else ``generate``."""
        if self.decode is not None:
            return self.decode
        return "loop" if self.attention == "flex_attention" else "generate"

    @property
    def max_len(self) -> int:
        return max(i + o for i, o in self.grid)

    @property
    def resolved(self) -> list[tuple[str, dict, str | None]]:
        return self._resolved


def load_measure_params(path: str | Path) -> MeasureParams:
    """Read and validate a sweep parameter file; nothing is loaded or written."""
    return validate(MeasureParams, read_yaml(path), str(path))
