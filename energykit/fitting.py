"""Fit the energy models declared in :mod:`energykit.model` with lmfit.

Per (model, batch_size): the SweetSpot analytical model and the linear baseline; per model measured
at several batch sizes, also the batch-aware model E(i, o, B). The analytical model (Pizzini Cavagna et al., arXiv:2602.05695; the derivation is in docs/model.md) collects the
Transformer's prefill and decode work by powers of the input length ``i`` and output length ``o``:

.. math::

    E(i, o) = \\theta_1 i^2 + \\theta_2 i o + \\theta_3 i + \\theta_4 o^2 + \\theta_5 o + \\theta_0,
    \\qquad \\theta_k \\ge 0

The baseline is :math:`E = a i + b o + c`. Both are linear in their parameters with non-negativity
bounds, so :meth:`SweetSpotModel.guess` solves the weighted problem exactly with non-negative least
squares and lmfit then refines it and supplies standard errors.

Residuals are weighted by ``1 / E`` so that the fit minimises *relative* error. With
``loss="l1"`` (the default) the weights are iteratively re-weighted so that the fit minimises the
sum of absolute relative errors: short windows carry NVML counter-step errors of up to one 100 ms
counter step (5–40 % seen on an H200), a heavy-tailed noise that a squared loss lets dominate.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

import lmfit
import numpy as np
import pandas as pd
import xarray as xr

from . import __version__
from .dataset import batch_sizes, measured_cells, model_names, model_value
from .errors import DataError, FitError
from .intervals import IDENTIFIED_SHARE, LEVEL, UNBOUNDED_FACTOR, around, bounded_high, identified, interval
from .intervals import estimate_interval
from .iotools import check_netcdf_header, resolve
from .model import BATCHED, SWEETSPOT, VARIABLES, LinearEnergyModel, model_of, nnls_weighted
from .model import LINEAR as LINEAR_MODEL
from .state import atomic_write_netcdf, file_sha256

__all__ = ["THETA", "LINEAR", "THETA_UNITS", "THETA_MEANING", "LOSSES", "sweetspot_energy", "o_star",
           "linear_energy", "design_matrix", "irls", "LEVEL", "wild_bootstrap", "interval", "around",
           "SweetSpotModel", "LinearBaselineModel", "MODELS", "column_rank", "design_rank", "fit_cells", "ape_pct",
           "mape_pct", "r2", "kfold_indices", "cross_validate", "predict_energy", "ModelFit", "FitSet",
           "fit_dataset", "fit_batched", "leave_one_batch_out", "BatchedModel", "PER_BATCH", "BATCH_THETA",
           "validation_table", "load_fits", "SavedResult", "FITS_VERSION", "DRAWS", "IDENTIFIED_SHARE", "UNBOUNDED_FACTOR",
           "identified", "bounded_high", "pricing_fit", "price_card", "PRICE_CARD", "PRICE_CARD_VERSION"]

THETA = SWEETSPOT.names
LINEAR = LINEAR_MODEL.names
BATCH_THETA = BATCHED.names
THETA_UNITS = {**SWEETSPOT.units, **LINEAR_MODEL.units}
THETA_MEANING = SWEETSPOT.meanings
LOSSES = ("l1", "l2")
DRAWS = 200
"""Bootstrap draws stored with a fit (what the reports' intervals use)."""


def sweetspot_energy(input_len, output_len, theta1=0.0, theta2=0.0, theta3=0.0, theta4=0.0, theta5=0.0, theta0=0.0):
    """Energy of one request batch from the SweetSpot analytical model.

    .. math::

        E = \\theta_1 i^2 + \\theta_2 i o + \\theta_3 i + \\theta_4 o^2 + \\theta_5 o + \\theta_0

    Parameters
    ----------
    input_len : array_like
        Input (prompt) length ``i`` [tokens]. Scalars, numpy arrays and xarray objects broadcast.
    output_len : array_like
        Output length ``o`` [tokens].
    theta1, theta2, theta4 : float
        Coefficients of ``i²``, ``i·o`` and ``o²`` [J/token²].
    theta3, theta5 : float
        Coefficients of ``i`` and ``o`` [J/token].
    theta0 : float
        Fixed energy per request batch [J].

    Returns
    -------
    array_like
        Energy [J].

    References
    ----------
    Pizzini Cavagna et al., "Determining Energy Efficiency Sweet Spots in Production LLM
    Inference", arXiv:2602.05695 (ICPE 2026).

    Examples
    --------
    >>> float(sweetspot_energy(100, 10, theta1=1e-4, theta3=0.05, theta5=2.0, theta0=10.0))
    36.0
    """
    return SWEETSPOT.energy(input_len, output_len, theta1=theta1, theta2=theta2, theta3=theta3, theta4=theta4,
                            theta5=theta5, theta0=theta0)


def o_star(params: dict, input_len):
    """Output length that minimises energy per output token at a fixed input length [tokens].

    .. math::

        o^*(i) = \\sqrt{\\frac{\\theta_1 i^2 + \\theta_3 i + \\theta_0}{\\theta_4}}

    Short outputs cannot amortise the prefill and the fixed cost, long outputs pay growing KV-cache
    reads (arXiv:2602.05695).

    Parameters
    ----------
    params : dict
        θ (``theta0`` … ``theta5``): scalars, or arrays that broadcast against ``input_len``
        (e.g. bootstrap draws of shape (n, 1)).
    input_len : array_like
        Input length ``i`` [tokens].

    Returns
    -------
    array_like
        ``o*`` [tokens]; ``inf`` where ``θ4 = 0`` (efficiency then rises with output length).

    Examples
    --------
    >>> float(o_star({"theta1": 0.0, "theta3": 0.0, "theta0": 100.0, "theta4": 1.0}, 64))
    10.0
    >>> o_star({"theta1": 0.0, "theta3": 0.0, "theta0": 100.0, "theta4": np.array([[1.0], [0.0]])}, [64, 128])
    array([[10., 10.],
           [inf, inf]])
    """
    return SWEETSPOT.o_star(params, input_len)


def linear_energy(input_len, output_len, a=0.0, b=0.0, c=0.0):
    """Linear-in-lengths baseline :math:`E = a i + b o + c` [J] (``a``, ``b`` in J/token, ``c`` in J).

    Examples
    --------
    >>> float(linear_energy(100, 10, a=0.1, b=2.0, c=5.0))
    35.0
    """
    return LINEAR_MODEL.energy(input_len, output_len, a=a, b=b, c=c)


def design_matrix(kind: str, *variables, **named) -> np.ndarray:
    """Columns of the ``kind`` model's terms at the given cells (see :meth:`energykit.model.EnergyModel.design_matrix`)."""
    return model_of(kind).design_matrix(*variables, **named)


def irls(X: np.ndarray, E: np.ndarray, loss: str = "l1", max_iter: int = 50) -> tuple[np.ndarray, np.ndarray]:
    """Non-negative relative-error fit: (θ, final weights).

    ``l2`` weights residuals by 1/E; ``l1`` re-weights iteratively by 1/(E·sqrt|r|) so that the
    sum of absolute relative errors is minimised.
    """
    w = 1.0 / E
    coef = nnls_weighted(X, E, w)
    if loss == "l1":
        for _ in range(max_iter):
            r = np.abs(X @ coef - E) / E
            w = 1.0 / (E * np.sqrt(np.maximum(r, 1e-4)))
            new = nnls_weighted(X, E, w)
            change = np.max(np.abs(new - coef) / (np.abs(coef) + 1e-12))
            coef = new
            if change < 1e-6:
                break
    return coef, w


def wild_bootstrap(X: np.ndarray, observed: np.ndarray, coef: np.ndarray, loss: str, n: int, seed: int = 0) -> np.ndarray:
    r"""Refitted coefficients (n, k) of a non-negative linear relative-error fit ``X @ coef ≈ observed``.

    Each draw perturbs every cell by its own fitted residual times a random sign (Rademacher
    weights; Wu 1986, Liu 1988) on the log scale, :math:`E^* = \hat E\,(E / \hat E)^{v}`, and refits
    with the same loss. The spread carries the measurement noise and what the model does not
    explain, works with one repeat, and respects θ ≥ 0. To first order this is
    :math:`\hat E (1 + v r)` with the relative residual ``r``; on the log scale a cell measured at
    twice its fit is mirrored to half its fit, never to zero or below, so that large residuals
    (noisy short windows) cannot drive a draw, and the interval's lower bound, to ~0.
    """
    rng = np.random.default_rng(seed)
    e_hat = X @ coef
    log_ratio = np.log(np.maximum(observed, 1e-300) / np.maximum(e_hat, 1e-300))
    out = np.empty((n, len(coef)))
    for k in range(n):
        e_star = e_hat * np.exp(rng.choice([-1.0, 1.0], size=len(log_ratio)) * log_ratio)
        out[k] = irls(X, e_star, loss)[0]
    return out


class SweetSpotModel(LinearEnergyModel):
    """lmfit Model of :data:`energykit.model.SWEETSPOT` with all θ ≥ 0 and an exact NNLS ``guess()``."""

    def __init__(self, **kws):
        super().__init__(SWEETSPOT, **kws)


class LinearBaselineModel(LinearEnergyModel):
    """lmfit Model of :data:`energykit.model.LINEAR` with a, b, c ≥ 0."""

    def __init__(self, **kws):
        super().__init__(LINEAR_MODEL, **kws)


class BatchedModel(LinearEnergyModel):
    """lmfit Model of :data:`energykit.model.BATCHED`, E(i, o, B), with all θ ≥ 0."""

    def __init__(self, **kws):
        super().__init__(BATCHED, **kws)


MODELS = {"sweetspot": SweetSpotModel, "linear": LinearBaselineModel, "batched": BatchedModel}
PER_BATCH = ("sweetspot", "linear")
"""Kinds fitted at each (model, batch_size)."""


def _check(kind: str, loss: str) -> None:
    if kind not in MODELS:
        raise FitError(f"unknown model kind {kind!r}; use one of {', '.join(MODELS)}")
    if loss not in LOSSES:
        raise FitError(f"unknown loss {loss!r}; use 'l1' (robust relative) or 'l2' (relative least squares)")


def column_rank(X: np.ndarray) -> int:
    """Rank of a feature matrix with each column scaled to its largest magnitude (numerical rank)."""
    scale = np.abs(X).max(axis=0)
    scale[scale == 0] = 1.0
    return int(np.linalg.matrix_rank(X / scale, tol=1e-9))


def design_rank(input_len, output_len, kind: str = "sweetspot") -> int:
    """Rank of the model's design matrix on these cells (columns scaled): 6 identifies the SweetSpot θ."""
    return column_rank(design_matrix(kind, input_len, output_len))


def fit_cells(energy_j, input_len, output_len, kind: str = "sweetspot", loss: str = "l1", max_iter: int = 50,
              require_rank: bool = True, batch_size=None):
    """Fit one model to cells of (input_len, output_len, energy_j).

    Parameters
    ----------
    energy_j : array_like
        Mean energy per cell [J]; all finite and positive.
    input_len, output_len : array_like
        Cell lengths [tokens].
    kind : {"sweetspot", "linear", "batched"}
        The analytical model, the linear baseline, or the analytical model across batch sizes.
    loss : {"l1", "l2"}
        Minimise absolute relative errors (iteratively re-weighted) or squared relative errors.
    max_iter : int
        Re-weighting iterations for ``loss="l1"``.
    require_rank : bool
        Refuse cells that cannot identify every coefficient (e.g. two input lengths for the
        analytical model's i² and i terms). Cross-validation folds pass False.
    batch_size : array_like, optional
        Batch size of each cell [requests]; needed by the ``batched`` model only.

    Returns
    -------
    lmfit.model.ModelResult
        The final weighted fit; ``result.params`` hold θ with standard errors.
    """
    _check(kind, loss)
    E = np.asarray(energy_j, dtype=float)
    i = np.asarray(input_len, dtype=float)
    o = np.asarray(output_len, dtype=float)
    model = MODELS[kind]()
    cells = _variables(model.energy_model, i, o, batch_size)
    n_par = len(model.names)
    if not (np.all(np.isfinite(E)) and np.all(E > 0)):
        raise FitError("energies to fit must be finite and positive; drop cells with NaN or zero energy")
    if len(E) < n_par:
        raise FitError(f"{kind} model has {n_par} parameters but only {len(E)} cells were given; measure more cells")
    X = model.energy_model.design_matrix(**cells)
    rank = column_rank(X)
    if require_rank and rank < n_par:
        more = " at 2 or more batch sizes" if model.energy_model.has_batch else ""
        raise FitError(
            f"these {len(E)} cells ({len(set(i))} input and {len(set(o))} output lengths) cannot identify the {n_par} "
            f"coefficients of the {kind} model (design rank {rank}); measure at least 3 input and 3 output lengths{more}")
    coef, w = irls(X, E, loss, max_iter)
    params = model.make_params(**{n: float(v) for n, v in zip(model.names, coef)})
    return model.fit(E, params, weights=w, **cells)


def _variables(energy_model, input_len, output_len, batch_size=None) -> dict:
    """The model's variables by name (``batch_size`` only for a batch-aware model)."""
    out = {"input_len": input_len, "output_len": output_len}
    if energy_model.has_batch:
        if batch_size is None:
            raise FitError(f"the {energy_model.kind} model needs the batch size of every cell")
        out["batch_size"] = np.broadcast_to(np.asarray(batch_size, dtype=float), np.shape(input_len))
    return out


def ape_pct(pred, obs) -> np.ndarray:
    """Absolute percentage errors ``100·|pred − obs| / obs`` [%]."""
    obs = np.asarray(obs, dtype=float)
    return 100.0 * np.abs(np.asarray(pred, dtype=float) - obs) / obs


def mape_pct(pred, obs) -> float:
    """Mean absolute percentage error [%].

    Examples
    --------
    >>> mape_pct([110, 90], [100, 100])
    10.0
    """
    return float(np.mean(ape_pct(pred, obs)))


def r2(pred, obs) -> float:
    """Coefficient of determination of ``pred`` against ``obs``."""
    obs = np.asarray(obs, dtype=float)
    ss_res = np.sum((np.asarray(pred, dtype=float) - obs) ** 2)
    ss_tot = np.sum((obs - obs.mean()) ** 2)
    return float(1.0 - ss_res / ss_tot) if ss_tot > 0 else float("nan")


def kfold_indices(n: int, k: int, seed: int = 0) -> list[np.ndarray]:
    """Shuffled k-fold split of ``range(n)`` into ``min(k, n)`` test folds."""
    if k < 2:
        raise FitError(f"cv_folds must be at least 2; got {k}")
    rng = np.random.default_rng(seed)
    return [f for f in np.array_split(rng.permutation(n), min(k, n)) if len(f)]


def cross_validate(energy_j, input_len, output_len, kind="sweetspot", loss="l1", k=5, seed=0,
                   batch_size=None) -> np.ndarray:
    """k-fold cross-validated absolute percentage error of every cell [%].

    Each cell is predicted by a fit on the folds that do not contain it. Returns one APE per cell
    (NaN where a training set had fewer cells than parameters).
    """
    E = np.asarray(energy_j, dtype=float)
    i = np.asarray(input_len, dtype=float)
    o = np.asarray(output_len, dtype=float)
    b = None if batch_size is None else np.broadcast_to(np.asarray(batch_size, dtype=float), i.shape)
    n_par = len(MODELS[kind]().names)
    out = np.full(len(E), np.nan)
    for test in kfold_indices(len(E), k, seed):
        train = np.setdiff1d(np.arange(len(E)), test)
        if len(train) < n_par:
            continue
        res = fit_cells(E[train], i[train], o[train], kind=kind, loss=loss, require_rank=False,
                        batch_size=None if b is None else b[train])
        out[test] = ape_pct(res.eval(**_variables(res.model.energy_model, i[test], o[test],
                                                   None if b is None else b[test])), E[test])
    return out


def leave_one_batch_out(energy_j, input_len, output_len, batch_size, loss="l1") -> dict[int, float]:
    """MAPE [%] of each batch size's cells predicted by the batch-aware model fitted on the other batch sizes.

    NaN where the other batch sizes cannot identify the model (fewer than two of them, or too few cells).
    """
    E, i, o, b = (np.asarray(x, dtype=float) for x in (energy_j, input_len, output_len, batch_size))
    out = {}
    for held in sorted(set(b)):
        test = b == held
        try:
            res = fit_cells(E[~test], i[~test], o[~test], kind="batched", loss=loss, batch_size=b[~test])
        except FitError:
            out[int(held)] = float("nan")
            continue
        out[int(held)] = mape_pct(BATCHED.energy(i[test], o[test], b[test], **_values(res.params)), E[test])
    return out


def _values(params) -> dict[str, float]:
    return {n: float(p.value) for n, p in params.items()}


def predict_energy(kind: str, params: dict, input_len, output_len, batch_size=None):
    """Energy [J] of the ``kind`` model; params may be arrays (e.g. bootstrap draws) that broadcast.

    ``batch_size`` [requests] is a variable of the batch-aware model only.
    """
    m = model_of(kind)
    vals = {"input_len": input_len, "output_len": output_len}
    if m.has_batch:
        if batch_size is None:
            raise FitError(f"the {kind} model needs a batch size")
        vals["batch_size"] = batch_size
    return m.energy(**vals, **params)


@dataclass
class ModelFit:
    """One fitted model (analytical or baseline) for one (model, batch_size)."""

    model: str
    batch_size: int
    kind: str
    result: lmfit.model.ModelResult
    input_len: np.ndarray
    output_len: np.ndarray
    energy_j: np.ndarray
    cv_ape_pct: np.ndarray = field(repr=False)
    loss: str = "l1"
    cell_batch_size: np.ndarray | None = field(default=None, repr=False)
    """Batch size of each cell [requests] (the batch-aware fit only; the others are at ``batch_size``)."""
    _draws: dict = field(default_factory=dict, repr=False, compare=False)

    @property
    def energy_model(self):
        """The declared model this fit estimates (:mod:`energykit.model`)."""
        return model_of(self.kind)

    @property
    def batch_sizes(self) -> list[int]:
        """Batch sizes of the fitted cells [requests]."""
        return sorted({int(b) for b in self.cell_batch_size}) if self.cell_batch_size is not None else [self.batch_size]

    def _cells(self) -> dict:
        return _variables(self.energy_model, self.input_len, self.output_len, self.cell_batch_size)

    def draws(self, n: int = 200, seed: int = 0) -> dict[str, np.ndarray]:
        """Wild-bootstrap draws of the parameters: ``{name: array of shape (n, 1)}`` (cached per n, seed).

        The trailing axis of length 1 lets draws broadcast against arrays of lengths.
        """
        if (n, seed) not in self._draws:
            names = self.energy_model.names
            X = self.energy_model.design_matrix(**self._cells())
            coef = np.array([self.params[name] for name in names])
            out = wild_bootstrap(X, self.energy_j, coef, self.loss, n, seed)
            self._draws[(n, seed)] = {name: out[:, [j]] for j, name in enumerate(names)}
        return self._draws[(n, seed)]

    def predict_interval(self, input_len, output_len, n: int = 200, level: float = LEVEL, batch_size=None):
        """Predicted energy [J] at the given lengths (and batch size, for the batch-aware fit) with its
        interval: (estimate, low, high)."""
        i = np.atleast_1d(np.asarray(input_len, dtype=float))
        o = np.atleast_1d(np.asarray(output_len, dtype=float))
        b = None if batch_size is None else np.broadcast_to(np.asarray(batch_size, dtype=float), i.shape)
        samples = predict_energy(self.kind, self.draws(n), i[None, :], o[None, :], None if b is None else b[None, :])
        est = self.predict(i, o, b)
        return estimate_interval(est, samples, level)

    def at_bound_share(self, n: int = 200) -> dict[str, float]:
        """Share of bootstrap draws in which each coefficient sits on its θ ≥ 0 bound."""
        return {name: float(np.mean(d[:, 0] <= 0.0)) for name, d in self.draws(n).items()}

    def identified(self, n: int = 200) -> dict[str, bool]:
        """Whether the cells identify each coefficient: off its θ ≥ 0 bound in the fit and in most draws.

        A coefficient fitted at zero, or at zero in at least :data:`IDENTIFIED_SHARE` of the draws, is
        "not identified by these cells": the data cannot tell it from zero (the bootstrap, centred
        on a fit at the bound, puts about half its draws there), and what derives from it
        (``o*`` from θ4) has no meaningful value.
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

    def predict(self, input_len, output_len, batch_size=None):
        """Energy of one request batch [J] at the given lengths (numpy or xarray); ``batch_size``
        [requests] for the batch-aware fit."""
        return predict_energy(self.kind, self.params, input_len, output_len, batch_size)

    def o_star(self, input_len, batch_size=None):
        """``o*`` [tokens] at the input length (and batch size, for the batch-aware fit)."""
        extra = {"batch_size": batch_size} if self.energy_model.has_batch else {}
        return self.energy_model.o_star(self.params, input_len, **extra)

    @property
    def ape_pct(self) -> np.ndarray:
        return ape_pct(self.predict(self.input_len, self.output_len, self.cell_batch_size), self.energy_j)

    def batch_mape_pct(self) -> dict[int, float]:
        """MAPE [%] of the fitted cells at each batch size."""
        ape = self.ape_pct
        b = self.cell_batch_size if self.cell_batch_size is not None else np.full(len(ape), self.batch_size)
        return {int(k): float(np.mean(ape[b == k])) for k in sorted(set(b))}

    @property
    def mape_pct(self) -> float:
        return float(np.mean(self.ape_pct))

    @property
    def max_ape_pct(self) -> float:
        return float(np.max(self.ape_pct))

    @property
    def r2(self) -> float:
        return r2(self.predict(self.input_len, self.output_len, self.cell_batch_size), self.energy_j)

    @property
    def cv_mape_pct(self) -> float:
        return float(np.nanmean(self.cv_ape_pct)) if np.isfinite(self.cv_ape_pct).any() else float("nan")


class SavedResult:
    """What a stored fit keeps of lmfit's ``ModelResult``: the parameters with bounds and errors."""

    def __init__(self, params: lmfit.Parameters):
        self.params = params


def _cells(ds: xr.Dataset, model: str, batch_size: int) -> pd.DataFrame:
    return measured_cells(ds, model, batch_size)[["input_len", "output_len", "energy_j", "duration_s"]]


class FitSet:
    """Fits of the analytical model and the baseline for every (model, batch_size) of a dataset."""

    def __init__(self, fits: dict[tuple[str, int, str], ModelFit], loss: str, cv_folds: int,
                 batched: dict[str, ModelFit] | None = None, batch_cv: dict[str, dict[int, float]] | None = None):
        self.fits = fits
        self.loss = loss
        self.cv_folds = cv_folds
        self.batched = batched or {}
        """Per model measured at several batch sizes: its fit of the batch-aware model E(i, o, B)."""
        self.batch_cv = batch_cv or {}
        """Per model in :attr:`batched`: leave-one-batch-size-out MAPE [%] by held-out batch size."""

    def __getitem__(self, key) -> ModelFit:
        return self.fits[key]

    @property
    def keys(self) -> list[tuple[str, int]]:
        """(model, batch_size) pairs that were fitted, in order."""
        return sorted({(m, b) for m, b, _ in self.fits})

    def get(self, model: str, batch_size: int | None = None, kind: str = "sweetspot") -> ModelFit:
        """The fit of one model; ``batch_size`` may be omitted when the model has only one."""
        if batch_size is None:
            sizes = sorted(b for m, b in self.keys if m == model)
            if not sizes:
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
        for m, b in self.keys:
            s, lin = self.fits[(m, b, "sweetspot")], self.fits[(m, b, "linear")]
            rows.append(
                {
                    "model": m,
                    "batch_size": b,
                    "cells": len(s.energy_j),
                    "mape_pct": s.mape_pct,
                    "max_ape_pct": s.max_ape_pct,
                    "cv_mape_pct": s.cv_mape_pct,
                    "r2": s.r2,
                    "baseline_mape_pct": lin.mape_pct,
                    "baseline_cv_mape_pct": lin.cv_mape_pct,
                    "baseline_r2": lin.r2,
                }
            )
        return pd.DataFrame(rows)

    def save(self, path, n_draws: int = DRAWS, source: dict | None = None) -> Path:
        """Store every fit, bootstrap draws included, as a versioned NetCDF artifact; see :func:`load_fits`.

        ``source`` (e.g. ``{"data": "data/x.nc"}``) is kept in the file's attributes.
        """
        return _save(self, path, n_draws, source)

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
            c = _cells(ds, m, int(b))
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


FITS_FORMAT = "energykit-fits"
FITS_VERSION = 1
"""Version of the stored fit artifact (:meth:`FitSet.save`); a reader refuses other versions."""


def _save(fitset: "FitSet", path, n_draws: int = DRAWS, source: dict | None = None) -> Path:
    """Write every fit of ``fitset`` with its cells, cross-validation errors and bootstrap draws."""
    source = _with_data_hash(source)
    names = list(THETA) + list(LINEAR)
    every = dict(fitset.fits)
    if fitset.batched:  # files of single-batch data keep their layout
        names += [n for n in BATCHED.names if n not in names]
        every.update({(m, 0, "batched"): f for m, f in fitset.batched.items()})
    keys = sorted(every)
    value = np.full((len(keys), len(names)), np.nan)
    stderr = np.full_like(value, np.nan)
    draws = np.full((len(keys), n_draws, len(names)), np.nan)
    cell_fit, cells = [], {"input_len": [], "output_len": [], "energy_j": [], "cv_ape_pct": []}
    if fitset.batched:
        cells["batch_size"] = []
    for k, key in enumerate(keys):
        f = every[key]
        if fitset.batched:
            cells["batch_size"] += list(f.cell_batch_size if f.cell_batch_size is not None
                                        else np.full(len(f.energy_j), float(f.batch_size)))
        for name, v in f.params.items():
            j = names.index(name)
            value[k, j], stderr[k, j] = v, f.stderr[name]
            draws[k, :, j] = f.draws(n_draws)[name][:, 0]
        cell_fit += [k] * len(f.energy_j)
        for col, arr in (("input_len", f.input_len), ("output_len", f.output_len), ("energy_j", f.energy_j),
                         ("cv_ape_pct", f.cv_ape_pct)):
            cells[col] += list(np.asarray(arr, dtype=float))
    ds = xr.Dataset(
        {
            "value": (("fit", "param"), value),
            "stderr": (("fit", "param"), stderr),
            "draws": (("fit", "draw", "param"), draws),
            "cell_fit": ("cell", np.asarray(cell_fit, dtype=np.int64)),
            **{col: ("cell", np.asarray(v)) for col, v in cells.items()},
        },
        coords={"param": names, "fit_model": ("fit", [m for m, _, _ in keys]),
                "fit_batch_size": ("fit", np.asarray([b for _, b, _ in keys], dtype=np.int64)),
                "fit_kind": ("fit", [kd for _, _, kd in keys])},
        attrs={"format": FITS_FORMAT, "version": FITS_VERSION, "loss": fitset.loss, "cv_folds": fitset.cv_folds,
               "n_draws": n_draws, "seed": 0,
               **({"batch_cv": json.dumps({m: {str(b): v for b, v in d.items()} for m, d in fitset.batch_cv.items()})}
                  if fitset.batched else {}),
               **{f"source_{k}": json.dumps([str(x) for x in v]) if isinstance(v, (list, tuple)) else str(v)
                  for k, v in (source or {}).items()}},
    )
    return atomic_write_netcdf(ds, Path(path), "the data are unchanged")  # own temp file, free space checked first


def _with_data_hash(source: dict | None) -> dict:
    """``source`` plus ``data_sha256``, the content hashes of its ``data`` files (when they all exist here)."""
    source = dict(source or {})
    data = source.get("data")
    if data is not None and "data_sha256" not in source:
        paths = [resolve(p) for p in ([data] if isinstance(data, (str, Path)) else data)]  # as the readers find them
        if paths and all(p.is_file() for p in paths):
            source["data_sha256"] = [file_sha256(p) for p in paths]
    return source


def load_fits(path, **expect) -> "FitSet":
    """Read a fit artifact written by :meth:`FitSet.save` (or ``energykit fit --save``); nothing is refitted.

    The fits come back with their parameters, standard errors, cells, cross-validation errors and
    the stored bootstrap draws, so intervals equal those of the fit that was saved. Keyword
    arguments (``loss="l1"``, ``cv_folds=5``, ``data=[...]``) must match what the file was fitted
    with, else a one-line error says which differs.
    """
    path = resolve(path)
    if not path.is_file() and not path.is_absolute() and Path(path.name).is_file():
        path = Path(path.name)  # a copied report folder: the fits beside the notebook, whose folder its kernel runs in
    if path.exists() and not path.is_file():
        raise FitError(f"fit file {path} is not a regular file (a folder, FIFO or device); give the file written by "
                       "energykit fit --save")
    if not path.is_file():
        raise FitError(f"fit file {path} does not exist; write one with: energykit fit DATA --save {path}")
    try:
        check_netcdf_header(path, what="a fit file")  # sizes from the header, before any array is read
    except DataError as e:
        raise FitError(str(e)) from None
    try:
        ds = xr.load_dataset(path, engine="h5netcdf")
    except (OSError, ValueError) as e:
        raise FitError(f"{path} is not a readable fit file ({e}); write it again with energykit fit --save") from None
    if ds.attrs.get("format") != FITS_FORMAT or int(ds.attrs.get("version", -1)) != FITS_VERSION:
        raise FitError(f"{path} is not an energykit fit file of version {FITS_VERSION} "
                       f"(format {ds.attrs.get('format')!r}, version {ds.attrs.get('version')!r}); "
                       "write it again with energykit fit --save")
    missing = [v for v in ("value", "stderr", "draws", "cell_fit", "input_len", "output_len", "energy_j",
                           "cv_ape_pct") if v not in ds.variables]
    if missing or any(k not in ds.attrs for k in ("n_draws", "loss", "cv_folds")):
        raise FitError(f"{path} lacks {', '.join(missing) or 'its attributes'}: it is damaged or not written by "
                       "energykit fit --save; write it again")
    expect = _with_data_hash(expect) if "data" in expect else expect
    for key, want in expect.items():
        have = ds.attrs.get(key, ds.attrs.get(f"source_{key}"))
        if key == "data_sha256" and str(have) != json.dumps([str(w) for w in want]):
            raise FitError(f"{path} was fitted on other data: the content of {', '.join(map(str, expect['data']))} "
                           "changed since (or the fit predates content hashes); fit again "
                           f"(energykit fit DATA --save {path}) or leave fit_file empty")
        if isinstance(want, (list, tuple)):
            want = json.dumps([str(w) for w in want])
        if str(have) != str(want):
            raise FitError(f"{path} was fitted with {key}={have}, not {want}; fit again "
                           f"(energykit fit DATA --save {path}) or leave fit_file empty")
    n_draws = int(ds.attrs["n_draws"])
    names = [str(p) for p in ds["param"].values]
    cell_fit = ds["cell_fit"].values
    fits, batched = {}, {}
    for k in range(ds.sizes["fit"]):
        kind = str(ds["fit_kind"].values[k])
        model = model_of(kind)
        pars = lmfit.Parameters()
        draws = {}
        for name in model.names:
            j = names.index(name)
            pars.add(name, value=float(ds["value"].values[k, j]), min=0.0)
            err = float(ds["stderr"].values[k, j])
            pars[name].stderr = None if np.isnan(err) else err
            draws[name] = ds["draws"].values[k, :, [j]].T.copy()
        mine = cell_fit == k
        key = (str(ds["fit_model"].values[k]), int(ds["fit_batch_size"].values[k]), kind)
        f = ModelFit(*key, SavedResult(pars), ds["input_len"].values[mine], ds["output_len"].values[mine],
                     ds["energy_j"].values[mine], ds["cv_ape_pct"].values[mine], str(ds.attrs["loss"]),
                     cell_batch_size=ds["batch_size"].values[mine] if kind == "batched" else None)
        f._draws[(n_draws, 0)] = draws
        if kind == "batched":
            batched[key[0]] = f
        else:
            fits[key] = f
    batch_cv = {m: {int(b): float(v) for b, v in d.items()} for m, d in json.loads(ds.attrs.get("batch_cv", "{}")).items()}
    return FitSet(fits, str(ds.attrs["loss"]), int(ds.attrs["cv_folds"]), batched, batch_cv)


def fit_dataset(
    ds: xr.Dataset,
    models: Iterable[str] | None = None,
    loss: str = "l1",
    cv_folds: int = 5,
    seed: int = 0,
) -> FitSet:
    """Fit the analytical model and the linear baseline per (model, batch_size) on repeat means.

    Parameters
    ----------
    ds : xarray.Dataset
        Measurements (see :mod:`energykit.dataset`).
    models : iterable of str, optional
        Models to fit; all by default.
    loss : {"l1", "l2"}
        See :func:`fit_cells`.
    cv_folds : int
        Folds of the cross-validation over cells.
    seed : int
        Seed of the fold shuffle.
    """
    _check("sweetspot", loss)
    names = model_names(ds)
    wanted = list(models) if models is not None else names
    for m in wanted:
        if m not in names:
            raise FitError(f"model {m!r} is not in the data; available: {', '.join(names)}")
    fits = {}
    for m in wanted:
        for b in batch_sizes(ds, m):
            cells = _cells(ds, m, int(b))
            if cells.empty:
                continue
            if len(cells) < len(THETA):
                raise FitError(
                    f"model {m!r} at batch size {int(b)} has {len(cells)} measured cells; the analytical model "
                    f"needs at least {len(THETA)} (measure more input/output lengths)"
                )
            i, o, E = cells["input_len"].to_numpy(), cells["output_len"].to_numpy(), cells["energy_j"].to_numpy()
            for kind in PER_BATCH:
                res = fit_cells(E, i, o, kind=kind, loss=loss)
                cv = cross_validate(E, i, o, kind=kind, loss=loss, k=cv_folds, seed=seed)
                fits[(m, int(b), kind)] = ModelFit(m, int(b), kind, res, i, o, E, cv, loss)
    if not fits:
        raise FitError("no cell with a positive measured energy; nothing to fit")
    batched, batch_cv = {}, {}
    for m in wanted:
        if len({b for mm, b, _ in fits if mm == m}) > 1:
            batched[m], batch_cv[m] = fit_batched(ds, m, loss, cv_folds, seed)
    return FitSet(fits, loss, cv_folds, batched, batch_cv)


def fit_batched(ds: xr.Dataset, model: str, loss: str = "l1", cv_folds: int = 5, seed: int = 0):
    """Fit the batch-aware model E(i, o, B) to every measured cell of ``model`` across its batch sizes.

    Returns the fit (a :class:`ModelFit` of kind ``"batched"`` with ``batch_size`` 0, meaning every
    batch size; each cell's is in ``cell_batch_size``) and the leave-one-batch-size-out MAPE [%]
    per batch size (:func:`leave_one_batch_out`).
    """
    cells = measured_cells(ds, model)
    i, o, E = (cells[c].to_numpy(dtype=float) for c in ("input_len", "output_len", "energy_j"))
    b = cells["batch_size"].to_numpy(dtype=float)
    res = fit_cells(E, i, o, kind="batched", loss=loss, batch_size=b)
    cv = cross_validate(E, i, o, kind="batched", loss=loss, k=cv_folds, seed=seed, batch_size=b)
    fit = ModelFit(model, 0, "batched", res, i, o, E, cv, loss, cell_batch_size=b)
    return fit, leave_one_batch_out(E, i, o, b, loss)


def pricing_fit(ds: xr.Dataset, model: str, loss: str = "l1", cv_folds: int = 5) -> ModelFit:
    """The fit that prices ``model``: the batch-aware model when it was measured at several batch
    sizes, else the analytical model at its one batch size (what ``energykit predict DATA`` and the
    price card use)."""
    fits = fit_dataset(ds, models=[model], loss=loss, cv_folds=cv_folds)
    if model in fits.batched:
        return fits.batched[model]
    sizes = sorted(b for m, b in fits.keys if m == model)
    if len(sizes) != 1:
        raise FitError(f"model {model!r} has no fit at any batch size")
    return fits.get(model, sizes[0])


PRICE_CARD = "energykit-price-card"
PRICE_CARD_VERSION = 1
"""Schema version of the price card (:func:`price_card`); ``energykit/price.py`` refuses others."""


def price_card(ds: xr.Dataset, models: Iterable[str] | None = None, loss: str = "l1", n_draws: int = DRAWS,
               source: Iterable[str] = ()) -> dict:
    """The price card of ``energykit export``: per model/GPU/engine the declared terms, fitted
    coefficients with standard errors and ``n_draws`` bootstrap draws, the ranges measured and the
    units; read it with ``energykit/price.py`` (standard library only)."""
    entries = []
    for m in (list(models) if models is not None else model_names(ds)):
        f = pricing_fit(ds, m, loss)
        em = f.energy_model
        cells = f._cells()
        cells.setdefault("batch_size", np.full(len(f.energy_j), float(f.batch_size)))
        draws = f.draws(n_draws)
        entries.append({
            "model": m,
            "gpu": str(model_value(ds, m, "gpu", "")),
            "engine": str(model_value(ds, m, "engine", "")),
            "dtype": str(model_value(ds, m, "dtype", "")),
            "kind": em.kind,
            "description": em.description,
            "formula": em.formula,
            "variables": {v: {"symbol": VARIABLES[v].symbol, "unit": VARIABLES[v].unit, "meaning": VARIABLES[v].meaning}
                          for v in em.variables},
            "terms": [{"name": t.name, "factors": list(t.factors), "unit": t.unit, "meaning": t.meaning}
                      for t in em.terms],
            "coefficients": f.params,
            "stderr": {k: (None if not np.isfinite(v) else v) for k, v in f.stderr.items()},
            "draws": {k: [float(x) for x in v[:, 0]] for k, v in draws.items()},
            "batch_sizes": f.batch_sizes,
            "ranges": {v: [float(np.min(x)), float(np.max(x))] for v, x in cells.items()},
            "cells": int(len(f.energy_j)),
            "mape_pct": f.mape_pct,
            "cv_mape_pct": None if not np.isfinite(f.cv_mape_pct) else f.cv_mape_pct,
        })
    return {"schema": PRICE_CARD, "schema_version": PRICE_CARD_VERSION, "energykit_version": __version__,
            "source": [str(s) for s in source], "loss": loss, "level": LEVEL, "quantile": "inverted_cdf",
            "units": {"energy": "J per batch of batch_size requests (price() divides by the batch: J per request)",
                      "input_len": "tokens", "output_len": "tokens", "batch_size": "requests"},
            "models": entries}
