"""Confidence intervals for θ and everything derived from it, by a wild bootstrap of the fit.

Each bootstrap draw perturbs every cell's mean energy by its own fitted relative residual times a
random sign (Rademacher weights; Wu 1986, Liu 1988), :math:`E^*_k = \\hat E_k (1 + v_k r_k)`, and
refits the model with the same loss. The spread of the refitted θ carries both the measurement
noise and the part of the data the model does not explain, works with any number of repeats
(one repeat included, unlike resampling repeats), and respects θ ≥ 0 (unlike a normal
approximation of lmfit's covariance, which is reported beside it as ``stderr``). Any quantity
computed from θ — predicted energies, ``o*(i)``, sweet-spot regions, workload savings — gets its
interval as percentiles over the draws.
"""

from __future__ import annotations

import numpy as np

from .fitting import LINEAR, THETA, ModelFit, _design, _irls, predict_energy

LEVEL = 0.95


def wild_bootstrap(X: np.ndarray, observed: np.ndarray, coef: np.ndarray, loss: str, n: int, seed: int = 0) -> np.ndarray:
    r"""Refitted coefficients (n, k) of a non-negative linear relative-error fit ``X @ coef ≈ observed``.

    Each draw sets :math:`E^* = \hat E (1 + v r)` with Rademacher ``v`` and the fitted relative
    residuals ``r``, then refits with the same loss.
    """
    rng = np.random.default_rng(seed)
    e_hat = X @ coef
    rel = (observed - e_hat) / e_hat
    out = np.empty((n, len(coef)))
    for k in range(n):
        e_star = np.maximum(e_hat * (1 + rng.choice([-1.0, 1.0], size=len(rel)) * rel), 1e-12)
        out[k] = _irls(X, e_star, loss)[0]
    return out


def draws(fit: ModelFit, n: int = 200, seed: int = 0) -> dict[str, np.ndarray]:
    """Bootstrap draws of the parameters of ``fit``: ``{name: array of shape (n, 1)}``.

    The trailing axis of length 1 lets draws broadcast against arrays of lengths.
    Results are cached on the fit per (n, seed).
    """
    cache = fit.__dict__.setdefault("_draws", {})
    if (n, seed) in cache:
        return cache[(n, seed)]
    names = THETA if fit.kind == "sweetspot" else LINEAR
    X = _design(fit.kind, fit.input_len, fit.output_len)
    coef = np.array([fit.params[name] for name in names])
    out = wild_bootstrap(X, fit.energy_j, coef, fit.result.loss, n, seed)
    result = {name: out[:, [j]] for j, name in enumerate(names)}
    cache[(n, seed)] = result
    return result


def interval(samples, level: float = LEVEL, axis: int = 0):
    """Percentile interval of ``samples`` along ``axis``: (low, high).

    Quantiles are sample values (no interpolation), so infinite draws (``o*`` where θ4 = 0) stay
    infinite instead of turning into NaN.
    """
    a = (1 - level) / 2
    q = dict(axis=axis, method="inverted_cdf")
    return np.nanquantile(samples, a, **q), np.nanquantile(samples, 1 - a, **q)


def around(estimate, low, high):
    """Extend a percentile interval to contain the point estimate.

    Where a coefficient sits on its θ ≥ 0 bound the bootstrap distribution is one-sided and its
    percentile interval can miss the estimate; the reported interval then reaches the estimate.
    """
    return np.minimum(low, estimate), np.maximum(high, estimate)


def predict_interval(fit: ModelFit, input_len, output_len, n: int = 200, level: float = LEVEL):
    """Predicted energy [J] at the given lengths with its interval: (estimate, low, high)."""
    i = np.atleast_1d(np.asarray(input_len, dtype=float))
    o = np.atleast_1d(np.asarray(output_len, dtype=float))
    samples = predict_energy(fit.kind, draws(fit, n), i[None, :], o[None, :])
    est = fit.predict(i, o)
    return (est, *around(est, *interval(samples, level)))


def theta_table(fit: ModelFit, n: int = 200, level: float = LEVEL):
    """θ with lmfit standard errors and bootstrap intervals, one row per parameter."""
    import pandas as pd

    d = draws(fit, n)
    rows = []
    for name, value in fit.params.items():
        lo, hi = around(value, *interval(d[name][:, 0], level))
        rows.append({"param": name, "value": value, "stderr": fit.stderr[name], "ci_low": lo, "ci_high": hi})
    return pd.DataFrame(rows)


def o_star_interval(fit: ModelFit, input_len, n: int = 200, level: float = LEVEL):
    """``o*(i)`` [tokens] with its interval: (estimate, low, high); inf where θ4 = 0 in a draw."""
    from .sweetspots import o_star

    i = np.atleast_1d(np.asarray(input_len, dtype=float))
    d = draws(fit, n)
    num = d["theta1"] * i[None, :] ** 2 + d["theta3"] * i[None, :] + d["theta0"]
    with np.errstate(divide="ignore", invalid="ignore"):
        samples = np.where(d["theta4"] > 0, np.sqrt(num / d["theta4"]), np.inf)
    est = o_star(fit.params, i)
    return (est, *around(est, *interval(samples, level)))


def apply(fit: ModelFit, func, n: int = 200, level: float = LEVEL):
    """Interval of any scalar ``func(params_dict)`` over the draws: (estimate, low, high)."""
    d = draws(fit, n)
    values = np.array([func({k: float(v[j, 0]) for k, v in d.items()}) for j in range(n)])
    est = func(fit.params)
    lo, hi = around(est, *interval(values, level))
    return est, float(lo), float(hi)

