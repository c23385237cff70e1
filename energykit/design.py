"""Designed sparse grids: which k cells to measure so that the analytical model can be fitted.

The analytical model is linear in θ, so the information a set of cells carries about θ is
:math:`X^\\top W X`, with rows :math:`x = (i^2, i o, i, o^2, o, 1)` and weights :math:`W` for the
relative-error fit. :func:`d_optimal` starts from the grid's four corners and adds, greedily, the
cell that most increases :math:`\\log\\det(X^\\top W X)` (a D-optimal design), then improves the set
by single exchanges. Weights come from a prior energy: :math:`1/E_\\text{prior}^2`, with
:math:`E_\\text{prior} \\propto i + 8 o` by default (prefill costs far less per token than decode),
because the fit minimises relative error.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import xarray as xr

from .dataset import batch_sizes, measured_cells, model_names
from .errors import ParamsError
from .fitting import ape_pct, fit_cells
from .model import BATCHED, SWEETSPOT, EnergyModel

__all__ = ["DECODE_TO_PREFILL_COST", "d_optimal", "evaluate_design", "plan_design"]

DECODE_TO_PREFILL_COST = 8.0


def _rows(cells: np.ndarray, prior_ratio: float, model: EnergyModel = SWEETSPOT, prior=None) -> np.ndarray:
    """Weighted design rows of the model at the cells (columns of (i, o[, B]), each scaled to its largest value).

    ``prior``: a function of the cells giving each one's expected energy [J] (a prior fit, the hardware
    model); else :math:`E \\propto i + \\text{prior\\_ratio}\\cdot o`."""
    scaled = {v: cells[:, k].astype(float) / cells[:, k].astype(float).max() for k, v in enumerate(model.variables)}
    x = model.design_matrix(**scaled)
    if prior is not None:
        energy = np.asarray(prior(cells), dtype=float)
        if energy.shape != (len(cells),) or not np.all(np.isfinite(energy) & (energy > 0)):
            raise ParamsError("the prior energy must be finite and positive at every candidate cell; check the prior "
                              "data (or plan without --prior)")
        return x / (energy / energy.max())[:, None]
    energy = scaled["input_len"] + prior_ratio * scaled["output_len"]
    if model.has_batch:
        energy = energy * scaled["batch_size"]  # prefill and KV reads, most of a batch's energy, scale with B
    return x / energy[:, None]


def _logdet(X: np.ndarray) -> float:
    sign, val = np.linalg.slogdet(X.T @ X + 1e-12 * np.eye(X.shape[1]))
    return val if sign > 0 else -np.inf


def d_optimal(cells, budget: int, prior_ratio: float = DECODE_TO_PREFILL_COST,
              model: EnergyModel = SWEETSPOT, prior=None) -> list[tuple[int, ...]]:
    """Choose ``budget`` cells from ``cells`` (D-optimal, corners first).

    Parameters
    ----------
    cells : sequence of (int, int) or (int, int, int)
        Candidate cells [tokens]: (input_len, output_len), or (input_len, output_len, batch_size)
        for the batch-aware model.
    budget : int
        Cells to choose; at least the model's parameters (6 for the analytical model, 7 across batch sizes).
    prior_ratio : float
        Prior energy per output token relative to per input token, for the relative weights.
    model : EnergyModel
        :data:`~energykit.model.SWEETSPOT` or :data:`~energykit.model.BATCHED`.
    prior : callable, optional
        ``prior(cells) -> energy [J]`` per candidate row (a prior fit or the hardware model's prediction):
        weights the rows by relative error; replaces ``prior_ratio``.
    """
    width = len(model.variables)
    cand = np.asarray(sorted({tuple(int(x) for x in c[:width]) for c in cells}), dtype=int)
    n_par = len(model.names)
    if budget < n_par:
        raise ParamsError(f"budget {budget} is below the {n_par} parameters of the {model.kind} model; use >= {n_par}")
    if budget > len(cand):
        raise ParamsError(f"budget {budget} exceeds the {len(cand)} candidate cells; use at most {len(cand)}")
    X = _rows(cand, prior_ratio, model, prior)
    extreme = np.all((cand == cand.min(axis=0)) | (cand == cand.max(axis=0)), axis=1)
    chosen = [k for k in range(len(cand)) if extreme[k]][:budget]
    while len(chosen) < budget:
        rest = [k for k in range(len(cand)) if k not in chosen]
        chosen.append(max(rest, key=lambda k: _logdet(X[chosen + [k]])))
    improved = True
    while improved:  # Fedorov-style single exchanges
        improved = False
        best = _logdet(X[chosen])
        for a in range(len(chosen)):
            for k in range(len(cand)):
                if k in chosen:
                    continue
                trial = chosen[:a] + [k] + chosen[a + 1:]
                val = _logdet(X[trial])
                if val > best + 1e-9:
                    chosen, best, improved = trial, val, True
    return sorted(tuple(int(x) for x in cand[k]) for k in chosen)


def evaluate_design(ds: xr.Dataset, budget: int, loss: str = "l1") -> pd.DataFrame:
    """Per model: choose ``budget`` cells among the measured ones, fit on them, predict the rest.

    Returns one row per (model, batch_size) with the cells and ``heldout_mape_pct``, the MAPE on
    the measured cells that were not chosen (NaN when every cell was chosen). A model measured at
    several batch sizes gets one row (``batch_size`` 0) whose cells are (input_len, output_len,
    batch_size), chosen for the batch-aware model E(i, o, B).
    """
    rows = []
    for m in model_names(ds):
        if len(batch_sizes(ds, m)) > 1:
            rows.append(_evaluate_batched(ds, m, budget, loss))
            continue
        for b in batch_sizes(ds, m):
            df = measured_cells(ds, m, b)
            if df.empty:
                continue
            cells = d_optimal(df[["input_len", "output_len"]].to_numpy(), budget)
            key = list(zip(df["input_len"], df["output_len"]))
            mask = np.array([c in set(cells) for c in key])
            fit = fit_cells(df["energy_j"][mask], df["input_len"][mask], df["output_len"][mask], loss=loss)
            held = df[~mask]
            heldout = (float(np.mean(ape_pct(fit.eval(input_len=held["input_len"].to_numpy(float),
                                                      output_len=held["output_len"].to_numpy(float)),
                                             held["energy_j"])))
                       if len(held) else float("nan"))
            rows.append({"model": str(m), "batch_size": int(b), "cells": [list(c) for c in cells],
                         "heldout_cells": int(len(held)), "heldout_mape_pct": heldout,
                         "params": {k: float(v.value) for k, v in fit.params.items()}})
    return pd.DataFrame(rows)


def _evaluate_batched(ds: xr.Dataset, model: str, budget: int, loss: str) -> dict:
    """Choose ``budget`` cells in (i, o, B) for the batch-aware model, fit on them, predict the rest."""
    df = measured_cells(ds, model)
    var = ["input_len", "output_len", "batch_size"]
    cells = d_optimal(df[var].to_numpy(), budget, model=BATCHED)
    chosen = set(cells)
    mask = np.array([tuple(int(x) for x in c) in chosen for c in df[var].to_numpy()])
    fit = fit_cells(df["energy_j"][mask], df["input_len"][mask], df["output_len"][mask], kind="batched", loss=loss,
                    batch_size=df["batch_size"][mask])
    held = df[~mask]
    heldout = (float(np.mean(ape_pct(BATCHED.energy(*(held[v].to_numpy(float) for v in var),
                                                    **{k: p.value for k, p in fit.params.items()}), held["energy_j"])))
               if len(held) else float("nan"))
    return {"model": str(model), "batch_size": 0, "cells": [list(c) for c in cells], "heldout_cells": int(len(held)),
            "heldout_mape_pct": heldout, "params": {k: float(v.value) for k, v in fit.params.items()}}


def plan_design(candidates, budget: int, priors: dict | None = None) -> list[tuple[int, int]]:
    """Cells of a sweep chosen before anything is measured: D-optimal over ``candidates`` (input, output) pairs.

    ``priors``: ``{model: prior(cells) -> energy [J]}`` for the sweep's models (a prior fit of measured data,
    or the hardware model's prediction from each geometry); one design serves every model of the sweep, so
    the rows are weighted by the geometric mean of each model's relative prior energy. Without priors, the
    default :math:`E \\propto i + 8 o`.

    >>> plan_design([(i, o) for i in (64, 512, 4096) for o in (64, 512, 4096)], 6)[:4]
    [(64, 64), (64, 512), (64, 4096), (512, 64)]
    """
    if not priors:
        return d_optimal(candidates, budget)

    def combined(cells):
        rel = [np.asarray(f(cells), dtype=float) for f in priors.values()]
        return np.exp(np.mean([np.log(r / r.max()) for r in rel], axis=0))

    return d_optimal(candidates, budget, prior=combined)
