"""Estimate a declared energy model on cells: IRLS / lmfit fits, cross-validation, the wild bootstrap.

A *cell* is a mapping of the declared variables (:func:`energykit.model.cell`), e.g.
``{"input_len": 512, "output_len": 128, "batch_size": 16}``. Every function here takes cells as
one mapping of arrays, as arrays in :data:`energykit.model.VARIABLES` order, or by name, and uses
the variables its model declares: a variable declared in ``model.py`` reaches the fit with no
other file listing it.

The analytical model (Pizzini Cavagna et al., arXiv:2602.05695; the derivation is in docs/model.md)
collects the Transformer's prefill and decode work by powers of the input length ``i`` and output
length ``o``:

.. math::

    E(i, o) = \\theta_1 i^2 + \\theta_2 i o + \\theta_3 i + \\theta_4 o^2 + \\theta_5 o + \\theta_0,
    \\qquad \\theta_k \\ge 0

Every declared model is linear in non-negative coefficients, so :func:`irls` solves the weighted
problem exactly with non-negative least squares and lmfit then refines it and supplies standard
errors. Residuals are weighted by ``1 / E`` so that the fit minimises *relative* error. With
``loss="l1"`` (the default) the weights are iteratively re-weighted so that the fit minimises the
sum of absolute relative errors: short windows carry NVML counter-step errors of up to one 100 ms
counter step (5–40 % seen on an H200), a heavy-tailed noise that a squared loss lets dominate.
"""

from __future__ import annotations

import lmfit
import numpy as np

from ..errors import FitError
from ..model import BATCHED, SWEETSPOT, EnergyModel, cell, model_of, nnls_weighted
from ..model import LINEAR as LINEAR_MODEL

__all__ = ["THETA", "LINEAR_THETA", "BATCH_THETA", "THETA_UNITS", "THETA_MEANING", "LOSSES", "DRAWS",
           "sweetspot_energy", "o_star", "linear_energy", "design_matrix", "irls", "wild_bootstrap",
           "LinearEnergyModel", "SweetSpotModel", "LinearBaselineModel", "BatchedModel", "LMFIT_MODELS", "PER_BATCH", "check_kind",
           "cells_of", "column_rank", "design_rank", "fit_cells", "ape_pct", "mape_pct", "r2", "kfold_indices",
           "cross_validate", "leave_one_batch_out", "predict_energy"]

THETA = SWEETSPOT.names
"""Coefficient names of :data:`energykit.model.SWEETSPOT`."""
LINEAR_THETA = LINEAR_MODEL.names
"""Coefficient names of the linear baseline :data:`energykit.model.LINEAR` (``a``, ``b``, ``c``)."""
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


class LinearEnergyModel(lmfit.Model):
    """lmfit Model of an :class:`EnergyModel`: bounds from its terms, ``nan_policy="raise"``, NNLS guess."""

    def __init__(self, energy_model: EnergyModel, **kws):
        kws.setdefault("nan_policy", "raise")
        self.energy_model = energy_model
        super().__init__(energy_model.function(), independent_vars=list(energy_model.variables), **kws)
        for t in energy_model.terms:
            self.set_param_hint(t.name, min=t.min, value=0.0)

    @property
    def kind(self) -> str:
        return self.energy_model.kind

    @property
    def names(self) -> tuple[str, ...]:
        return self.energy_model.names

    def guess(self, data, weights=None, **kws):
        """Exact non-negative weighted least squares solution as starting values."""
        data = np.asarray(data, dtype=float)
        w = np.ones_like(data) if weights is None else np.asarray(weights, dtype=float)
        vals = {v: kws.pop(v) for v in self.energy_model.variables}
        coef = nnls_weighted(self.energy_model.design_matrix(**vals), data, w)
        params = self.make_params(**{n: float(v) for n, v in zip(self.names, coef)})
        return lmfit.models.update_param_vals(params, self.prefix, **kws)


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


LMFIT_MODELS = {"sweetspot": SweetSpotModel, "linear": LinearBaselineModel, "batched": BatchedModel}
"""lmfit Model classes of the built-in kinds (any other declared kind gets a :class:`LinearEnergyModel` of its declaration)."""
PER_BATCH = ("sweetspot", "linear")
"""Kinds fitted at each (model, batch_size)."""


def check_kind(kind: str, loss: str = "l1") -> None:
    """Refuse, in one line, a model kind that is not declared in :data:`energykit.model.MODELS` or an unknown loss."""
    try:
        model_of(kind)
    except ValueError as e:
        raise FitError(str(e)) from None
    if loss not in LOSSES:
        raise FitError(f"unknown loss {loss!r}; use 'l1' (robust relative) or 'l2' (relative least squares)")


def _lmfit_model(kind: str) -> LinearEnergyModel:
    return LMFIT_MODELS[kind]() if kind in LMFIT_MODELS else LinearEnergyModel(model_of(kind))


def cells_of(energy_model, *values, **named) -> dict:
    """The model's variables out of cells given as one mapping, positional arrays or names, as float
    arrays of one shape; a one-line :class:`FitError` naming a variable the cells lack."""
    try:
        given = cell(*values, **named)
        taken = energy_model.take(given)
    except ValueError as e:
        raise FitError(str(e)) from None
    arrays = {k: np.asarray(v, dtype=float) for k, v in taken.items()}
    shape = np.broadcast_shapes(*(a.shape for a in arrays.values()))
    return {k: np.broadcast_to(a, shape) for k, a in arrays.items()}


def column_rank(X: np.ndarray) -> int:
    """Rank of a feature matrix with each column scaled to its largest magnitude (numerical rank)."""
    scale = np.abs(X).max(axis=0)
    scale[scale == 0] = 1.0
    return int(np.linalg.matrix_rank(X / scale, tol=1e-9))


def design_rank(*cells, kind: str = "sweetspot", **variables) -> int:
    """Rank of the model's design matrix on these cells (columns scaled): 6 identifies the SweetSpot θ."""
    em = model_of(kind)
    return column_rank(em.design_matrix(**cells_of(em, *cells, **variables)))


def fit_cells(energy_j, *cells, kind: str = "sweetspot", loss: str = "l1", max_iter: int = 50,
              require_rank: bool = True, **variables):
    """Fit one declared model to cells and their energies.

    Parameters
    ----------
    energy_j : array_like
        Mean energy per cell [J]; all finite and positive.
    *cells, **variables
        The cells: one mapping of the model's variables (``{"input_len": i, "output_len": o}``),
        or arrays in :data:`energykit.model.VARIABLES` order (``input_len, output_len``), or by name
        (``batch_size=b`` for the ``batched`` model).
    kind : str
        A kind declared in :data:`energykit.model.MODELS`: ``"sweetspot"``, ``"linear"``, ``"batched"``, ...
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
        The final weighted fit; ``result.params`` hold θ with standard errors and
        ``result.userkws`` the independent variables by name.
    """
    check_kind(kind, loss)
    E = np.asarray(energy_j, dtype=float)
    model = _lmfit_model(kind)
    em = model.energy_model
    vals = cells_of(em, *cells, **variables)
    n_par = len(model.names)
    if not (np.all(np.isfinite(E)) and np.all(E > 0)):
        raise FitError("energies to fit must be finite and positive; drop cells with NaN or zero energy")
    if len(E) < n_par:
        raise FitError(f"{kind} model has {n_par} parameters but only {len(E)} cells were given; measure more cells")
    X = em.design_matrix(**vals)
    rank = column_rank(X)
    if require_rank and rank < n_par:
        more = " at 2 or more batch sizes" if em.has_batch else ""
        counts = " and ".join(f"{len(set(vals[v]))} {v}" for v in em.variables)
        raise FitError(
            f"these {len(E)} cells ({counts} values) cannot identify the {n_par} coefficients of the {kind} model "
            f"(design rank {rank}); measure at least 3 input and 3 output lengths{more}")
    coef, w = irls(X, E, loss, max_iter)
    params = model.make_params(**{n: float(v) for n, v in zip(model.names, coef)})
    return model.fit(E, params, weights=w, **vals)


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

def cross_validate(energy_j, *cells, kind="sweetspot", loss="l1", k=5, seed=0, **variables) -> np.ndarray:
    """k-fold cross-validated absolute percentage error of every cell [%].

    Each cell is predicted by a fit on the folds that do not contain it. Returns one APE per cell
    (NaN where a training set had fewer cells than parameters). Cells as in :func:`fit_cells`.
    """
    check_kind(kind, loss)
    E = np.asarray(energy_j, dtype=float)
    em = model_of(kind)
    vals = cells_of(em, *cells, **variables)
    n_par = len(em.names)
    out = np.full(len(E), np.nan)
    for test in kfold_indices(len(E), k, seed):
        train = np.setdiff1d(np.arange(len(E)), test)
        if len(train) < n_par:
            continue
        res = fit_cells(E[train], {v: a[train] for v, a in vals.items()}, kind=kind, loss=loss, require_rank=False)
        out[test] = ape_pct(res.eval(**{v: a[test] for v, a in vals.items()}), E[test])
    return out


def leave_one_batch_out(energy_j, *cells, loss="l1", kind="batched", **variables) -> dict[int, float]:
    """MAPE [%] of each batch size's cells predicted by the batch-aware model fitted on the other batch sizes.

    NaN where the other batch sizes cannot identify the model (fewer than two of them, or too few cells).
    """
    em = model_of(kind)
    E = np.asarray(energy_j, dtype=float)
    vals = cells_of(em, *cells, **variables)
    b = vals["batch_size"]
    out = {}
    for held in sorted(set(b)):
        test = b == held
        try:
            res = fit_cells(E[~test], {v: a[~test] for v, a in vals.items()}, kind=kind, loss=loss)
        except FitError:
            out[int(held)] = float("nan")
            continue
        out[int(held)] = mape_pct(em.energy(**{v: a[test] for v, a in vals.items()}, **_values(res.params)), E[test])
    return out


def _values(params) -> dict[str, float]:
    return {n: float(p.value) for n, p in params.items()}


def predict_energy(kind: str, params: dict, *cells, **variables):
    """Energy [J] of the ``kind`` model at cells (as in :func:`fit_cells`; other variables are ignored);
    params may be arrays (e.g. bootstrap draws of shape (n, 1)) that broadcast."""
    em = model_of(kind)
    try:
        vals = em.take(cell(*cells, **variables))
    except ValueError as e:
        raise FitError(str(e)) from None
    return em.energy(**vals, **params)
