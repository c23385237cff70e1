"""Parameters of a sweep (``params/measure_*.yaml``): :class:`MeasureParams`, its engine's section validated by
the engine's own model (through the registry), the models resolved and checked before anything loads."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal, Union

from pydantic import (BaseModel, ConfigDict, Field, PrivateAttr, StrictInt, ValidationError, field_validator,
                      model_serializer, model_validator)
from pydantic_core import InitErrorDetails, PydanticCustomError

from ..engines import ENGINES, engine_class
from ..errors import ParamsError
from ..iotools import MAX_INT
from ..presets import resolve
from .read import read_yaml, validate

__all__ = ["MAX_WINDOWS", "MeasureParams", "load_measure_params"]

MAX_WINDOWS = 1_000_000
"""Most windows one sweep may plan (models x batch sizes x cells x repeats); split a bigger sweep."""


def _error(loc: tuple, message: str, value: Any, kind: str = "engine_section") -> ValidationError:
    """A one-error :class:`ValidationError` at ``loc``, shown by :func:`one_line` as ``loc: message (got value)``."""
    return _errors([(kind, loc, message, value)])


def _errors(errors: list[tuple[str, tuple, str, Any]]) -> ValidationError:
    """A :class:`ValidationError` of ``(type, loc, message, value)`` errors, keeping pydantic's own key errors."""
    return ValidationError.from_exception_data("MeasureParams", [InitErrorDetails(
        type=kind if kind in ("missing", "extra_forbidden") else PydanticCustomError(kind, message), loc=loc,
        input=value) for kind, loc, message, value in errors])


class MeasureParams(BaseModel):
    """Parameters of a sweep (``params/measure_*.yaml``).

    The options of the chosen engine live in a section named after it (``hf:``, ``trtllm:``),
    validated by that engine's :attr:`~energykit.engines.Engine.Options`; they may also be written
    at the top level, as before engines had sections. The validated section is
    :attr:`engine_options`, and :meth:`model_dump` writes it back under the engine's name.
    """

    model_config = ConfigDict(extra="forbid")

    engine: str
    models: list[Union[str, dict[str, Any]]] = Field(min_length=1)
    dtype: Literal["bfloat16", "float16", "float32"] = "bfloat16"
    batch_sizes: list[StrictInt] = Field(min_length=1)
    input_lens: list[StrictInt] = Field(min_length=1)
    output_lens: list[StrictInt] = Field(min_length=1)
    cells: list[tuple[StrictInt, StrictInt]] | None = None
    repeats: StrictInt = Field(3, ge=1)
    min_window_s: float = Field(2.0, ge=0, le=3600, allow_inf_nan=False)
    meter: Literal["nvml", "none", "process_cpu"] = "nvml"
    cpu_core_power_w: float = Field(10.0, gt=0, lt=1e4, allow_inf_nan=False)
    """``meter: process_cpu`` only: the stated power of one busy core [W] (a proxy, not a measurement)."""
    output: str
    warmup: StrictInt = Field(3, ge=0, le=1000)  # warm-up calls per model; more is a typo, not a warm-up
    cooldown_s: float = Field(0.0, ge=0, le=3600, allow_inf_nan=False)
    idle_s: float = Field(5.0, ge=0, le=3600, allow_inf_nan=False)
    timeline: bool = False
    device: Literal["auto", "cuda", "cpu"] = "auto"
    seed: StrictInt = Field(0, ge=0, lt=2**32)  # torch.manual_seed overflows past 2**64, after the model loaded
    plan_timing: str = ""
    """An earlier sweep's dataset: shards are balanced by its measured seconds instead of tokens moved."""
    engine_options: BaseModel = Field(default=None, exclude=True)
    """The engine's section, validated by its ``Options`` model (set by the validator, not by a file)."""
    _resolved: list = PrivateAttr(default_factory=list)

    @field_validator("engine")
    @classmethod
    def _engine(cls, v):
        if v not in ENGINES:
            raise ValueError(f"unknown engine {v!r}; use one of {', '.join(ENGINES)}")
        return v

    @model_validator(mode="wrap")
    @classmethod
    def _engine_section(cls, data, handler):
        """Validate the engine's section (and its keys at the top level) with the engine's own model."""
        if not isinstance(data, dict):
            return handler(data)
        if "engine_options" in data:  # set from the section below, never given
            raise _error(("engine_options",), "", data["engine_options"], "extra_forbidden")
        kind = data.get("engine")
        if not isinstance(kind, str) or kind not in ENGINES:
            return handler(data)  # the engine field names the problem
        options_model = ENGINES[kind].Options
        data = dict(data)
        section = data.pop(kind, None)
        if section is None:
            section = {}
        if not isinstance(section, dict):
            raise _error((kind,), f"the {kind} section is a mapping of option: value", section)
        core = set(cls.model_fields)
        flat = {k: data.pop(k) for k in list(data) if k in options_model.model_fields and k not in core}
        for k in flat:
            if k in section:
                raise _error((k,), f"is given both at the top level and under {kind}:; keep one", flat[k])
        for k, v in data.items():  # another engine's option or section: say whose, not just "unknown key"
            owner = k if k in ENGINES else next((n for n, c in ENGINES.items() if k in c.Options.model_fields), None)
            if k not in core and owner is not None:
                what = "the section" if owner == k else "an option"
                raise _error((k,), f"is {what} of engine {owner}, not of {kind}; remove it or set engine: {owner}", v)
        try:
            options = options_model.model_validate({**section, **flat})
        except ValidationError as e:  # located as the file wrote it: under the section, or at the top level
            raise _errors([(err["type"], ((kind,) if err["loc"][:1] and err["loc"][0] not in flat else ())
                            + tuple(err["loc"]), err["msg"], err.get("input")) for err in e.errors()]) from None
        return handler({**data, "engine_options": options})

    @model_serializer(mode="wrap")
    def _dump(self, handler):
        """The core fields, then the engine's section under its name (a dump validates again)."""
        out = handler(self)
        if self.engine_options is not None:
            out[self.engine] = self.engine_options.model_dump()
        return out

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
            seen = set()
            for c in v:
                if tuple(c) in seen:
                    raise ValueError(f"cell {list(c)} is listed twice; list each cell once")
                seen.add(tuple(c))
        return v

    @field_validator("output", "plan_timing")
    @classmethod
    def _path(cls, v, info):
        if info.field_name == "output" and not v.strip():
            raise ValueError("is empty; give the sweep's output folder, e.g. output: runs/h100-llama")
        if v != v.strip():
            raise ValueError("starts or ends with a space; remove it")
        return v

    @model_validator(mode="after")
    def _bounded(self):
        lens = self.batch_sizes + self.input_lens + self.output_lens + [x for c in (self.cells or []) for x in c]
        big = [x for x in lens + [self.repeats, self.warmup] if x > MAX_INT]
        if big:
            raise ValueError(f"{big[0]} is over {MAX_INT:.0e}; lengths, batch sizes and repeats are smaller")
        cells = len(self.cells) if self.cells is not None else len(self.input_lens) * len(self.output_lens)
        windows = len(self.models) * len(self.batch_sizes) * cells * self.repeats
        if windows > MAX_WINDOWS:
            raise ValueError(f"the sweep plans {windows:.3g} windows (models x batch_sizes x cells x repeats), over "
                             f"the limit of {MAX_WINDOWS:.0e}; fewer repeats or lengths, or split the sweep")
        return self

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
            try:
                engine_class(self.engine).check_model(self, name, geom, ckpt)
            except ParamsError as e:
                raise ValueError(str(e)) from None
            self._resolved.append((name, geom, ckpt))
        return self

    @property
    def grid(self) -> list[tuple[int, int]]:
        """(input_len, output_len) cells: the design's ``cells`` or the full grid."""
        if self.cells is not None:
            return [tuple(c) for c in self.cells]
        return [(i, o) for i in self.input_lens for o in self.output_lens]

    @property
    def max_len(self) -> int:
        if self.cells is None:
            return max(self.input_lens) + max(self.output_lens)
        return max(i + o for i, o in self.grid)

    @property
    def resolved(self) -> list[tuple[str, dict, str | None]]:
        return self._resolved


def load_measure_params(path: str | Path) -> MeasureParams:
    """Read and validate a sweep parameter file; nothing is loaded or written."""
    return validate(MeasureParams, read_yaml(path), str(path))
