"""Fit the SweetSpot analytical energy model and the linear baseline with lmfit.

The analytical model (Pizzini Cavagna et al., arXiv:2602.05695; the derivation is in the README) collects the
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
from typing import Callable, Iterable

import lmfit
import numpy as np
import pandas as pd
import xarray as xr
from scipy.optimize import nnls

from .dataset import batch_sizes, measured_cells, model_names
from .errors import FitError
from .iotools import resolve

__all__ = ["THETA", "LINEAR", "THETA_UNITS", "THETA_MEANING", "LOSSES", "sweetspot_energy", "o_star",
           "linear_energy", "design_matrix", "irls", "LEVEL", "wild_bootstrap", "interval", "around",
           "SweetSpotModel", "LinearBaselineModel", "MODELS", "column_rank", "design_rank", "fit_cells", "ape_pct",
           "mape_pct", "r2", "kfold_indices", "cross_validate", "predict_energy", "ModelFit", "FitSet",
           "fit_dataset", "validation_table", "load_fits", "SavedResult", "FITS_VERSION", "DRAWS", "IDENTIFIED_SHARE", "UNBOUNDED_FACTOR",
           "identified", "bounded_high"]

THETA = ("theta1", "theta2", "theta3", "theta4", "theta5", "theta0")
LINEAR = ("a", "b", "c")
THETA_UNITS = {
    "theta1": "J/token^2",
    "theta2": "J/token^2",
    "theta3": "J/token",
    "theta4": "J/token^2",
    "theta5": "J/token",
    "theta0": "J",
    "a": "J/token",
    "b": "J/token",
    "c": "J",
}
THETA_MEANING = {
    "theta1": "i²: prefill causal attention",
    "theta2": "i·o: decode attention / KV-cache reads of the prompt",
    "theta3": "i: prefill weight GEMMs",
    "theta4": "o²: decode attention / KV reads of generated tokens (≈ θ2/2)",
    "theta5": "o: per-step weight reads and step overheads",
    "theta0": "fixed cost per request batch",
}
LOSSES = ("l1", "l2")
DRAWS = 200
"""Bootstrap draws stored with a fit (what the reports' intervals use)."""
UNBOUNDED_FACTOR = 1e6
"""A reported interval bound more than this factor from its estimate reads "unbounded" (tables, heatmaps)."""
IDENTIFIED_SHARE = 0.5
"""A coefficient on its θ ≥ 0 bound in the fit, or in at least this share of bootstrap draws, is not identified."""


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
    i = input_len
    o = output_len
    return theta1 * i * i + theta2 * i * o + theta3 * i + theta4 * o * o + theta5 * o + theta0


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
    i = np.asarray(input_len, dtype=float)
    num = params["theta1"] * i**2 + params["theta3"] * i + params["theta0"]
    t4 = np.asarray(params["theta4"], dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        out = np.where(t4 > 0, np.sqrt(num / np.where(t4 > 0, t4, 1.0)), np.inf)
    return out


def linear_energy(input_len, output_len, a=0.0, b=0.0, c=0.0):
    """Linear-in-lengths baseline :math:`E = a i + b o + c` [J] (``a``, ``b`` in J/token, ``c`` in J).

    Examples
    --------
    >>> float(linear_energy(100, 10, a=0.1, b=2.0, c=5.0))
    35.0
    """
    return a * input_len + b * output_len + c


def design_matrix(kind: str, input_len, output_len) -> np.ndarray:
    """Columns of the model's terms at the given cells: ``[i², i·o, i, o², o, 1]`` or ``[i, o, 1]``."""
    i = np.asarray(input_len, dtype=float)
    o = np.asarray(output_len, dtype=float)
    if kind == "sweetspot":
        return np.column_stack([i * i, i * o, i, o * o, o, np.ones_like(i)])
    return np.column_stack([i, o, np.ones_like(i)])


def _nnls_weighted(X: np.ndarray, E: np.ndarray, w: np.ndarray) -> np.ndarray:
    """argmin ||w·(X θ − E)|| subject to θ ≥ 0 (columns scaled for conditioning)."""
    scale = np.abs(X).max(axis=0)
    scale[scale == 0] = 1.0
    coef, _ = nnls((X / scale) * w[:, None], E * w)
    return coef / scale


def irls(X: np.ndarray, E: np.ndarray, loss: str = "l1", max_iter: int = 50) -> tuple[np.ndarray, np.ndarray]:
    """Non-negative relative-error fit: (θ, final weights).

    ``l2`` weights residuals by 1/E; ``l1`` re-weights iteratively by 1/(E·sqrt|r|) so that the
    sum of absolute relative errors is minimised.
    """
    w = 1.0 / E
    coef = _nnls_weighted(X, E, w)
    if loss == "l1":
        for _ in range(max_iter):
            r = np.abs(X @ coef - E) / E
            w = 1.0 / (E * np.sqrt(np.maximum(r, 1e-4)))
            new = _nnls_weighted(X, E, w)
            change = np.max(np.abs(new - coef) / (np.abs(coef) + 1e-12))
            coef = new
            if change < 1e-6:
                break
    return coef, w


LEVEL = 0.95
"""Confidence level of every interval the kit reports."""


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


def interval(samples, level: float = LEVEL, axis: int = 0):
    """Percentile interval of ``samples`` along ``axis``: (low, high).

    Quantiles are sample values (no interpolation), so infinite draws (``o*`` where θ4 = 0) stay
    infinite instead of turning into NaN.
    """
    a = (1 - level) / 2
    q = dict(axis=axis, method="inverted_cdf")
    return np.nanquantile(samples, a, **q), np.nanquantile(samples, 1 - a, **q)


def identified(estimate: float, draws) -> bool:
    """Whether a coefficient under θ ≥ 0 is identified: fitted off its bound, and off it in most draws.

    >>> identified(0.3, [0.2, 0.4, 0.0]), identified(0.0, [0.2, 0.4, 0.5]), identified(0.3, [0.0, 0.0, 0.4])
    (True, False, False)
    """
    return bool(estimate > 0.0 and np.mean(np.asarray(draws) <= 0.0) < IDENTIFIED_SHARE)


def bounded_high(estimate, low, high):
    """The upper bound of an interval, NaN where it is infinite or more than :data:`UNBOUNDED_FACTOR`
    times the estimate (or the lower bound, when that is larger): such a bound is reported as "unbounded".

    >>> bounded_high(np.array([4.2, 0.0, 4.2]), np.array([3.4, 0.0, 3.4]), np.array([5.0, 3.0, 1.02e15]))
    array([ 5.,  3., nan])
    """
    est, lo, hi = (np.asarray(x, dtype=float) for x in (estimate, low, high))
    scale = np.maximum(np.abs(est), np.where(np.isfinite(lo), np.abs(lo), 0.0))
    absurd = ~np.isfinite(hi) | ((scale > 0) & (hi > UNBOUNDED_FACTOR * scale))
    return np.where(absurd, np.nan, hi)


def around(estimate, low, high):
    """Extend a percentile interval to contain the point estimate.

    Where a coefficient sits on its θ ≥ 0 bound the bootstrap distribution is one-sided and its
    percentile interval can miss the estimate; the reported interval then reaches the estimate.
    """
    return np.minimum(low, estimate), np.maximum(high, estimate)


class _NonNegativeLinearModel(lmfit.Model):
    kind = ""
    names: tuple = ()

    def __init__(self, func: Callable, **kws):
        kws.setdefault("nan_policy", "raise")
        super().__init__(func, independent_vars=["input_len", "output_len"], **kws)
        for name in self.names:
            self.set_param_hint(name, min=0.0, value=0.0)

    def guess(self, data, input_len=None, output_len=None, weights=None, **kws):
        """Exact non-negative weighted least squares solution as starting values."""
        data = np.asarray(data, dtype=float)
        w = np.ones_like(data) if weights is None else np.asarray(weights, dtype=float)
        coef = _nnls_weighted(design_matrix(self.kind, input_len, output_len), data, w)
        params = self.make_params(**{n: float(v) for n, v in zip(self.names, coef)})
        return lmfit.models.update_param_vals(params, self.prefix, **kws)


class SweetSpotModel(_NonNegativeLinearModel):
    """lmfit Model of :func:`sweetspot_energy` with all θ ≥ 0 and an exact NNLS ``guess()``."""

    kind = "sweetspot"
    names = THETA

    def __init__(self, **kws):
        super().__init__(sweetspot_energy, **kws)


class LinearBaselineModel(_NonNegativeLinearModel):
    """lmfit Model of :func:`linear_energy` with a, b, c ≥ 0."""

    kind = "linear"
    names = LINEAR

    def __init__(self, **kws):
        super().__init__(linear_energy, **kws)


MODELS = {"sweetspot": SweetSpotModel, "linear": LinearBaselineModel}


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
              require_rank: bool = True):
    """Fit one model to cells of (input_len, output_len, energy_j).

    Parameters
    ----------
    energy_j : array_like
        Mean energy per cell [J]; all finite and positive.
    input_len, output_len : array_like
        Cell lengths [tokens].
    kind : {"sweetspot", "linear"}
        The analytical model or the linear baseline.
    loss : {"l1", "l2"}
        Minimise absolute relative errors (iteratively re-weighted) or squared relative errors.
    max_iter : int
        Re-weighting iterations for ``loss="l1"``.
    require_rank : bool
        Refuse cells that cannot identify every coefficient (e.g. two input lengths for the
        analytical model's i² and i terms). Cross-validation folds pass False.

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
    n_par = len(model.names)
    if not (np.all(np.isfinite(E)) and np.all(E > 0)):
        raise FitError("energies to fit must be finite and positive; drop cells with NaN or zero energy")
    if len(E) < n_par:
        raise FitError(f"{kind} model has {n_par} parameters but only {len(E)} cells were given; measure more cells")
    rank = design_rank(i, o, kind)
    if require_rank and rank < n_par:
        raise FitError(
            f"these {len(E)} cells ({len(set(i))} input and {len(set(o))} output lengths) cannot identify the {n_par} "
            f"coefficients of the {kind} model (design rank {rank}); measure at least 3 input and 3 output lengths")
    coef, w = irls(design_matrix(kind, i, o), E, loss, max_iter)
    params = model.make_params(**{n: float(v) for n, v in zip(model.names, coef)})
    return model.fit(E, params, input_len=i, output_len=o, weights=w)


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


def cross_validate(energy_j, input_len, output_len, kind="sweetspot", loss="l1", k=5, seed=0) -> np.ndarray:
    """k-fold cross-validated absolute percentage error of every cell [%].

    Each cell is predicted by a fit on the folds that do not contain it. Returns one APE per cell
    (NaN where a training set had fewer cells than parameters).
    """
    E = np.asarray(energy_j, dtype=float)
    i = np.asarray(input_len, dtype=float)
    o = np.asarray(output_len, dtype=float)
    n_par = len(MODELS[kind].names)
    out = np.full(len(E), np.nan)
    for test in kfold_indices(len(E), k, seed):
        train = np.setdiff1d(np.arange(len(E)), test)
        if len(train) < n_par:
            continue
        res = fit_cells(E[train], i[train], o[train], kind=kind, loss=loss, require_rank=False)
        out[test] = ape_pct(res.eval(input_len=i[test], output_len=o[test]), E[test])
    return out


def predict_energy(kind: str, params: dict, input_len, output_len):
    """Energy [J] of the ``kind`` model; params may be arrays (e.g. bootstrap draws) that broadcast."""
    func = sweetspot_energy if kind == "sweetspot" else linear_energy
    return func(input_len, output_len, **params)


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
    _draws: dict = field(default_factory=dict, repr=False, compare=False)

    def draws(self, n: int = 200, seed: int = 0) -> dict[str, np.ndarray]:
        """Wild-bootstrap draws of the parameters: ``{name: array of shape (n, 1)}`` (cached per n, seed).

        The trailing axis of length 1 lets draws broadcast against arrays of lengths.
        """
        if (n, seed) not in self._draws:
            names = THETA if self.kind == "sweetspot" else LINEAR
            X = design_matrix(self.kind, self.input_len, self.output_len)
            coef = np.array([self.params[name] for name in names])
            out = wild_bootstrap(X, self.energy_j, coef, self.loss, n, seed)
            self._draws[(n, seed)] = {name: out[:, [j]] for j, name in enumerate(names)}
        return self._draws[(n, seed)]

    def predict_interval(self, input_len, output_len, n: int = 200, level: float = LEVEL):
        """Predicted energy [J] at the given lengths with its interval: (estimate, low, high)."""
        i = np.atleast_1d(np.asarray(input_len, dtype=float))
        o = np.atleast_1d(np.asarray(output_len, dtype=float))
        samples = predict_energy(self.kind, self.draws(n), i[None, :], o[None, :])
        est = self.predict(i, o)
        return (est, *around(est, *interval(samples, level)))

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

    def predict(self, input_len, output_len):
        """Energy of one request batch [J] at the given lengths (numpy or xarray)."""
        return predict_energy(self.kind, self.params, input_len, output_len)

    @property
    def ape_pct(self) -> np.ndarray:
        return ape_pct(self.predict(self.input_len, self.output_len), self.energy_j)

    @property
    def mape_pct(self) -> float:
        return float(np.mean(self.ape_pct))

    @property
    def max_ape_pct(self) -> float:
        return float(np.max(self.ape_pct))

    @property
    def r2(self) -> float:
        return r2(self.predict(self.input_len, self.output_len), self.energy_j)

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

    def __init__(self, fits: dict[tuple[str, int, str], ModelFit], loss: str, cv_folds: int):
        self.fits = fits
        self.loss = loss
        self.cv_folds = cv_folds

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
    names = list(THETA) + list(LINEAR)
    keys = sorted(fitset.fits)
    value = np.full((len(keys), len(names)), np.nan)
    stderr = np.full_like(value, np.nan)
    draws = np.full((len(keys), n_draws, len(names)), np.nan)
    cell_fit, cells = [], {"input_len": [], "output_len": [], "energy_j": [], "cv_ape_pct": []}
    for k, key in enumerate(keys):
        f = fitset.fits[key]
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
               "n_draws": n_draws, "seed": 0, **{f"source_{k}": json.dumps([str(x) for x in v]) if isinstance(v, (list, tuple)) else str(v)
                  for k, v in (source or {}).items()}},
    )
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    ds.to_netcdf(tmp, engine="h5netcdf")
    tmp.replace(path)
    return path


def load_fits(path, **expect) -> "FitSet":
    """Read a fit artifact written by :meth:`FitSet.save` (or ``energykit fit --save``); nothing is refitted.

    The fits come back with their parameters, standard errors, cells, cross-validation errors and
    the stored bootstrap draws, so intervals equal those of the fit that was saved. Keyword
    arguments (``loss="l1"``, ``cv_folds=5``, ``data=[...]``) must match what the file was fitted
    with, else a one-line error says which differs.
    """
    path = resolve(path)
    if not path.is_file():
        raise FitError(f"fit file {path} does not exist; write one with: energykit fit DATA --save {path}")
    try:
        ds = xr.load_dataset(path, engine="h5netcdf")
    except (OSError, ValueError) as e:
        raise FitError(f"{path} is not a readable fit file ({e}); write it again with energykit fit --save") from None
    if ds.attrs.get("format") != FITS_FORMAT or int(ds.attrs.get("version", -1)) != FITS_VERSION:
        raise FitError(f"{path} is not an energykit fit file of version {FITS_VERSION} "
                       f"(format {ds.attrs.get('format')!r}, version {ds.attrs.get('version')!r}); "
                       "write it again with energykit fit --save")
    for key, want in expect.items():
        have = ds.attrs.get(key, ds.attrs.get(f"source_{key}"))
        if isinstance(want, (list, tuple)):
            want = json.dumps([str(w) for w in want])
        if str(have) != str(want):
            raise FitError(f"{path} was fitted with {key}={have}, not {want}; fit again "
                           f"(energykit fit DATA --save {path}) or leave fit_file empty")
    n_draws = int(ds.attrs["n_draws"])
    names = [str(p) for p in ds["param"].values]
    cell_fit = ds["cell_fit"].values
    fits = {}
    for k in range(ds.sizes["fit"]):
        kind = str(ds["fit_kind"].values[k])
        model = MODELS[kind]
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
                     ds["energy_j"].values[mine], ds["cv_ape_pct"].values[mine], str(ds.attrs["loss"]))
        f._draws[(n_draws, 0)] = draws
        fits[key] = f
    return FitSet(fits, str(ds.attrs["loss"]), int(ds.attrs["cv_folds"]))


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
            for kind in MODELS:
                res = fit_cells(E, i, o, kind=kind, loss=loss)
                cv = cross_validate(E, i, o, kind=kind, loss=loss, k=cv_folds, seed=seed)
                fits[(m, int(b), kind)] = ModelFit(m, int(b), kind, res, i, o, E, cv, loss)
    if not fits:
        raise FitError("no cell with a positive measured energy; nothing to fit")
    return FitSet(fits, loss, cv_folds)
