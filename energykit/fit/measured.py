"""Fits of a measured Dataset: each declared model on the cells of each measured model.

A model is fitted on groups of cells that agree on every variable of the data that the model does
not take: the analytical model per batch size (``fixed = {"batch_size": 16}``), the batch-aware
model on every batch size at once (``fixed = {}``). The cells' variables are the declared
:data:`energykit.model.VARIABLES` the data carry (:func:`energykit.dataset.cell_variables`).
"""

from __future__ import annotations

from typing import Iterable

import numpy as np
import pandas as pd
import xarray as xr

from ..dataset import batch_sizes, cell_variables, measured_cells, model_names
from ..errors import FitError
from ..model import model_of
from .estimate import PER_BATCH, THETA, ape_pct, check_kind, cross_validate, fit_cells, leave_one_batch_out
from .estimate import predict_energy
from .result import FitSet, ModelFit

__all__ = ["fit_kind", "fit_dataset", "fit_batched", "pricing_fit", "validation_table"]


def _groups(cells: pd.DataFrame, kind: str) -> list[tuple[dict, pd.DataFrame]]:
    """Cells grouped by the data's variables that the ``kind`` model does not take: (fixed, cells) pairs."""
    variables = [v for v in cell_variables(cells) if v in cells.columns]
    em = model_of(kind)
    lacking = [v for v in em.variables if v not in variables]
    if lacking:
        raise FitError(f"the {kind} model needs {', '.join(lacking)}, which the data do not carry; "
                       f"the data's variables are {', '.join(variables)}")
    held = [v for v in variables if v not in em.variables]
    if not held:
        return [({}, cells)]
    return [(dict(zip(held, (k if isinstance(k, tuple) else (k,)))), g)
            for k, g in cells.groupby(held if len(held) > 1 else held[0], sort=True)]


def fit_kind(ds: xr.Dataset, model: str, kind: str, loss: str = "l1", cv_folds: int = 5,
             seed: int = 0) -> list[ModelFit]:
    """Fit the declared ``kind`` model on the measured cells of ``model``, one fit per group of cells
    that agree on the variables the model does not take (see the module's docstring)."""
    check_kind(kind, loss)
    em = model_of(kind)
    out = []
    for fixed, cells in _groups(measured_cells(ds, model), kind):
        fixed = {k: (int(v) if float(v).is_integer() else float(v)) for k, v in fixed.items()}
        if len(cells) < len(em.names):
            where = ", ".join(f"{k} {v}" for k, v in fixed.items())
            raise FitError(f"model {model!r}{' at ' + where if where else ''} has {len(cells)} measured cells; "
                           f"the {kind} model needs at least {len(em.names)} (measure more cells)")
        E = cells["energy_j"].to_numpy(dtype=float)
        vals = {v: cells[v].to_numpy(dtype=float) for v in em.variables}
        res = fit_cells(E, vals, kind=kind, loss=loss)
        cv = cross_validate(E, vals, kind=kind, loss=loss, k=cv_folds, seed=seed)
        out.append(ModelFit(model, kind, res, vals, E, cv, loss, fixed))
    return out


def fit_dataset(ds: xr.Dataset, models: Iterable[str] | None = None, loss: str = "l1", cv_folds: int = 5,
                seed: int = 0, kinds: Iterable[str] | None = None) -> FitSet:
    """Fit the declared models per measured model on repeat means.

    Parameters
    ----------
    ds : xarray.Dataset
        Measurements (see :mod:`energykit.dataset`).
    models : iterable of str, optional
        Models to fit; all by default.
    loss : {"l1", "l2"}
        See :func:`energykit.fit.fit_cells`.
    cv_folds : int
        Folds of the cross-validation over cells.
    seed : int
        Seed of the fold shuffle.
    kinds : iterable of str, optional
        Declared model kinds to fit (:data:`energykit.model.MODELS`), each at every value of the
        data's variables it does not take (:func:`fit_kind`). By default the analytical model and
        the linear baseline per batch size, and the batch-aware model of every model measured at
        several batch sizes; on data with another declared axis (say ``power_cap_w``), the first two
        at each of its values (in :attr:`FitSet.others`: name a model that takes the axis in ``kinds``).
    """
    check_kind("sweetspot", loss)
    names = model_names(ds)
    wanted = list(models) if models is not None else names
    for m in wanted:
        if m not in names:
            raise FitError(f"model {m!r} is not in the data; available: {', '.join(names)}")
    extra = [v for v in cell_variables(ds) if v not in ("input_len", "output_len", "batch_size")]
    if kinds is None and extra:  # another declared axis: the per-batch kinds are fitted at each of its values
        kinds = PER_BATCH
    if kinds is not None:
        every = [f for m in wanted for kind in kinds for f in fit_kind(ds, m, kind, loss, cv_folds, seed)]
        batch_cv = {f.model: leave_one_batch_out(f.energy_j, f.cells, loss=loss, kind=f.kind)
                    for f in every if f.kind == "batched" and not f.fixed}
        if not every:
            raise FitError("no cell with a positive measured energy; nothing to fit")
        return FitSet.of(every, loss, cv_folds, batch_cv)
    fits = {}
    for m in wanted:
        for b in batch_sizes(ds, m):
            cells = measured_cells(ds, m, int(b))
            if cells.empty:
                continue
            if len(cells) < len(THETA):
                raise FitError(
                    f"model {m!r} at batch size {int(b)} has {len(cells)} measured cells; the analytical model "
                    f"needs at least {len(THETA)} (measure more input/output lengths)"
                )
            E = cells["energy_j"].to_numpy()
            vals = {"input_len": cells["input_len"].to_numpy(), "output_len": cells["output_len"].to_numpy()}
            for kind in PER_BATCH:
                res = fit_cells(E, vals, kind=kind, loss=loss)
                cv = cross_validate(E, vals, kind=kind, loss=loss, k=cv_folds, seed=seed)
                fits[(m, int(b), kind)] = ModelFit(m, kind, res, vals, E, cv, loss, {"batch_size": int(b)})
    if not fits:
        raise FitError("no cell with a positive measured energy; nothing to fit")
    batched, batch_cv = {}, {}
    for m in wanted:
        if len({b for mm, b, _ in fits if mm == m}) > 1:
            batched[m], batch_cv[m] = fit_batched(ds, m, loss, cv_folds, seed)
    return FitSet(fits, loss, cv_folds, batched, batch_cv)


def fit_batched(ds: xr.Dataset, model: str, loss: str = "l1", cv_folds: int = 5, seed: int = 0):
    """Fit the batch-aware model E(i, o, B) to every measured cell of ``model`` across its batch sizes.

    Returns the fit (a :class:`ModelFit` of kind ``"batched"`` whose variables include
    ``batch_size``, ``fixed = {}``) and the leave-one-batch-size-out MAPE [%] per batch size
    (:func:`~energykit.fit.leave_one_batch_out`).
    """
    cells = measured_cells(ds, model)
    E = cells["energy_j"].to_numpy(dtype=float)
    vals = {c: cells[c].to_numpy(dtype=float) for c in ("input_len", "output_len", "batch_size")}
    res = fit_cells(E, vals, kind="batched", loss=loss)
    cv = cross_validate(E, vals, kind="batched", loss=loss, k=cv_folds, seed=seed)
    fit = ModelFit(model, "batched", res, vals, E, cv, loss, {})
    return fit, leave_one_batch_out(E, vals, loss=loss)


def pricing_fit(ds: xr.Dataset, model: str, loss: str = "l1", cv_folds: int = 5, kind: str | None = None) -> ModelFit:
    """The fit that prices ``model``: the batch-aware model when it was measured at several batch
    sizes, else the analytical model at its one batch size (what ``energykit predict DATA`` and the
    price card use); ``kind`` names another declared model, which must give one fit."""
    if kind is not None:
        found = fit_kind(ds, model, kind, loss, cv_folds)
        if len(found) != 1:
            raise FitError(f"the {kind} model gives {len(found)} fits of {model!r} (one per "
                           f"{', '.join(found[0].fixed) if found else 'group'}); measure one value of those variables")
        return found[0]
    fits = fit_dataset(ds, models=[model], loss=loss, cv_folds=cv_folds)
    if model in fits.batched:
        return fits.batched[model]
    sizes = sorted(b for m, b in fits.keys if m == model)
    if len(sizes) != 1:
        raise FitError(f"model {model!r} has no fit at any batch size")
    return fits.get(model, sizes[0])


def validation_table(ds: xr.Dataset, cells, models: Iterable[str] | None = None, loss: str = "l1") -> pd.DataFrame:
    """Fit each model without the validation ``cells`` [(input_len, output_len)] and predict them.

    One row per (model, batch_size): the cells fitted and validated, and the analytical model's
    MAPE and max APE on the validation cells, which the fit never saw (the check of a design that
    keeps a few cells back, e.g. ``params/measure_paper_families.yaml``).
    """
    keep = {(int(i), int(o)) for i, o in cells}
    rows = []
    for m in (list(models) if models is not None else model_names(ds)):
        for b in batch_sizes(ds, m):
            c = measured_cells(ds, m, int(b))
            held = np.array([(int(i), int(o)) in keep for i, o in zip(c["input_len"], c["output_len"])], dtype=bool)
            if not held.any():
                raise FitError(f"none of the validation cells {sorted(keep)} was measured for {m!r}; "
                               "name cells of the dataset as INPUT:OUTPUT")
            fitted = c[~held]
            res = fit_cells(fitted["energy_j"], fitted["input_len"], fitted["output_len"], loss=loss)
            params = {n: float(v.value) for n, v in res.params.items()}
            ape = ape_pct(predict_energy("sweetspot", params, c["input_len"][held].to_numpy(),
                                         c["output_len"][held].to_numpy()), c["energy_j"][held].to_numpy())
            rows.append({"model": m, "batch_size": int(b), "cells_fitted": int((~held).sum()),
                         "cells_validated": int(held.sum()), "validation_mape_pct": float(np.mean(ape)),
                         "validation_max_ape_pct": float(np.max(ape))})
    return pd.DataFrame(rows)
