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

from collections.abc import Mapping

import numpy as np
import pandas as pd
import xarray as xr
from tqdm.auto import tqdm

from .dataset import batch_sizes, measured_cells, model_names
from .errors import ParamsError
from .fit import ape_pct, fit_cells
from .model import BATCHED, SWEETSPOT, EnergyModel

__all__ = ["DECODE_TO_PREFILL_COST", "EXACT_SEARCH_LIMIT", "MAX_EXCHANGE_SWEEPS", "d_optimal", "evaluate_design", "plan_design"]

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
              model: EnergyModel = SWEETSPOT, prior=None, progress: bool = False) -> list[tuple[int, ...]]:
    """Choose ``budget`` cells from ``cells`` (D-optimal, corners first).

    Parameters
    ----------
    cells : sequence of mappings or tuples
        Candidate cells: mappings of the model's variables (``{"input_len": 64, "output_len": 16}``,
        :func:`energykit.model.cell`), or tuples of their values in ``model.variables`` order
        ((input_len, output_len), or (input_len, output_len, batch_size) for the batch-aware model).
        The chosen cells come back as tuples in that order.
    budget : int
        Cells to choose; at least the model's parameters (6 for the analytical model, 7 across batch sizes).
    prior_ratio : float
        Prior energy per output token relative to per input token, for the relative weights.
    model : EnergyModel
        :data:`~energykit.model.SWEETSPOT` or :data:`~energykit.model.BATCHED`.
    prior : callable, optional
        ``prior(cells) -> energy [J]`` per candidate row (a prior fit or the hardware model's prediction):
        weights the rows by relative error; replaces ``prior_ratio``.
    progress : bool
        Show progress bars (the search over many cells).

    Beyond :data:`EXACT_SEARCH_LIMIT` (candidates × budget) the same greedy and exchange steps are
    scored for every candidate at once, by the matrix determinant lemma and Fedorov's exchange
    formula, so that the time grows as candidates × budget × parameters², not as their square.
    """
    width = len(model.variables)
    rows = [tuple(c[v] for v in model.variables) if isinstance(c, Mapping) else c for c in cells]
    cand = np.asarray(sorted({tuple(int(x) for x in c[:width]) for c in rows}), dtype=int)
    n_par = len(model.names)
    if budget < n_par:
        raise ParamsError(f"budget {budget} is below the {n_par} parameters of the {model.kind} model; use >= {n_par}")
    if budget > len(cand):
        raise ParamsError(f"budget {budget} exceeds the {len(cand)} candidate cells; use at most {len(cand)}")
    X = _rows(cand, prior_ratio, model, prior)
    extreme = np.all((cand == cand.min(axis=0)) | (cand == cand.max(axis=0)), axis=1)
    chosen = [k for k in range(len(cand)) if extreme[k]][:budget]
    if len(cand) * budget > EXACT_SEARCH_LIMIT:  # many cells: the same criterion, by rank-one updates
        chosen = _d_optimal_updates(X, chosen, budget, progress)
        return sorted(tuple(int(x) for x in cand[k]) for k in chosen)
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


EXACT_SEARCH_LIMIT = 20_000
"""Candidates × budget up to which each step re-evaluates log det directly (the reference search)."""
MAX_EXCHANGE_SWEEPS = 50
"""Exchange passes over the chosen cells at most (each pass tries every candidate for every chosen cell)."""
_BLOCK = 20_000


def _logdet_plus(M: np.ndarray, X: np.ndarray) -> np.ndarray:
    """log det(M + x xᵀ) for every row x of ``X``, in blocks (a batched slogdet)."""
    out = np.empty(len(X))
    for lo in range(0, len(X), _BLOCK):
        x = X[lo:lo + _BLOCK]
        sign, val = np.linalg.slogdet(M[None] + x[:, :, None] * x[:, None, :])
        out[lo:lo + _BLOCK] = np.where(sign > 0, val, -np.inf)
    return out


def _d_optimal_updates(X: np.ndarray, chosen: list[int], budget: int, progress: bool) -> list[int]:
    """The greedy D-optimal search and its single exchanges, every candidate scored at once per step."""
    n, p = X.shape
    chosen = list(chosen)
    taken = np.zeros(n, dtype=bool)
    taken[chosen] = True
    M = X[chosen].T @ X[chosen] + 1e-12 * np.eye(p)
    with tqdm(total=budget, initial=len(chosen), desc="design: choosing cells", unit="cell",
              disable=not progress, leave=False) as bar:
        while len(chosen) < budget:
            if len(chosen) >= p:  # M has full rank: det(M + x xᵀ) = det(M) (1 + xᵀ M⁻¹ x), the same order
                score = np.einsum("ij,ij->i", X @ np.linalg.inv(M), X)
            else:
                score = _logdet_plus(M, X)
            score[taken] = -np.inf
            k = int(np.argmax(score))
            chosen.append(k)
            taken[k] = True
            M += np.outer(X[k], X[k])
            bar.update(1)
    with tqdm(total=MAX_EXCHANGE_SWEEPS, desc="design: exchanging cells", unit="pass", disable=not progress,
              leave=False) as bar:
        for _ in range(MAX_EXCHANGE_SWEEPS):
            improved = False
            for pos in range(len(chosen)):
                a = chosen[pos]
                Minv = np.linalg.inv(M)
                XM = X @ Minv
                d = np.einsum("ij,ij->i", XM, X)
                dak = XM @ X[a]
                ratio = (1.0 + d) * (1.0 - d[a]) + dak ** 2  # det after swapping a for k, over det now (Fedorov)
                ratio[taken] = -np.inf
                k = int(np.argmax(ratio))
                if ratio[k] > np.exp(1e-9):
                    chosen[pos] = k
                    taken[a], taken[k] = False, True
                    M += np.outer(X[k], X[k]) - np.outer(X[a], X[a])
                    improved = True
            bar.update(1)
            if not improved:
                break
    return chosen


def evaluate_design(ds: xr.Dataset, budget: int, loss: str = "l1", progress: bool = False) -> pd.DataFrame:
    """Per model: choose ``budget`` cells among the measured ones, fit on them, predict the rest.

    Returns one row per (model, batch_size) with the cells and ``heldout_mape_pct``, the MAPE on
    the measured cells that were not chosen (NaN when every cell was chosen), the model's
    ``variables`` (the order of each cell's values) and what the row holds ``fixed``. A model
    measured at several batch sizes gets one row (``fixed`` ``{}``, ``batch_size`` None) whose cells
    are (input_len, output_len, batch_size), chosen for the batch-aware model E(i, o, B).
    """
    rows = []
    for m in model_names(ds):
        if len(batch_sizes(ds, m)) > 1:
            rows.append(_evaluate_batched(ds, m, budget, loss, progress))
            continue
        for b in batch_sizes(ds, m):
            df = measured_cells(ds, m, b)
            if df.empty:
                continue
            cells = d_optimal(df[["input_len", "output_len"]].to_numpy(), budget, progress=progress)
            chosen = set(cells)
            mask = np.array([c in chosen for c in zip(df["input_len"], df["output_len"])], dtype=bool)
            fit = fit_cells(df["energy_j"][mask], df["input_len"][mask], df["output_len"][mask], loss=loss)
            held = df[~mask]
            heldout = (float(np.mean(ape_pct(fit.eval(input_len=held["input_len"].to_numpy(float),
                                                      output_len=held["output_len"].to_numpy(float)),
                                             held["energy_j"])))
                       if len(held) else float("nan"))
            rows.append({"model": str(m), "batch_size": int(b), "cells": [list(c) for c in cells],
                         "heldout_cells": int(len(held)), "heldout_mape_pct": heldout,
                         "params": {k: float(v.value) for k, v in fit.params.items()},
                         "variables": list(SWEETSPOT.variables), "fixed": {"batch_size": int(b)}})
    out = pd.DataFrame(rows)
    if len(out):
        out["batch_size"] = out["batch_size"].astype(object)  # None for a row across batch sizes, never 0
    return out


def _evaluate_batched(ds: xr.Dataset, model: str, budget: int, loss: str, progress: bool = False) -> dict:
    """Choose ``budget`` cells in (i, o, B) for the batch-aware model, fit on them, predict the rest."""
    df = measured_cells(ds, model)
    var = list(BATCHED.variables)
    cells = d_optimal(df[var].to_numpy(), budget, model=BATCHED, progress=progress)
    chosen = set(cells)
    mask = np.array([tuple(int(x) for x in c) in chosen for c in df[var].to_numpy()])
    fit = fit_cells(df["energy_j"][mask], df["input_len"][mask], df["output_len"][mask], kind="batched", loss=loss,
                    batch_size=df["batch_size"][mask])
    held = df[~mask]
    heldout = (float(np.mean(ape_pct(BATCHED.energy(*(held[v].to_numpy(float) for v in var),
                                                    **{k: p.value for k, p in fit.params.items()}), held["energy_j"])))
               if len(held) else float("nan"))
    return {"model": str(model), "batch_size": None, "cells": [list(c) for c in cells], "heldout_cells": int(len(held)),
            "heldout_mape_pct": heldout, "params": {k: float(v.value) for k, v in fit.params.items()},
            "variables": list(BATCHED.variables), "fixed": {}}


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
