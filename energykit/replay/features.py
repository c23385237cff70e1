"""The model's features of a reconstructed stream: each request's own terms and its share of the shared terms
of :data:`~energykit.model.BATCHED` in any set of time windows (energy = features @ θ), the idle seconds
of each window, and the reporting windows of a replay.

Helpers of :mod:`energykit.replay.prediction` and :mod:`energykit.replay.attribution`, not re-exported by the package.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from ..errors import DataError
from ..model import BATCHED
from .folder import Replay
from .reconstruction import Occupancy

__all__ = ["OWN_TERMS", "SHARED_TERMS", "own_cumulative", "window_features", "feature_sums", "theta_vector",
           "theta_draws", "gap_s", "window_edges"]

OWN_TERMS = ("theta1", "theta2", "theta3", "theta4", "theta5p")
"""Terms of :data:`~energykit.model.BATCHED` a request pays itself (prefill, its tokens)."""
SHARED_TERMS = ("thetaw", "theta0")
"""Terms paid once per step whoever is in it (θw per decode step, θ0 per admission)."""


def own_cumulative(occ: Occupancy, t: float) -> np.ndarray:
    """Own-term features of each request accumulated up to time ``t``: (n, 5) for θ1, θ2, θ3, θ4, θ5'.

    Its prefill and first token count at its first-token time, the other tokens evenly in between.
    """
    served = occ.requests
    i = served["prompt_tokens"].to_numpy(dtype=float)
    o = served["completion_tokens"].to_numpy(dtype=float)
    span = occ.last_s - occ.first_s
    frac = np.clip((t - occ.first_s) / np.where(span > 0, span, 1.0), 0.0, 1.0)
    pre = (t >= occ.first_s).astype(float)
    x = pre * (1.0 + (o - 1.0) * np.where(span > 0, frac, 1.0))
    return np.column_stack([i * i * pre, i * x, i * pre, x * x, x])


def window_features(occ: Occupancy, edges: np.ndarray, rows=None) -> np.ndarray:
    """Model features of requests ``rows`` (all by default) in each interval between ``edges``:
    (len(rows), len(edges)-1, 7), in :data:`~energykit.model.BATCHED`'s term order, so that energy = features @ θ."""
    n_all, w = len(occ.requests), len(edges) - 1
    rows = np.arange(n_all) if rows is None else np.asarray(rows)
    names = BATCHED.names
    out = np.zeros((len(rows), w, len(names)))
    own_idx = [names.index(k) for k in OWN_TERMS]
    cum = np.stack([own_cumulative(occ, t)[rows] for t in edges], axis=1)  # (n, w+1, 5)
    out[:, :, own_idx] = np.diff(cum, axis=1)
    G = np.r_[0.0, np.cumsum(occ.share)]
    piece = np.searchsorted(occ.breaks, edges).clip(0, len(occ.breaks) - 1)
    lo = np.maximum(occ.first[rows, None], piece[None, :-1])
    hi = np.minimum(occ.last[rows, None], piece[None, 1:])
    jw, j0 = names.index("thetaw"), names.index("theta0")
    out[:, :, jw] = np.where(hi > lo, G[np.maximum(hi, lo)] - G[lo], 0.0)
    win = np.clip(np.searchsorted(edges, occ.admissions, side="left") - 1, 0, w - 1)
    local = np.full(n_all, -1)
    local[rows] = np.arange(len(rows))
    for g, who in enumerate(occ.members):
        mine = local[who]
        mine = mine[mine >= 0]
        out[mine, win[g], jw] += 1.0 / len(who)
        out[mine, win[g], j0] += 1.0 / len(who)
    return out


def feature_sums(occ: Occupancy, edges: np.ndarray, theta: np.ndarray, chunk: int = 256):
    """What prediction and attribution need of :func:`window_features`, computed a chunk of requests at a time
    (memory ``chunk × windows × 7``): features per window summed over requests (w, 7), per request
    summed over windows (n, 7), and each request's first and last window with modelled energy (-1: none)."""
    n, w = len(occ.requests), len(edges) - 1
    per_window = np.zeros((w, len(theta)))
    per_request = np.zeros((n, len(theta)))
    first = np.full(n, -1)
    last = np.full(n, -1)
    for start in range(0, n, chunk):
        rows = np.arange(start, min(n, start + chunk))
        F = window_features(occ, edges, rows)
        per_window += F.sum(axis=0)
        per_request[rows] = F.sum(axis=1)
        touch = (F @ theta) > 0
        has = touch.any(axis=1)
        first[rows[has]] = np.argmax(touch[has], axis=1)
        last[rows[has]] = w - 1 - np.argmax(touch[has][:, ::-1], axis=1)
    return per_window, per_request, first, last


def theta_vector(params: dict) -> np.ndarray:
    return np.array([float(params.get(k, 0.0)) for k in BATCHED.names])


def theta_draws(draws: dict) -> np.ndarray:
    return np.column_stack([np.asarray(draws[k], dtype=float)[:, 0] for k in BATCHED.names])  # (n, 7)


def gap_s(occ: Occupancy, edges: np.ndarray) -> np.ndarray:
    """Seconds with no active request in each interval between ``edges``."""
    idle = np.where(occ.busy == 0, occ.duration_s, 0.0)
    C = np.r_[0.0, np.cumsum(idle)]
    piece = np.searchsorted(occ.breaks, edges).clip(0, len(occ.breaks) - 1)
    gap = np.diff(C[piece])
    before = np.clip(np.minimum(edges[1:], occ.breaks[0]) - edges[:-1], 0, None)
    after = np.clip(edges[1:] - np.maximum(edges[:-1], occ.breaks[-1]), 0, None)
    return gap + before + after


def window_edges(replay: Replay, window_s: float | None) -> tuple[np.ndarray, pd.DataFrame]:
    """Edges of the reporting windows and their measured energy: the meter's windows, or groups of
    them of about ``window_s`` seconds."""
    w = replay.windows
    if window_s is None:
        return np.r_[w["start_s"].to_numpy(), w["end_s"].iloc[-1]], w[["start_s", "end_s", "energy_j"]].reset_index(drop=True)
    if not (window_s > 0 and math.isfinite(window_s)):
        raise DataError(f"window_s {window_s!r} must be a positive number of seconds, e.g. 10")
    t0 = float(w["start_s"].iloc[0])
    group = np.floor((w["end_s"].to_numpy() - t0 - 1e-9) / window_s).astype(int)
    g = w.assign(group=group).groupby("group", sort=True).agg(
        start_s=("start_s", "min"), end_s=("end_s", "max"),
        energy_j=("energy_j", lambda x: x.sum(skipna=False))).reset_index(drop=True)
    return np.r_[g["start_s"].to_numpy(), g["end_s"].iloc[-1]], g
