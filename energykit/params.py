"""Validated parameter sets (``params/*.yaml``): sweeps (:class:`MeasureParams`) and reports
(:class:`ReportParams`).

Validation happens before any work: an unknown key, a wrong type or a bad value stops with one
line that names the file, the key and the fix.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal, Union

import json

import yaml
from pydantic import (BaseModel, ConfigDict, Field, PrivateAttr, StrictInt, ValidationError, field_validator,
                      model_serializer, model_validator)
from pydantic_core import InitErrorDetails, PydanticCustomError

from .engines import ENGINES, engine_class
from .engines.serve import ServeOptions
from .errors import ParamsError
from .iotools import MAX_INT, check_text
from .state import file_sha256
from .presets import resolve

__all__ = ["MAX_PARAMS_BYTES", "MAX_PARAMS_NODES", "MAX_WINDOWS", "read_yaml", "one_line", "validate", "ReportParams", "load_report_params", "notebook_parameters",
           "MeasureParams", "load_measure_params", "BUILD_FILE", "default_out", "input_files", "input_hashes",
           "stale_reasons", "ReplayParams", "load_replay_params"]


MAX_PARAMS_BYTES = 1 << 20
"""Largest params file [bytes] (1 MiB): the shipped ones are under 2 KiB."""
MAX_PARAMS_NODES = 100_000
"""Most values a params file may hold once its YAML aliases are expanded (a "billion laughs" stops here)."""
MAX_WINDOWS = 1_000_000
"""Most windows one sweep may plan (models x batch sizes x cells x repeats); split a bigger sweep."""


def _walk(data, source: str) -> None:
    """Count the values of ``data`` as if its aliases were expanded (stopping at the limit) and refuse
    strings with control characters."""
    stack, seen = [data], 0
    while stack:
        v = stack.pop()
        seen += 1
        if seen > MAX_PARAMS_NODES:
            raise ParamsError(f"{source}: more than {MAX_PARAMS_NODES} values once YAML aliases (&/*) are expanded; "
                              "write the values out, without nested aliases")
        if isinstance(v, dict):
            stack += list(v.keys()) + list(v.values())
        elif isinstance(v, (list, tuple)):
            stack += list(v)
        elif isinstance(v, str):
            try:
                check_text(v, "value")
            except ParamsError as e:
                raise ParamsError(f"{source}: {e}") from None
        elif not isinstance(v, (int, float, bool)) and v is not None:
            raise ParamsError(f"{source}: a value of type {type(v).__name__} ({str(v)[:40]!r}); "
                              "params hold text, numbers, true/false, lists and mappings only")


class _UniqueKeyLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that refuses a key written twice in one mapping (PyYAML keeps the last silently)."""

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            if isinstance(key_node, yaml.ScalarNode) and key_node.tag != "tag:yaml.org,2002:merge":
                if key_node.value in seen:
                    raise yaml.constructor.ConstructorError(None, None, f"key {key_node.value[:60]!r} is written twice; "
                                                            "keep one", key_node.start_mark)
                seen.add(key_node.value)
        return super().construct_mapping(node, deep=deep)


def read_yaml(path: str | Path) -> dict:
    """Read a YAML mapping; a missing, oversized, non-UTF-8 or non-mapping file is a :class:`ParamsError`.

    The file is bounded: at most :data:`MAX_PARAMS_BYTES`, and :data:`MAX_PARAMS_NODES` values once
    aliases are expanded; no string may hold a control character.
    """
    path = Path(path)
    check_text(str(path), "params path")
    if not path.exists():
        raise ParamsError(f"{path}: no such params file; check the path")
    if not path.is_file():
        raise ParamsError(f"{path}: not a file; give a YAML params file")
    if path.stat().st_size > MAX_PARAMS_BYTES:
        raise ParamsError(f"{path}: {path.stat().st_size} bytes is over the {MAX_PARAMS_BYTES} bytes a params file "
                          "may have; check that this is the right file")
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError:
        raise ParamsError(f"{path}: not UTF-8 text (UTF-16 or binary?); save it as UTF-8") from None
    try:
        data = yaml.load(text, Loader=_UniqueKeyLoader)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        problem = str(getattr(e, "problem", None) or e).splitlines()[0][:120]
        raise ParamsError(f"{path}:{where} is not valid YAML ({problem}); fix the syntax") from None
    except (RecursionError, ValueError, TypeError, OverflowError) as e:  # deep nesting, odd scalars (!!binary, dates)
        raise ParamsError(f"{path}: cannot be read as params ({type(e).__name__}: {str(e)[:80]}); "
                          "use plain YAML values") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ParamsError(f"{path}: expected a mapping of key: value, got {type(data).__name__}")
    _walk(data, str(path))
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
    got = repr(e.get("input"))
    got = got if len(got) <= 80 else got[:80] + "…"
    return f"{source}: {loc[:80]}: {msg} (got {got})"


def validate(model: type[BaseModel], data: dict, source: str) -> BaseModel:
    try:
        return model.model_validate(data)
    except ValidationError as e:
        raise ParamsError(one_line(e, source)) from None


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


class ReplayParams(BaseModel):
    """Parameters of a trace replay against a server (``energykit replay PARAMS.yaml``).

    The requests of ``trace`` (arrival time, input length, output length) are sent to the server of the
    ``serve:`` section at their arrival times — the trace's times × ``time_scale``, or evenly at
    ``rate_rps`` — with exact lengths checked as the ``serve`` engine checks them, while the meter
    measures back-to-back windows of ``window_s`` over the whole replay.
    """

    model_config = ConfigDict(extra="forbid")

    trace: str
    """CSV of requests: Azure's (``TIMESTAMP``, ``ContextTokens``, ``GeneratedTokens``) or
    ``arrival_s``, ``input_len``, ``output_len``."""
    serve: ServeOptions
    model: Union[str, dict[str, Any]]
    """The served model's geometry (a preset, a checkpoint folder or config.json, or an inline mapping):
    its ``vocab_size`` bounds the random prompt token ids."""
    time_scale: float | None = Field(None, gt=0, le=1e6, allow_inf_nan=False)
    """Multiplies the trace's arrival times (0.5 replays twice as fast); default 1 unless ``rate_rps``."""
    rate_rps: float | None = Field(None, gt=0, le=1e6, allow_inf_nan=False)
    """Send requests evenly at this rate [requests/s] instead of at the trace's times."""
    max_requests: StrictInt = Field(100, ge=1, le=1_000_000)
    """The trace's first this many requests."""
    window_s: float = Field(10.0, gt=0, le=86400, allow_inf_nan=False)
    """Length of each meter window [s]; the windows cover the whole replay back to back."""
    meter: Literal["nvml", "none", "process_cpu"] = "nvml"
    cpu_core_power_w: float = Field(10.0, gt=0, lt=1e4, allow_inf_nan=False)
    """``meter: process_cpu`` only: the stated power of one busy core [W] (a proxy, not a measurement)."""
    idle_s: float = Field(5.0, ge=0, le=3600, allow_inf_nan=False)
    """Seconds of idle power measured before the replay."""
    seed: StrictInt = Field(0, ge=0, lt=2**32)
    output: str

    @model_validator(mode="after")
    def _checks(self):
        if self.time_scale is not None and self.rate_rps is not None:
            raise ValueError("give time_scale or rate_rps, not both")
        check_text(self.trace, "trace")
        if not self.output.strip() or self.output != self.output.strip():
            raise ValueError(f"output {self.output!r} must be a folder path without surrounding spaces")
        try:
            self._geometry = resolve(self.model)
        except ParamsError as e:
            raise ValueError(str(e)) from None
        return self

    _geometry: tuple = PrivateAttr(default=None)

    @property
    def geometry(self) -> tuple[str, dict, str | None]:
        """(name, geometry, checkpoint) of ``model``."""
        return self._geometry


def load_replay_params(path: str | Path) -> ReplayParams:
    """Read and validate a replay parameter file; nothing is sent or written."""
    return validate(ReplayParams, read_yaml(path), str(path))
