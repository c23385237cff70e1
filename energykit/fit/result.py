"""What a fit gives back: :class:`ModelFit` (one declared model fitted on cells) and :class:`FitSet`.

A :class:`ModelFit` keeps its independent variables as a named mapping, ``cells`` (as lmfit's
``ModelResult.userkws`` does): one array per variable of its model, one value per fitted cell.
``fixed`` says what the fit holds constant, e.g. ``{"batch_size": 16}`` for the analytical model
fitted at one batch size, ``{}`` for the batch-aware fit whose variables include ``batch_size``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import lmfit
import numpy as np
import pandas as pd
import xarray as xr

from ..errors import FitError
from ..intervals import LEVEL, estimate_interval, identified
from ..model import cell, cell_key, model_of
from .estimate import DRAWS, THETA, THETA_UNITS, ape_pct, cells_of, predict_energy, r2, wild_bootstrap

__all__ = ["ModelFit", "SavedResult", "FitSet"]


@dataclass
class ModelFit:
    """One declared model fitted on the cells of one measured model.

    ``cells`` maps each variable of the model (``energy_model.variables``) to its value at every
    fitted cell; ``fixed`` maps the variables held constant to their value (``{"batch_size": 16}``
    for a per-batch fit, ``{}`` when every variable varies).
    """

    model: str
    kind: str
    result: lmfit.model.ModelResult
    cells: dict
    energy_j: np.ndarray
    cv_ape_pct: np.ndarray = field(repr=False)
    loss: str = "l1"
    fixed: dict = field(default_factory=dict)
    _draws: dict = field(default_factory=dict, repr=False, compare=False)

    def __post_init__(self):
        self.cells = {v: np.asarray(self.cells[v], dtype=float) for v in self.energy_model.variables}
        self.fixed = {k: (int(v) if float(v).is_integer() else float(v)) for k, v in dict(self.fixed).items()}
        clash = sorted(set(self.fixed) & set(self.cells))
        if clash:
            raise FitError(f"{', '.join(clash)} cannot be both a variable of the {self.kind} fit and held fixed")

    @property
    def energy_model(self):
        """The declared model this fit estimates (:mod:`energykit.model`)."""
        return model_of(self.kind)

    @property
    def variables(self) -> tuple[str, ...]:
        """Names of the fit's independent variables (its model's)."""
        return self.energy_model.variables

    @property
    def input_len(self) -> np.ndarray:
        return self.cells["input_len"]

    @property
    def output_len(self) -> np.ndarray:
        return self.cells["output_len"]

    @property
    def batch_size(self) -> int | None:
        """The batch size the fit holds fixed [requests]; None when it is a variable of the model."""
        return self.fixed.get("batch_size")

    @property
    def batch_sizes(self) -> list[int]:
        """Batch sizes of the fitted cells [requests]."""
        if "batch_size" in self.cells:
            return sorted({int(b) for b in self.cells["batch_size"]})
        return [int(self.fixed["batch_size"])] if "batch_size" in self.fixed else []

    def cell_values(self, variable: str) -> np.ndarray:
        """Each fitted cell's value of ``variable``: a variable of the fit, or one it holds fixed."""
        if variable in self.cells:
            return self.cells[variable]
        if variable in self.fixed:
            return np.full(len(self.energy_j), float(self.fixed[variable]))
        raise FitError(f"the {self.kind} fit of {self.model} has no variable {variable!r}")

    def _at(self, *cells, **variables) -> dict:
        """The fit's variables at the cells asked (as :func:`energykit.model.cell`; fixed ones ignored)."""
        try:
            taken = self.energy_model.take(cell(*cells, **variables))
        except ValueError as e:
            raise FitError(str(e)) from None
        return {k: np.asarray(v, dtype=float) if isinstance(v, (list, tuple)) else v for k, v in taken.items()}

    def draws(self, n: int = 200, seed: int = 0) -> dict[str, np.ndarray]:
        """Wild-bootstrap draws of the parameters: ``{name: array of shape (n, 1)}`` (cached per n, seed).

        The trailing axis of length 1 lets draws broadcast against arrays of lengths.
        """
        if (n, seed) not in self._draws:
            names = self.energy_model.names
            X = self.energy_model.design_matrix(**self.cells)
            coef = np.array([self.params[name] for name in names])
            out = wild_bootstrap(X, self.energy_j, coef, self.loss, n, seed)
            self._draws[(n, seed)] = {name: out[:, [j]] for j, name in enumerate(names)}
        return self._draws[(n, seed)]

    def predict_interval(self, cells, output_len=None, n: int = 200, level: float = LEVEL, **variables):
        """Predicted energy [J] at cells with its interval: (estimate, low, high).

        ``cells`` is a mapping of the fit's variables (``{"input_len": i, "output_len": o, ...}``), or
        the input lengths with ``output_len`` beside them; other variables by name (``batch_size=B``).
        """
        given = dict(cells) if isinstance(cells, Mapping) else {"input_len": cells, "output_len": output_len}
        given.update({k: v for k, v in variables.items() if v is not None})
        vals = cells_of(self.energy_model, {k: v for k, v in given.items() if v is not None})
        vals = {k: np.atleast_1d(v) for k, v in vals.items()}
        samples = predict_energy(self.kind, self.draws(n), {k: v[None, :] for k, v in vals.items()})
        est = self.predict(vals)
        return estimate_interval(est, samples, level)

    def at_bound_share(self, n: int = 200) -> dict[str, float]:
        """Share of bootstrap draws in which each coefficient sits on its θ ≥ 0 bound."""
        return {name: float(np.mean(d[:, 0] <= 0.0)) for name, d in self.draws(n).items()}

    def identified(self, n: int = 200) -> dict[str, bool]:
        """Whether the cells identify each coefficient: off its θ ≥ 0 bound in the fit and in most draws.

        A coefficient fitted at zero, or at zero in at least
        :data:`~energykit.intervals.IDENTIFIED_SHARE` of the draws, is "not identified by these
        cells": the data cannot tell it from zero, and what derives from it (``o*`` from θ4) has no
        meaningful value.
        """
        return {name: identified(self.params[name], d[:, 0]) for name, d in self.draws(n).items()}

    @property
    def params(self) -> dict[str, float]:
        """Fitted parameters by name (θ in J/token^k)."""
        return {n: float(p.value) for n, p in self.result.params.items()}

    @property
    def stderr(self) -> dict[str, float]:
        """Standard errors of the parameters (NaN where lmfit could not estimate them, or at the θ ≥ 0 bound)."""
        out = {}
        for n, p in self.result.params.items():
            at_bound = p.value <= p.min and not p.stderr
            out[n] = float("nan") if p.stderr is None or at_bound else float(p.stderr)
        return out

    def predict(self, *cells, **variables):
        """Energy of one request batch [J] at cells (numpy or xarray): a mapping, or values in
        :data:`~energykit.model.VARIABLES` order, or by name; variables the fit holds fixed are ignored."""
        return self.energy_model.energy(**self._at(*cells, **{k: v for k, v in variables.items() if v is not None}),
                                        **self.params)

    def o_star(self, *cells, **variables):
        """``o*`` [tokens] at the other variables (``input_len``, and ``batch_size`` for the batch-aware fit)."""
        if cells and isinstance(cells[0], Mapping):
            asked = {**cells[0], **variables}
        else:  # o_star(i) or o_star(i, B): every variable but the output length, in order
            rest = [v for v in cell_key() if v != "output_len"]
            asked = {**dict(zip(rest, cells)), **variables}
        rest = {v: asked[v] for v in self.variables if v != "output_len" and asked.get(v) is not None}
        return self.energy_model.o_star(self.params, **rest)

    @property
    def ape_pct(self) -> np.ndarray:
        return ape_pct(self.predict(self.cells), self.energy_j)

    def batch_mape_pct(self) -> dict[int, float]:
        """MAPE [%] of the fitted cells at each batch size."""
        ape = self.ape_pct
        b = self.cell_values("batch_size")
        return {int(k): float(np.mean(ape[b == k])) for k in sorted(set(b))}

    @property
    def mape_pct(self) -> float:
        return float(np.mean(self.ape_pct))

    @property
    def max_ape_pct(self) -> float:
        return float(np.max(self.ape_pct))

    @property
    def r2(self) -> float:
        return r2(self.predict(self.cells), self.energy_j)

    @property
    def cv_mape_pct(self) -> float:
        return float(np.nanmean(self.cv_ape_pct)) if np.isfinite(self.cv_ape_pct).any() else float("nan")


class SavedResult:
    """What a stored fit keeps of lmfit's ``ModelResult``: the parameters with bounds and errors."""

    def __init__(self, params: lmfit.Parameters):
        self.params = params


class FitSet:
    """Every fit of a dataset.

    ``fits`` holds the fits at one batch size by ``(model, batch_size, kind)``; ``batched`` the
    batch-aware fit of each model measured at several batch sizes; ``others`` any other fit (a
    declared model whose fixed variables are not just the batch size). :meth:`every` lists them all.
    """

    def __init__(self, fits: dict[tuple[str, int, str], ModelFit], loss: str, cv_folds: int,
                 batched: dict[str, ModelFit] | None = None, batch_cv: dict[str, dict[int, float]] | None = None,
                 others: list[ModelFit] | None = None):
        self.fits = fits
        self.loss = loss
        self.cv_folds = cv_folds
        self.batched = batched or {}
        """Per model measured at several batch sizes: its fit of the batch-aware model E(i, o, B)."""
        self.batch_cv = batch_cv or {}
        """Per model in :attr:`batched`: leave-one-batch-size-out MAPE [%] by held-out batch size."""
        self.others = list(others or [])

    @classmethod
    def of(cls, every, loss: str, cv_folds: int, batch_cv: dict | None = None) -> "FitSet":
        """A FitSet sorting fits into :attr:`fits`, :attr:`batched` and :attr:`others` by what they hold fixed."""
        fits, batched, others = {}, {}, []
        for f in every:
            if set(f.fixed) == {"batch_size"}:
                fits[(f.model, int(f.fixed["batch_size"]), f.kind)] = f
            elif f.kind == "batched" and not f.fixed:
                batched[f.model] = f
            else:
                others.append(f)
        return cls(fits, loss, cv_folds, batched, batch_cv, others)

    def every(self) -> list[ModelFit]:
        """Every fit: per batch size (sorted), batch-aware, others."""
        return [self.fits[k] for k in sorted(self.fits)] + [self.batched[m] for m in sorted(self.batched)] + self.others

    def __getitem__(self, key) -> ModelFit:
        return self.fits[key]

    @property
    def keys(self) -> list[tuple[str, int]]:
        """(model, batch_size) pairs that were fitted, in order."""
        return sorted({(m, b) for m, b, _ in self.fits})

    @property
    def paired_keys(self) -> list[tuple[str, int]]:
        """(model, batch_size) pairs fitted by both the analytical model and the baseline, in order."""
        return [(m, b) for m, b in self.keys if (m, b, "sweetspot") in self.fits and (m, b, "linear") in self.fits]

    def unpaired(self) -> list[ModelFit]:
        """Fits outside the analytical/baseline pairs and the batch-aware fits: another declared model at
        one batch size, and :attr:`others`."""
        paired = set(self.paired_keys)
        return [f for (m, b, _), f in sorted(self.fits.items()) if (m, b) not in paired
                or f.kind not in ("sweetspot", "linear")] + self.others

    def get(self, model: str, batch_size: int | None = None, kind: str = "sweetspot") -> ModelFit:
        """The fit of one model; ``batch_size`` may be omitted when the model has only one."""
        if batch_size is None:
            sizes = sorted(b for m, b, k in self.fits if m == model and k == kind) or \
                sorted(b for m, b in self.keys if m == model)
            if not sizes:
                found = [f for f in self.every() if f.model == model and f.kind == kind]
                if len(found) == 1:
                    return found[0]
                raise FitError(f"model {model!r} was not fitted; fitted models: {sorted({m for m, _ in self.keys})}")
            batch_size = sizes[0]
        try:
            return self.fits[(model, int(batch_size), kind)]
        except KeyError:
            raise FitError(f"no {kind} fit for model {model!r} at batch size {batch_size}") from None

    def table(self) -> pd.DataFrame:
        """Tidy table: one row per (model, batch_size, kind) with θ, standard errors and accuracy."""
        rows = []
        for (m, b, kind), f in sorted(self.fits.items()):
            row = {"model": m, "batch_size": b, "kind": kind, "n_cells": len(f.energy_j)}
            row.update(
                mape_pct=f.mape_pct, max_ape_pct=f.max_ape_pct, r2=f.r2, cv_mape_pct=f.cv_mape_pct
            )
            for n, v in f.params.items():
                row[n] = v
                row[f"{n}_stderr"] = f.stderr[n]
            rows.append(row)
        return pd.DataFrame(rows)

    def summary(self) -> pd.DataFrame:
        """One row per (model, batch_size): analytical vs baseline accuracy side by side."""
        rows = []
        for m, b in self.paired_keys:
            s, lin = self.fits[(m, b, "sweetspot")], self.fits[(m, b, "linear")]
            rows.append({"model": m, "batch_size": b, "cells": len(s.energy_j), "mape_pct": s.mape_pct,
                         "max_ape_pct": s.max_ape_pct, "cv_mape_pct": s.cv_mape_pct, "r2": s.r2,
                         "baseline_mape_pct": lin.mape_pct, "baseline_cv_mape_pct": lin.cv_mape_pct,
                         "baseline_r2": lin.r2})
        return pd.DataFrame(rows)

    def save(self, path, n_draws: int = DRAWS, source: dict | None = None) -> Path:
        """Store every fit, bootstrap draws included, as a versioned NetCDF artifact; see
        :func:`energykit.fit.load_fits`. ``source`` (e.g. ``{"data": "data/x.nc"}``) is kept in the file's attributes.
        """
        return store.save_fits(self, path, n_draws, source)

    def to_xarray(self) -> xr.Dataset:
        """θ and their standard errors as a Dataset over (model, batch_size, param)."""
        df = self.table().query("kind == 'sweetspot'")
        value = df.set_index(["model", "batch_size"])[list(THETA)]
        err = df.set_index(["model", "batch_size"])[[f"{t}_stderr" for t in THETA]]
        err.columns = list(THETA)
        ds = xr.Dataset(
            {
                "value": value.stack().rename_axis(["model", "batch_size", "param"]).to_xarray(),
                "stderr": err.stack().rename_axis(["model", "batch_size", "param"]).to_xarray(),
            }
        )
        ds["units"] = ("param", [THETA_UNITS[p] for p in ds["param"].values])
        ds.attrs["loss"] = self.loss
        return ds


from . import store  # noqa: E402  the file format's home; it reads files back into the classes above
