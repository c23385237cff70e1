"""The replay's energy predicted from a fit of :data:`~energykit.model.BATCHED` (:func:`predict`), and the
batch-aware fit to predict with (:func:`batched_fit`, :func:`server_fit`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from ..dataset import load_many
from ..errors import FitError
from ..fit import fit_dataset, load_fits
from ..intervals import LEVEL, estimate_interval
from ..iotools import resolve
from ..state import kit_netcdf_kind
from .features import feature_sums, gap_s, theta_vector, theta_draws, window_edges
from .folder import Replay
from .reconstruction import occupancy

__all__ = ["batched_fit", "server_fit", "predict"]


def batched_fit(fits, model: str | None = None, prefer: str | None = None):
    """The batch-aware fit to replay against: ``fits`` is a :class:`~energykit.fit.FitSet` or a
    batched :class:`~energykit.fit.ModelFit`; ``model`` picks one of several; without it,
    ``prefer`` (the model the replay served, ``replay.json``'s ``model``) does when the fit holds it."""
    if getattr(fits, "kind", None) == "batched":
        return fits
    if getattr(fits, "kind", None) is not None:
        raise FitError(f"the {fits.kind} fit of {fits.model} has no batch size: a replay needs E(i, o, B) fitted "
                       "across batch sizes (measure at least two batch sizes)")
    batched = getattr(fits, "batched", {})
    if not batched:
        raise FitError("the fit has no batch-aware model E(i, o, B): measure the same server at two or more batch "
                       "sizes (e.g. batch_sizes: [1, 4, 16]) and fit again")
    if model is None and prefer in batched:
        model = prefer
    if model is None:
        if len(batched) > 1:
            raise FitError(f"the fit holds E(i, o, B) of several models ({', '.join(batched)}); choose one with --model")
        return next(iter(batched.values()))
    if model not in batched:
        raise FitError(f"model {model!r} has no E(i, o, B) in the fit; available: {', '.join(batched) or 'none'}")
    return batched[model]


def server_fit(source, model: str | None = None, loss: str = "l1", cv_folds: int = 5, prefer: str | None = None):
    """The batch-aware fit of the replayed server from ``source``: a fit file (``energykit fit --save``)
    or measured data (one path or a list, fitted here); ``model``/``prefer`` as in :func:`batched_fit`."""
    paths = [source] if isinstance(source, (str, Path)) else list(source)
    if len(paths) == 1 and str(paths[0]).endswith(".nc") and kit_netcdf_kind(resolve(paths[0])) == "fits":
        fits = load_fits(paths[0])
    else:
        fits = fit_dataset(load_many(paths), models=[model] if model else None, loss=loss, cv_folds=cv_folds)
    return batched_fit(fits, model, prefer)


def predict(replay: Replay, fit, window_s: float | None = None, n_draws: int = 200, level: float = LEVEL):
    """Predicted against measured energy of the replay, per window and in total, with the fit's interval.

    Parameters
    ----------
    replay : Replay
    fit : ModelFit
        A fit of :data:`~energykit.model.BATCHED` (see :func:`batched_fit`).
    window_s : float, optional
        Report windows of about this length [s] (groups of meter windows); the meter's own by default.
    n_draws : int
        Bootstrap draws of the fit for the interval.

    Returns
    -------
    (DataFrame, dict)
        One row per window (``start_s``, ``end_s``, ``measured_j``, ``predicted_j`` with
        ``predicted_j_low``/``_high``, ``idle_j`` over its gaps, ``gap_s``, ``error_pct``), and the
        totals over the windows the meter measured (same keys, summed; the interval from the draws of
        the sum), with ``invalid_windows`` (measured NaN) and the energy predicted in them.
    """
    fit = batched_fit(fit)
    occ = occupancy(replay.served, breaks=np.r_[replay.windows["start_s"], replay.windows["end_s"]])
    edges, win = window_edges(replay, window_s)
    X = feature_sums(occ, edges, theta_vector(fit.params))[0]  # (w, 7)
    gap = gap_s(occ, edges)
    idle_j = replay.idle_power_w * gap
    theta = theta_vector(fit.params)
    draws = theta_draws(fit.draws(n_draws))
    est = X @ theta + idle_j
    samples = draws @ X.T + idle_j[None, :]
    est, lo, hi = estimate_interval(est, samples, level)
    table = pd.DataFrame({"start_s": edges[:-1], "end_s": edges[1:], "measured_j": win["energy_j"].to_numpy(),
                          "predicted_j": est, "predicted_j_low": lo, "predicted_j_high": hi,
                          "idle_j": idle_j, "gap_s": gap})
    table["error_pct"] = 100.0 * (table["predicted_j"] - table["measured_j"]) / table["measured_j"].where(table["measured_j"] > 0)
    ok = np.isfinite(table["measured_j"].to_numpy())  # totals over the windows the meter measured
    t_est, t_lo, t_hi = estimate_interval(float(est[ok].sum()), samples[:, ok].sum(axis=1), level)
    total = {"measured_j": float(table["measured_j"][ok].sum()), "predicted_j": float(t_est),
             "predicted_j_low": float(t_lo), "predicted_j_high": float(t_hi), "idle_j": float(idle_j[ok].sum()),
             "gap_s": float(gap[ok].sum()), "duration_s": float(edges[-1] - edges[0]),
             "invalid_windows": int((~ok).sum()), "predicted_invalid_j": float(est[~ok].sum())}
    total["error_pct"] = 100.0 * (total["predicted_j"] - total["measured_j"]) / total["measured_j"] \
        if total["measured_j"] > 0 else float("nan")
    return table, total
