"""Intervals of quantities derived from θ, over the fit's wild-bootstrap draws.

The draws belong to the fit (:meth:`energykit.fit.ModelFit.draws`; the resampling is
:func:`energykit.fit.wild_bootstrap`): each perturbs every cell's mean energy by its own fitted
residual times a random sign on the log scale, :math:`E^*_k = \\hat E_k (E_k / \\hat E_k)^{v_k}`, and refits. Any
quantity computed from θ — ``o*(i)``, a best/worst ratio, a sweet-spot region, workload savings —
gets its interval as percentiles over the draws; lmfit's ``stderr`` is reported beside θ.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from .fit import ModelFit
from .intervals import LEVEL, estimate_interval

__all__ = ["theta_table", "o_star_interval", "apply"]


def theta_table(fit: ModelFit, n: int = 200, level: float = LEVEL) -> pd.DataFrame:
    """θ with lmfit standard errors and bootstrap intervals, one row per parameter."""
    d = fit.draws(n)
    known = fit.identified(n)
    rows = []
    for name, value in fit.params.items():
        _, lo, hi = estimate_interval(value, d[name][:, 0], level)
        rows.append({"param": name, "value": value, "stderr": fit.stderr[name], "value_low": lo, "value_high": hi,
                     "identified": known[name]})
    return pd.DataFrame(rows)


def o_star_interval(fit: ModelFit, input_len, n: int = 200, level: float = LEVEL, batch_size=None):
    """``o*(i)`` [tokens] with its interval: (estimate, low, high).

    All NaN ("n/a") when the cells do not identify θ4 (it is zero in most draws): ``o*`` then has
    no meaningful value. The upper bound is inf when θ4 = 0 in more than the interval's tail of draws.
    ``batch_size`` [requests]: for a fit of the batch-aware model, ``o*(i, B)``.
    """
    i = np.atleast_1d(np.asarray(input_len, dtype=float))
    if not fit.identified(n)["theta4"]:
        nan = np.full(i.shape, np.nan)
        return nan, nan.copy(), nan.copy()
    extra = {"batch_size": batch_size} if fit.energy_model.has_batch else {}
    samples = fit.energy_model.o_star(fit.draws(n), i[None, :], **extra)
    est = fit.o_star(i, batch_size)
    return estimate_interval(est, samples, level)


def apply(fit: ModelFit, func, n: int = 200, level: float = LEVEL):
    """Interval of any scalar ``func(params_dict)`` over the draws: (estimate, low, high)."""
    d = fit.draws(n)
    values = np.array([func({k: float(v[j, 0]) for k, v in d.items()}) for j in range(n)])
    est = func(fit.params)
    _, lo, hi = estimate_interval(est, values, level)
    return est, float(lo), float(hi)
