"""Parameters of a trace replay against a server (``energykit replay PARAMS.yaml``): :class:`ReplayParams`."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, StrictInt, model_validator

from ..engines.serve import ServeOptions
from ..errors import ParamsError
from ..iotools import check_text
from ..presets import resolve
from .read import read_yaml, validate

__all__ = ["ReplayParams", "load_replay_params"]


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
