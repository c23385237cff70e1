"""Apply a fitted energy model to production request traces and price simple policies.

Assumptions (stated again next to every number in the reports):

- each request is served as measured: inside a batch of ``batch_size`` concurrent sequences of the
  same lengths, so one request costs :math:`E(i, o) / B`;
- a policy changes only the lengths of a request (truncating the prompt, capping the output) and
  not its quality; the cost of summarising, of a retry, or of the answer a user did not get is
  outside the model;
- lengths outside the measured grid are extrapolated by the analytical model and flagged.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import pandas as pd

from .errors import FitError, ParamsError
from .fit import ModelFit, predict_energy
from .intervals import estimate_interval
from .hardware import HardwareModel, each_draw
from .model import tokens_per_j
from .sweetspots import extrapolated

__all__ = ["J_PER_KWH", "request_energy_j", "Policy", "truncate_inputs", "cap_outputs", "combine_policies",
           "policies_from_params", "extrapolation_error_pct", "trace_energy", "measured_range_best", "trace_summary", "policy_savings",
           "predicted_policy_savings"]

J_PER_KWH = 3.6e6


def request_energy_j(fit: ModelFit, input_len, output_len):
    """Energy of one request [J]: :math:`E(i, o) / B` for a request served in a batch of ``B``."""
    if fit.energy_model.has_batch:
        raise FitError(f"traces are priced by a fit at one batch size; use fits.get({fit.model!r}, BATCH) "
                       "(the batch-aware fit needs a batch size: fit.predict(i, o, B) / B)")
    return fit.predict(np.asarray(input_len, dtype=float), np.asarray(output_len, dtype=float)) / fit.batch_size


@dataclass(frozen=True)
class Policy:
    """A change of request lengths: ``apply(input_len, output_len) -> (input_len, output_len)``."""

    name: str
    apply: Callable
    assumption: str


def truncate_inputs(max_input_len: int) -> Policy:
    """Truncate (or summarise) prompts longer than ``max_input_len`` tokens to that length."""
    if max_input_len <= 0:
        raise ParamsError(f"truncate_inputs needs a positive length; got {max_input_len}")
    return Policy(
        f"truncate inputs > {max_input_len}",
        lambda i, o: (np.minimum(i, max_input_len), o),
        "prompt content past the limit is dropped or summarised at no energy cost; answer unchanged",
    )


def cap_outputs(max_output_len: int) -> Policy:
    """Cap generated tokens at ``max_output_len``."""
    if max_output_len <= 0:
        raise ParamsError(f"cap_outputs needs a positive length; got {max_output_len}")
    return Policy(
        f"cap outputs at {max_output_len}",
        lambda i, o: (i, np.minimum(o, max_output_len)),
        "answers are cut at the cap; fewer tokens are delivered",
    )


def combine_policies(*policies: Policy) -> Policy:
    """Apply several policies in order."""

    def apply(i, o):
        for p in policies:
            i, o = p.apply(i, o)
        return i, o

    return Policy(" + ".join(p.name for p in policies), apply, "; ".join(p.assumption for p in policies))


def policies_from_params(truncate: Sequence[int] = (), cap: Sequence[int] = ()) -> list[Policy]:
    """Policies from notebook parameters: one per truncation length, one per cap, and each pair."""
    out = [truncate_inputs(int(x)) for x in truncate] + [cap_outputs(int(y)) for y in cap]
    out += [combine_policies(truncate_inputs(int(x)), cap_outputs(int(y))) for x in truncate for y in cap]
    return out


def trace_energy(fit: ModelFit, trace: pd.DataFrame, within_pct: float = 10.0, best_tokens_per_j=None) -> pd.DataFrame:
    """Per-request energy, efficiency and flags for a trace.

    Columns added: ``energy_j`` [J per request], ``tokens_per_j`` [tokens/J], ``extrapolated``
    (a length outside the measured grid), ``near_sweet_spot`` (efficiency within ``within_pct`` % of
    ``best_tokens_per_j``, by default the best of the fitted model over the measured range).
    """
    i = trace["input_len"].to_numpy()
    o = trace["output_len"].to_numpy()
    e = request_energy_j(fit, i, o)
    out = trace.copy()
    out["energy_j"] = e
    with np.errstate(divide="ignore", invalid="ignore"):
        out["tokens_per_j"] = np.where(o > 0, tokens_per_j(e, 1, o), 0.0)  # e is per request
    out["extrapolated"] = extrapolated(fit, i, o)
    best = best_tokens_per_j if best_tokens_per_j is not None else measured_range_best(fit)
    out["near_sweet_spot"] = out["tokens_per_j"] >= (1 - within_pct / 100.0) * best
    return out


def measured_range_best(fit: ModelFit, n: int = 200) -> float:
    """Best fitted efficiency [tokens/J] over the measured range of lengths (log-spaced search)."""
    i = np.geomspace(fit.input_len.min(), fit.input_len.max(), n)
    o = np.geomspace(fit.output_len.min(), fit.output_len.max(), n)
    ii, oo = np.meshgrid(i, o, indexing="ij")
    return float(np.max(tokens_per_j(fit.predict(ii, oo), fit.batch_size, oo)))


def _total_draws(fit: ModelFit, i, o, n_draws: int) -> np.ndarray:
    """Total trace energy [J] under each bootstrap draw of the fit."""
    d = fit.draws(n_draws)
    return (predict_energy(fit.kind, d, np.asarray(i, float)[None, :], np.asarray(o, float)[None, :])
            / fit.batch_size).sum(axis=1)


def trace_summary(fit: ModelFit, trace: pd.DataFrame, within_pct: float = 10.0, n_draws: int = 200) -> dict:
    """Totals of one trace under one fit: requests, energy [kWh] with its 95 % interval, J/request,
    tokens/J, shares near the sweet spot and extrapolated."""
    t = trace_energy(fit, trace, within_pct)
    total = t["energy_j"].sum()
    _, lo, hi = estimate_interval(total, _total_draws(fit, t["input_len"], t["output_len"], n_draws))
    return {
        "model": fit.model,
        "requests": len(t),
        "total_energy_kwh": total / J_PER_KWH,
        "total_energy_kwh_low": lo / J_PER_KWH,
        "total_energy_kwh_high": hi / J_PER_KWH,
        "mean_energy_per_request_j": total / len(t),
        "mean_energy_per_request_j_low": lo / len(t),
        "mean_energy_per_request_j_high": hi / len(t),
        "median_energy_per_request_j": float(t["energy_j"].median()),
        "tokens_per_j": t["output_len"].sum() / total,
        "tokens_per_j_low": t["output_len"].sum() / hi,
        "tokens_per_j_high": t["output_len"].sum() / lo,
        "near_sweet_spot_pct": 100.0 * t["near_sweet_spot"].mean(),
        "extrapolated_pct": 100.0 * t["extrapolated"].mean(),
    }


def extrapolation_error_pct(fit: ModelFit) -> float:
    """How far off an extrapolated request's energy is allowed to be [%]: the fit's worst cross-validated cell error.

    A stated assumption, not a measurement: nothing measured says how the model errs outside the
    grid; the worst error on a held-out measured cell is the smallest honest allowance.
    """
    return float(np.nanmax(fit.cv_ape_pct)) if np.isfinite(fit.cv_ape_pct).any() else float("nan")


def _widened(energy: Callable, outside: Callable, i0, o0, i1, o1, err: float):
    """Range of (saving %, per-token saving %) when every extrapolated request's energy is off by ±``err``.

    ``energy(i, o)`` prices requests, ``outside(i, o)`` flags those outside the measured grid. Requests
    outside it before and after the policy are scaled independently by 1 ± err (the four corners), so
    the range grows with the share of requests the policy leaves extrapolated.
    """
    e0, e1 = energy(i0, o0), energy(i1, o1)
    x0, x1 = outside(i0, o0), outside(i1, o1)
    savings, per_token = [], []
    for a in (1 - err, 1 + err):
        for b in (1 - err, 1 + err):
            base, after = np.where(x0, a * e0, e0).sum(), np.where(x1, b * e1, e1).sum()
            savings.append(100.0 * (1 - after / base))
            per_token.append(100.0 * (1 - (after / o1.sum()) / (base / o0.sum())))
    return (min(savings), max(savings)), (min(per_token), max(per_token))


def _widen_for_extrapolation(table: pd.DataFrame, energy: Callable, outside: Callable, trace: pd.DataFrame,
                             policies: Sequence[Policy], err_pct: float) -> pd.DataFrame:
    """Add ``extrapolated_pct`` and ``extrapolation_error_pct`` and widen the savings' intervals (see :func:`_widened`)."""
    i0, o0 = trace["input_len"].to_numpy(), trace["output_len"].to_numpy()
    shares = []
    for row, p in zip(table.index, policies):
        i1, o1 = p.apply(i0, o0)
        shares.append(100.0 * np.mean(outside(i1, o1)))
        if np.isfinite(err_pct):
            widened = _widened(energy, outside, i0, o0, i1, o1, err_pct / 100.0)
            for col, (lo, hi) in zip(("saving_pct", "per_token_saving_pct"), widened):
                if f"{col}_low" in table:
                    table.loc[row, f"{col}_low"] = min(table.loc[row, f"{col}_low"], lo)
                    table.loc[row, f"{col}_high"] = max(table.loc[row, f"{col}_high"], hi)
    table.insert(len(table.columns) - 1, "extrapolated_pct", shares)
    table.insert(len(table.columns) - 1, "extrapolation_error_pct", err_pct)
    return table


def policy_savings(fit: ModelFit, trace: pd.DataFrame, policies: Sequence[Policy], n_draws: int = 200) -> pd.DataFrame:
    """Energy saved by each policy on a trace, with the tokens it gives up and its assumption.

    ``saving_pct`` compares total energy; ``per_token_saving_pct`` compares joules per delivered
    output token (a cap saves energy but delivers fewer tokens). Both are savings: positive means
    less energy. Their 95 % intervals carry θ's bootstrap uncertainty (each draw prices the trace
    before and after with the same θ), widened to cover every extrapolated request being off by
    ``extrapolation_error_pct`` (the column of that name); ``extrapolated_pct`` is the share of
    requests outside the measured grid after the policy.
    """
    def totals(i, o):
        return request_energy_j(fit, i, o).sum(), _total_draws(fit, i, o, n_draws)

    table = _policy_table(totals, trace, policies)
    return _widen_for_extrapolation(table, lambda i, o: request_energy_j(fit, i, o), lambda i, o: extrapolated(fit, i, o),
                                    trace, policies, extrapolation_error_pct(fit))


def predicted_policy_savings(hw: HardwareModel, geom: dict, batch_size: int, trace: pd.DataFrame, policies,
                             dtype: str = "bfloat16", n: int = 100, measured_range=None,
                             error_pct: float = float("nan")) -> pd.DataFrame:
    """Savings of each policy on a trace for a *predicted* model (:mod:`energykit.hardware`), with 95 %
    intervals over the calibration's bootstrap draws (each draw prices the trace before and after
    with the same θ).

    With ``measured_range`` = (input min, input max, output min, output max) of the calibration
    cells, ``extrapolated_pct`` says which share of requests lies outside it, and the intervals widen
    so that each of those may be off by ±``error_pct`` % (e.g. the leave-one-model-out error).
    """
    est = hw.theta(geom, batch_size, dtype)
    draws = [hw.theta(geom, batch_size, dtype, c) for c in each_draw(hw.draws(n))]

    def totals(i, o):
        i, o = np.asarray(i, float), np.asarray(o, float)
        return (predict_energy("sweetspot", est, i, o).sum(),
                np.array([predict_energy("sweetspot", t, i, o).sum() for t in draws]))

    table = _policy_table(totals, trace, policies)[["policy", "saving_pct", "saving_pct_low", "saving_pct_high",
                                                      "assumption"]]
    if measured_range is None:
        return table
    i_lo, i_hi, o_lo, o_hi = measured_range

    def outside(i, o):
        return (i < i_lo) | (i > i_hi) | (o < o_lo) | (o > o_hi)

    return _widen_for_extrapolation(table, lambda i, o: predict_energy("sweetspot", est, np.asarray(i, float),
                                                                       np.asarray(o, float)),
                                    outside, trace, policies, error_pct)


def _policy_table(totals: Callable, trace: pd.DataFrame, policies: Sequence[Policy]) -> pd.DataFrame:
    """Savings of each policy from ``totals(i, o) -> (total energy, its bootstrap draws)``."""
    i0 = trace["input_len"].to_numpy()
    o0 = trace["output_len"].to_numpy()
    base_total, base_draws = totals(i0, o0)
    base_tokens = o0.sum()
    rows = []
    for p in policies:
        i1, o1 = p.apply(i0, o0)
        after, after_draws = totals(i1, o1)
        saving = 100.0 * (1 - after / base_total)
        _, s_lo, s_hi = estimate_interval(saving, 100.0 * (1 - after_draws / base_draws))
        _, k_lo, k_hi = estimate_interval(after, after_draws)
        per_token = 100.0 * (1 - (after / o1.sum()) / (base_total / base_tokens))
        _, t_lo, t_hi = estimate_interval(per_token, 100.0 * (1 - (after_draws / o1.sum()) / (base_draws / base_tokens)))
        rows.append(
            {
                "policy": p.name,
                "requests_changed_pct": 100.0 * np.mean((i1 != i0) | (o1 != o0)),
                "energy_kwh": after / J_PER_KWH,
                "energy_kwh_low": k_lo / J_PER_KWH,
                "energy_kwh_high": k_hi / J_PER_KWH,
                "saving_pct": saving,
                "saving_pct_low": s_lo,
                "saving_pct_high": s_hi,
                "output_tokens_kept_pct": 100.0 * o1.sum() / base_tokens,
                "per_token_saving_pct": per_token,
                "per_token_saving_pct_low": t_lo,
                "per_token_saving_pct_high": t_hi,
                "assumption": p.assumption,
            }
        )
    return pd.DataFrame(rows)
