"""The measured energy of a replay attributed to each served request (:func:`attribute`): equal split of the
shared terms and Shapley values, both scaled to what the meter measured; the key numbers of a replay
(:func:`summary_numbers`).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from ..model import BATCHED
from .features import OWN_TERMS, SHARED_TERMS, feature_sums, gap_s, theta_vector, window_edges
from .folder import Replay
from .prediction import batched_fit
from .reconstruction import occupancy
from .scheduling import EXACT_SHAPLEY_MAX, shapley, step_time

__all__ = ["attribute", "summary_numbers"]


def _window_runs(first: np.ndarray, last: np.ndarray, w: int) -> np.ndarray:
    """Run id of each of ``w`` windows: windows linked by a request with modelled energy in both belong to
    one run (``first``/``last``: each request's first and last such window, -1 for none)."""
    linked = np.zeros(w + 1)
    has = first >= 0
    np.add.at(linked, first[has] + 1, 1.0)
    np.add.at(linked, last[has] + 1, -1.0)
    link = np.cumsum(linked)[:w] > 0  # window k is linked to window k-1
    return np.cumsum(~link) - 1


def attribute(replay: Replay, fit, with_shapley: bool = True, n_permutations: int = 200, seed: int = 0,
              exact_max: int = EXACT_SHAPLEY_MAX, max_batch: int | None = None,
              progress: bool = False) -> tuple[pd.DataFrame, dict]:
    """Each served request's share of the measured energy [J], by equal split and by Shapley value.

    Returns one row per served request and the totals: ``measured_busy_j`` (the meter windows that
    hold requests, less idle power over their gaps; attributions sum to it plus ``modelled_invalid_j``,
    the model's energy in windows the meter could not measure, 0 when all were measured), ``model_busy_j`` (the model's energy of the
    requests), ``residual_j`` = measured − model, ``unattributed_j`` (energy above idle in windows
    with no request, not attributed), ``idle_gap_j`` and ``idle_empty_windows_j`` (idle power over
    the gaps of windows with and without requests; the four add up to ``measured_j``), and the
    largest difference between the two attributions.

    Columns: ``own_j``, ``shared_j`` and ``model_j`` (the model's energy of the request, equal
    split), ``energy_j`` (equal split scaled to what was measured: each run of meter windows linked
    by requests shares its measured busy energy in proportion to ``model_j``; these sum to
    ``measured_busy_j``, and scaling per run rather than per window keeps timing jitter inside a
    run out of the split),
    ``shapley_model_j``, ``energy_shapley_j`` (Shapley scaled so that each busy period's total
    equals its ``energy_j`` total), ``shapley_stderr_j``, ``shapley_method``, ``shapley_diff_pct``,
    ``energy_per_token_j`` (per delivered token), ``busy_period``. ``progress`` shows a bar over the
    busy periods of a long replay (the CLI on a terminal; never inside a report page).
    """
    fit = batched_fit(fit)
    served = replay.served
    occ = occupancy(served, breaks=np.r_[replay.windows["start_s"], replay.windows["end_s"]])
    edges, win = window_edges(replay, None)
    own, shared, col, first, last = _modelled(occ, edges, theta_vector(fit.params))
    gap = gap_s(occ, edges)
    valid = np.isfinite(win["energy_j"].to_numpy())
    # a window the meter could not measure: its busy energy is the model's (stated as modelled_invalid_j)
    busy = np.where(valid, win["energy_j"].to_numpy() - replay.idle_power_w * gap, col)
    energy = _scaled_to_measured(own + shared, col, busy, first, last)
    table = served[["request_id", "arrival_s", "sent_s", "first_token_s", "last_token_s", "prompt_tokens",
                    "completion_tokens"]].rename(columns={"prompt_tokens": "input_len", "completion_tokens": "output_len"})
    table = table.assign(own_j=own, shared_j=shared, model_j=own + shared, energy_j=energy,
                         busy_period=occ.busy_period)
    if with_shapley:
        cap = max_batch or replay.meta.get("max_batch") or int(occ.count.max())
        _add_shapley(table, own, fit, step_time(occ), cap, n_permutations, seed, exact_max, progress)
    table["energy_per_token_j"] = table["energy_j"] / table["output_len"]
    return table, _totals(replay, table, win, col, busy, gap, valid, with_shapley)


def _modelled(occ, edges: np.ndarray, theta: np.ndarray):
    """The model's energy [J]: each request's own and equal-split shared terms, each window's total, and
    each request's first and last window with modelled energy (-1: none)."""
    per_window, per_request, first, last = feature_sums(occ, edges, theta)
    names = BATCHED.names
    own_idx = [names.index(k) for k in OWN_TERMS]
    shared_idx = [names.index(k) for k in SHARED_TERMS]
    own = per_request[:, own_idx] @ theta[own_idx]
    shared = per_request[:, shared_idx] @ theta[shared_idx]
    return own, shared, per_window @ theta, first, last


def _scaled_to_measured(model_r: np.ndarray, col: np.ndarray, busy: np.ndarray, first: np.ndarray,
                        last: np.ndarray) -> np.ndarray:
    """Each request's modelled energy ``model_r`` [J] scaled so that each run of windows linked by requests
    shares its measured busy energy ``busy`` in proportion to it (``col``: the model's energy per window)."""
    holds = col > 0
    run = _window_runs(first, last, len(col))
    run_busy = np.bincount(run[holds], weights=busy[holds], minlength=run.max() + 1)
    run_model = np.bincount(run[holds], weights=col[holds], minlength=run.max() + 1)
    factor = np.where(run_model > 0, run_busy / np.where(run_model > 0, run_model, 1.0), 0.0)
    return np.where(first >= 0, model_r * factor[run[np.maximum(first, 0)]], 0.0)


def _add_shapley(table: pd.DataFrame, own: np.ndarray, fit, step, cap: int, n_permutations: int, seed: int,
                 exact_max: int, progress: bool) -> None:
    """Add the Shapley columns to ``table``: per busy period, own terms plus the Shapley value of the shared
    energy, scaled so that the period's total equals its equal-split ``energy_j`` total."""
    phi = np.zeros(len(table))
    se = np.zeros(len(table))
    method = np.empty(len(table), dtype=object)
    tw, t0 = float(fit.params["thetaw"]), float(fit.params["theta0"])
    periods = table.groupby("busy_period").indices.items()
    for p, idx in tqdm(periods, desc="Shapley values per busy period", unit="period", leave=False,
                       disable=not progress or len(table) <= 2 * exact_max):
        ph, s, how = shapley(table["sent_s"].to_numpy()[idx], table["output_len"].to_numpy()[idx], tw, t0, step,
                             cap, n_permutations, seed + int(p), exact_max)
        phi[idx], se[idx], method[idx] = ph, s, how
    table["shapley_model_j"] = own + phi
    period_energy = table.groupby("busy_period")["energy_j"].transform("sum").to_numpy()
    period_model = table.groupby("busy_period")["shapley_model_j"].transform("sum").to_numpy()
    k = np.where(period_model > 0, period_energy / np.where(period_model > 0, period_model, 1.0), np.nan)
    table["energy_shapley_j"] = table["shapley_model_j"] * k
    table["shapley_stderr_j"] = se * k
    table["shapley_method"] = method
    table["shapley_diff_pct"] = 100.0 * (table["energy_shapley_j"] - table["energy_j"]) / table["energy_j"]


def _totals(replay: Replay, table: pd.DataFrame, win: pd.DataFrame, col: np.ndarray, busy: np.ndarray,
            gap: np.ndarray, valid: np.ndarray, with_shapley: bool) -> dict:
    """The totals of :func:`attribute` (see there)."""
    holds = col > 0
    win_flag = replay.windows["valid"].to_numpy(dtype=bool) if "valid" in replay.windows else np.ones(len(valid), bool)
    measured_busy = float(busy[holds & valid].sum())
    model_busy = float(col[valid].sum())
    totals = {
        "measured_j": float(win["energy_j"][valid].sum()),
        "invalid_windows": int((~valid).sum()),
        "flagged_windows": int((valid & ~win_flag).sum()),
        "modelled_invalid_j": float(col[~valid].sum()),
        "idle_gap_j": float((replay.idle_power_w * gap)[holds & valid].sum()),
        "measured_busy_j": measured_busy,
        "model_busy_j": model_busy,
        "residual_j": measured_busy - model_busy,
        "residual_pct": 100.0 * (measured_busy - model_busy) / model_busy if model_busy > 0 else float("nan"),
        "unattributed_j": float(busy[~holds & valid].sum()),
        "idle_empty_windows_j": float((replay.idle_power_w * gap)[~holds & valid].sum()),
        "attributed_j": float(table["energy_j"].sum()),
        "requests": int(len(table)),
        "failed_requests": int(len(replay.requests) - len(table)),
        "busy_periods": int(table["busy_period"].nunique()),
    }
    if with_shapley:
        totals["max_abs_shapley_diff_pct"] = float(table["shapley_diff_pct"].abs().max())  # NaN where skipped
        totals["mean_abs_shapley_diff_pct"] = float(table["shapley_diff_pct"].abs().mean())
        totals["shapley_methods"] = sorted(set(table["shapley_method"]))
    return totals


def summary_numbers(pred_total: dict, attr_totals: dict) -> dict:
    """The key numbers of a replay (for a page's key-results box and ``attribute --json``)."""
    out = {f"whole_{k}": v for k, v in pred_total.items()}
    out.update(attr_totals)
    return out
