"""The window plan of a sweep and its shards: every window once, the order a run measures them, the shard a process runs.

:func:`all_windows` is the one enumeration of a sweep's windows: the sweep runner (:func:`run_order`), the
shards, the merge's and status's completeness report all take it from here. A window is keyed by
:func:`window_key`: ``(model, <the cell's variables>, repeat)``, the cell's variables being the energy
model's declared ones (:data:`energykit.model.VARIABLES`) in the dataset's dimension order
(:data:`CELL_VARIABLES`: batch_size, input_len, output_len), which is also the order of a window-log line's
and a ``shard.json`` window's fields.

A sweep too big for one GPU is split into ``N`` shards that together hold every
(model, batch_size, input_len, output_len, repeat) window exactly once. Shards are grouped by
model (each shard loads few models) and balanced by estimated cost: tokens moved per window,
``B·(i + o)``, or measured seconds from an earlier sweep. Each shard measures into its own
folder (``OUTPUT/shard-K-of-N``: its own crash-safe log, lock, fingerprint and idle baseline);
:func:`energykit.merge.merge` joins the folders into one dataset with one record per (cell, repeat).
"""

from __future__ import annotations

import os
import random
from dataclasses import dataclass
from pathlib import Path

from .dataset import load, measured_cells
from .errors import ParamsError
from .params import MeasureParams
from .schema import DIMS

__all__ = ["CELL_VARIABLES", "window_key", "cell_of", "sweep_cells", "all_windows", "run_order", "Shard", "plan_shards", "timing_from", "shard_of", "shard_from_env", "shard_folder"]


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


CELL_VARIABLES = tuple(d for d in DIMS if d not in ("model", "repeat"))
"""The variables naming a cell, in the dataset's dimension order (a window key's middle fields): the energy
model's declared variables (:data:`energykit.model.VARIABLES`, which ``tests/test_shards.py`` checks), read
from :mod:`energykit.schema` so that planning a sweep does not load the fitting stack."""


def window_key(rec: dict) -> tuple:
    """``(model, batch_size, input_len, output_len, repeat)`` of a window-log record (or any mapping of them).

    >>> window_key({"model": "m", "input_len": 64, "output_len": 8, "batch_size": 1, "repeat": 0, "energy_j": 3.0})
    ('m', 1, 64, 8, 0)
    """
    return (rec["model"], *(rec[v] for v in CELL_VARIABLES), rec["repeat"])


def cell_of(window: tuple) -> dict:
    """The cell of a window key, as a mapping of the model's variables.

    >>> cell_of(("m", 4, 64, 8, 0))
    {'batch_size': 4, 'input_len': 64, 'output_len': 8}
    """
    return dict(zip(CELL_VARIABLES, window[1:-1]))


def sweep_cells(params: MeasureParams) -> list[dict]:
    """The cells a sweep measures per model, each a mapping of the model's variables, in a fixed order."""
    return [{"batch_size": b, "input_len": i, "output_len": o} for b in params.batch_sizes for (i, o) in params.grid]


def all_windows(params: MeasureParams) -> list[tuple]:
    """Every window key (:func:`window_key`) of a sweep, in a fixed order: models, cells, repeats."""
    return [window_key({"model": name, **cell, "repeat": r}) for name, _, _ in params.resolved
            for cell in sweep_cells(params) for r in range(params.repeats)]


def run_order(params: MeasureParams, done: set = frozenset(), by_batch: bool = False) -> list[tuple]:
    """The windows of :func:`all_windows` still to measure (not in ``done``), shuffled within each model.

    The shuffle is seeded by ``params.seed``. ``by_batch``: the engine loads one executor per batch size
    (``Engine.loads_per_batch_size``), so each batch size's windows stay together.
    """
    rng = random.Random(params.seed)
    todo = []
    for name, _, _ in params.resolved:
        windows = [w for w in all_windows(params) if w[0] == name]
        rng.shuffle(windows)
        if by_batch:
            order = list(dict.fromkeys(cell_of(w)["batch_size"] for w in windows))
            windows.sort(key=lambda w: order.index(cell_of(w)["batch_size"]))
        todo += [w for w in windows if w not in done]
    return todo


def _cost(window: tuple, seconds: dict | None) -> float:
    if seconds:
        return float(seconds.get(window[:4], seconds.get("mean", 1.0)))
    cell = cell_of(window)
    return float(cell["batch_size"] * (cell["input_len"] + cell["output_len"]))


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
    ordered = sorted(windows)
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
