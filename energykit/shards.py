"""Shards of one sweep: a deterministic plan, the shard a process runs, and the merge of their outputs.

A sweep too big for one GPU is split into ``N`` shards that together hold every
(model, batch_size, input_len, output_len, repeat) window exactly once. Shards are grouped by
model (each shard loads few models) and balanced by estimated cost: tokens moved per window,
``B·(i + o)``, or measured seconds from an earlier sweep. Each shard measures into its own
folder (``OUTPUT/shard-K-of-N``: its own crash-safe log, lock, fingerprint and idle baseline);
:func:`energykit.sweep.merge` joins the folders into one dataset with one record per (cell, repeat).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from pathlib import Path

from .dataset import load, measured_cells
from .errors import ParamsError
from .params import MeasureParams

__all__ = ["Shard", "all_windows", "plan_shards", "timing_from", "shard_of", "shard_from_env", "shard_folder"]


@dataclass(frozen=True)
class Shard:
    """Shard ``index`` of ``count``: its windows and their estimated cost."""

    index: int
    count: int
    windows: tuple
    cost: float

    @property
    def models(self) -> list[str]:
        return sorted({w[0] for w in self.windows})


def all_windows(params: MeasureParams) -> list[tuple]:
    """Every (model, batch_size, input_len, output_len, repeat) of a sweep, in a fixed order."""
    return [(name, b, i, o, r) for name, _, _ in params.resolved for b in params.batch_sizes
            for (i, o) in params.grid for r in range(params.repeats)]


def _cost(window: tuple, seconds: dict | None) -> float:
    _, b, i, o, _ = window
    if seconds:
        return float(seconds.get(window[:4], seconds.get("mean", 1.0)))
    return float(b * (i + o))


def plan_shards(params: MeasureParams, count: int, seconds: dict | None = None) -> list[Shard]:
    """Split a sweep into ``count`` disjoint shards that cover it, grouped by model, balanced by cost.

    Parameters
    ----------
    params : MeasureParams
        The sweep.
    count : int
        Number of shards (GPUs).
    seconds : dict, optional
        Measured seconds per (model, batch_size, input_len, output_len) from an earlier sweep;
        without it a window costs its tokens moved, ``B·(i + o)``.

    The plan depends only on the parameters: the same params give the same shards. With
    ``plan_timing`` in the params, an earlier sweep's measured seconds per cell weigh the windows.
    """
    if seconds is None and params.plan_timing:
        seconds = timing_from(params.plan_timing)
    if count < 1:
        raise ParamsError(f"shards must be a positive integer; got {count}")
    windows = all_windows(params)
    if count > len(windows):
        raise ParamsError(f"{count} shards for {len(windows)} windows; use at most {len(windows)} shards")
    # models one after the other, each model's windows in a fixed order; the run is cut where the
    # running cost crosses k/N of the total: shards hold contiguous runs (few models each) and
    # differ in cost by at most one window
    ordered = sorted(windows, key=lambda w: (w[0], w[1], w[2], w[3], w[4]))
    costs = [_cost(w, seconds) for w in ordered]
    cuts = _balanced_cuts(costs, count)
    return [Shard(k, count, tuple(ordered[a:b]), float(sum(costs[a:b]))) for k, (a, b) in enumerate(zip(cuts, cuts[1:]))]


def timing_from(path: str | Path) -> dict:
    """Seconds per window by (model, batch_size, input_len, output_len) from an earlier sweep's data."""
    cells = measured_cells(load(path))
    seconds = {(str(r.model), int(r.batch_size), int(r.input_len), int(r.output_len)): float(r.duration_s)
               for r in cells.itertuples()}
    seconds["mean"] = float(cells["duration_s"].mean()) if len(cells) else 1.0
    return seconds


def _balanced_cuts(costs: list[float], pieces: int) -> list[int]:
    """Indices cutting ``costs`` into ``pieces`` non-empty contiguous runs of about equal sum."""
    total = sum(costs)
    cuts, acc = [0], 0.0
    for j, c in enumerate(costs):
        k = len(cuts)  # the cut being looked for
        left = len(costs) - (j + 1)
        if k < pieces and j + 1 > cuts[-1] and (acc + c / 2 >= total * k / pieces or left == pieces - k):
            cuts.append(j if acc + c / 2 >= total * k / pieces and j > cuts[-1] else j + 1)
        acc += c
    while len(cuts) < pieces:  # too few windows to cut by cost: one window each at the end
        cuts.append(cuts[-1] + 1)
    cuts.append(len(costs))
    return cuts


def shard_of(params: MeasureParams, index: int, count: int) -> Shard:
    """Shard ``index`` (0-based) of ``count``."""
    if not 0 <= index < count:
        raise ParamsError(f"shard {index}/{count}: the index must be in 0..{count - 1}")
    return plan_shards(params, count)[index]


def shard_from_env(text: str | None = None) -> tuple[int, int] | None:
    """``(K, N)`` from ``--shard K/N``, else from Slurm or Kubernetes indexed-job variables, else None."""
    if text:
        try:
            k, n = (int(x) for x in text.split("/"))
        except ValueError:
            raise ParamsError(f"--shard {text!r}: use K/N, e.g. --shard 0/4 (shard 0 of 4)") from None
        return k, n
    env = os.environ
    if "SLURM_ARRAY_TASK_ID" in env and "SLURM_ARRAY_TASK_COUNT" in env:
        lo = _env_int("SLURM_ARRAY_TASK_MIN", "0")
        return _env_int("SLURM_ARRAY_TASK_ID") - lo, _env_int("SLURM_ARRAY_TASK_COUNT")
    if "JOB_COMPLETION_INDEX" in env:
        n = env.get("ENERGYKIT_SHARDS")
        if not n:
            raise ParamsError("JOB_COMPLETION_INDEX is set but not the shard count; set ENERGYKIT_SHARDS to the "
                              "job's completions, or pass --shard K/N")
        return _env_int("JOB_COMPLETION_INDEX"), _env_int("ENERGYKIT_SHARDS")
    return None


def _env_int(name: str, default: str | None = None) -> int:
    text = os.environ.get(name, default)
    try:
        return int(text)
    except (TypeError, ValueError):
        raise ParamsError(f"environment variable {name}={str(text)[:40]!r} is not an integer; unset it, "
                          "or pass --shard K/N") from None


def shard_folder(output: str | Path, index: int, count: int) -> Path:
    """The output folder of one shard."""
    return Path(output) / f"shard-{index}-of-{count}"
