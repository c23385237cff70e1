"""Batch occupancy reconstructed from token times: which requests share each decode step (:func:`occupancy`).

Request ``r`` emits ``o_r`` tokens, taken as evenly spaced between its first and last token. The time axis
is cut at every first- and last-token time and every meter-window boundary; the number of steps in each
piece solves, in least squares, that every request's steps add up to its tokens, pulled towards a prior
from the pieces' durations (a step time linear in the batch plus a prefill time per prompt token).
Admissions are the distinct first-token times.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import sparse
from scipy.optimize import lsq_linear, nnls

from ..errors import DataError

__all__ = ["Occupancy", "occupancy"]


@dataclass
class Occupancy:
    """Batch occupancy reconstructed from token times.

    ``breaks`` [s] cut the time axis into pieces ``k``. Request ``r`` decodes (its tokens 2 … o) in
    pieces ``first[r] … last[r]-1``, where ``count[k]`` requests decode and ``steps[k]`` steps fall;
    ``busy[k]`` also counts a request in the admission step that opened a busy stretch
    (``[t_first - lead_s, t_first]``, from sending to its first token).
    Admission ``g`` at ``admissions[g]`` [s] is one step shared by ``members[g]`` (the requests it
    admits and those decoding across it); ``admitted_piece[g]`` is the piece holding that step for
    the decoders (-1 when none decoded).
    """

    requests: pd.DataFrame
    breaks: np.ndarray
    count: np.ndarray
    busy: np.ndarray
    steps: np.ndarray
    first: np.ndarray
    last: np.ndarray
    first_s: np.ndarray
    last_s: np.ndarray
    step_s: np.ndarray
    admissions: np.ndarray
    members: list
    admitted_piece: np.ndarray
    lead_s: np.ndarray
    """Seconds of each request's admission step before its first token where it opened a busy stretch (else 0)."""

    @property
    def duration_s(self) -> np.ndarray:
        return np.diff(self.breaks)

    @property
    def share(self) -> np.ndarray:
        """Decode steps per decoding request in each piece, the admission steps taken out (0 where none decodes)."""
        s = self.steps.copy()
        k = self.admitted_piece[self.admitted_piece >= 0]
        np.subtract.at(s, k, 1.0)
        return np.where(self.count > 0, np.maximum(s, 0.0) / np.maximum(self.count, 1), 0.0)

    @property
    def busy_period(self) -> np.ndarray:
        """Busy period of each request (0, 1, …): requests linked by overlapping activity."""
        start = self.first_s - np.where(self.lead_s > 0, self.lead_s, self.step_s)
        order = np.argsort(start, kind="stable")
        period = np.zeros(len(start), dtype=np.int64)
        p, reach = -1, -np.inf
        for r in order:
            if start[r] > reach:
                p += 1
            period[r] = p
            reach = max(reach, self.last_s[r])
        return period


def occupancy(served: pd.DataFrame, breaks=(), pull: float = 0.05) -> Occupancy:
    """Reconstruct which requests share each decode step from their first- and last-token times.

    Parameters
    ----------
    served : DataFrame
        Served requests: ``sent_s``, ``first_token_s``, ``last_token_s`` [s] and ``completion_tokens``.
    breaks : array_like
        Extra times [s] at which to cut the axis (the meter windows' boundaries).
    pull : float
        Weight of the pull of each piece's step count towards the mean step rate of the requests
        decoding in it (least squares: every request's steps add up to its tokens).
    """
    if len(served) == 0:
        raise DataError("the replay has no served request; nothing to reconstruct")
    o = served["completion_tokens"].to_numpy(dtype=float)
    sent = served["sent_s"].to_numpy(dtype=float)
    t1, t2, step = _token_times(served)
    groups = _admission_groups(t1, t2, 0.25 * float(np.min(step)))
    lead = _lead_s(groups, t1, sent, step)
    cuts = np.unique(np.concatenate([t1 - lead, t1, t2, np.asarray(breaks, dtype=float)]))
    m = len(cuts) - 1
    first = np.searchsorted(cuts, t1)
    last = np.searchsorted(cuts, t2)
    count = _active(m, first, last).round().astype(np.int64)
    busy = _active(m, np.searchsorted(cuts, t1 - lead), last).round().astype(np.int64)
    dur = np.diff(cuts)
    rate = _active(m, first, last, 1.0 / step)
    s0 = np.where(count > 0, rate / np.maximum(count, 1) * dur, 0.0)
    prompt = served["prompt_tokens"].to_numpy(dtype=float)
    admissions, members, pieces, prefill_tokens = _admission_steps(groups, cuts, prompt)
    steps = _solve_steps(o, first, last, count, dur, prefill_tokens, s0, pull)
    return Occupancy(served.reset_index(drop=True), cuts, count, busy, steps, first, last, t1, t2, step,
                     admissions, members, pieces, lead)


def _token_times(served: pd.DataFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each request's first- and last-token times [s] and its step time [s].

    A reply delivered in one chunk (not streamed) is taken as decoded over the typical step before it
    arrived; a replay where every reply of more than one token did is refused.
    """
    o = served["completion_tokens"].to_numpy(dtype=float)
    t1 = served["first_token_s"].to_numpy(dtype=float)
    t2 = served["last_token_s"].to_numpy(dtype=float)
    sent = served["sent_s"].to_numpy(dtype=float)
    burst = (o > 1) & (t2 - t1 <= 1e-9)  # every token in one chunk: a reply that was not streamed
    if burst.any() and burst.sum() == (o > 1).sum():
        raise DataError(f"all {int(burst.sum())} requests of more than one token got their tokens at once "
                        "(first_token_s = last_token_s): the replay did not stream, and decode steps cannot be "
                        "placed; replay again with stream: true")
    multi = (o > 1) & (t2 > t1)
    step = np.full(len(o), np.nan)
    step[multi] = (t2[multi] - t1[multi]) / (o[multi] - 1)
    if multi.any():
        typical = float(np.median(step[multi]))
    else:
        waits = (served["first_token_s"] - served["sent_s"]).to_numpy(dtype=float)
        typical = float(np.median(waits[waits > 0])) if (waits > 0).any() else 1e-3
    step = np.where(multi, step, typical)
    # a reply delivered in one chunk: its tokens were decoded over the typical steps before it arrived
    t1 = np.where(burst, np.maximum(sent, t2 - (o - 1) * typical), t1)
    step = np.where(burst, (t2 - t1) / np.maximum(o - 1, 1), step)
    step = np.where(step > 0, step, typical)
    return t1, t2, step


def _admission_groups(t1: np.ndarray, t2: np.ndarray, tol: float) -> list[tuple]:
    """Admissions: first-token times within ``tol`` [s] of each other are one step.

    Each is ``(admitted, decoding across the admission, first first-token time, last first-token time)``.
    """
    order = np.argsort(t1, kind="stable")
    group = np.cumsum(np.r_[True, np.diff(t1[order]) > tol]) - 1
    groups = []
    for g in range(group[-1] + 1):
        new = order[group == g]
        t_lo = float(t1[new].min())
        groups.append((new, np.flatnonzero((t1 < t_lo - tol) & (t2 >= t_lo - tol)), t_lo, float(t1[new].max())))
    return groups


def _lead_s(groups: list[tuple], t1: np.ndarray, sent: np.ndarray, step: np.ndarray) -> np.ndarray:
    """Seconds of each request's admission step before its first token where it opened a busy stretch (else 0).

    The admission step into an empty server lasts from sending to the first token (it holds the
    prefill); one joining a running batch lies inside the others' pieces.
    """
    lead = np.zeros(len(t1))
    for new, decoding, _, _ in groups:
        if not len(decoding):
            wait = t1[new] - sent[new]
            lead[new] = np.where(wait > 0, wait, step[new])
    return lead


def _active(m: int, lo: np.ndarray, hi: np.ndarray, weight=1.0) -> np.ndarray:
    """Sum of ``weight`` over the requests active in each of ``m`` pieces (request r in pieces ``lo[r] … hi[r]-1``)."""
    d = np.zeros(m + 1)
    np.add.at(d, lo, weight)
    np.add.at(d, hi, -weight)
    return np.cumsum(d)[:m]


def _admission_steps(groups: list[tuple], cuts: np.ndarray, prompt: np.ndarray):
    """Each admission's time [s], members and piece (-1: none decoded across it), and the prompt tokens
    prefilled in the admission step that ends each piece."""
    admissions, members, pieces = [], [], []
    prefill_tokens = np.zeros(len(cuts) - 1)
    for new, decoding, t_lo, t_hi in groups:
        admissions.append(t_hi)
        members.append(np.union1d(new, decoding))
        k = int(np.searchsorted(cuts, t_lo, side="left") - 1) if len(decoding) else -1
        pieces.append(k)
        if k >= 0:
            prefill_tokens[k] += prompt[new].sum()
    return np.array(admissions), members, np.array(pieces, dtype=np.int64), prefill_tokens


def _solve_steps(o, first, last, count, dur, prefill_tokens, s0, pull: float) -> np.ndarray:
    """Decode steps in each piece: every request's steps add up to ``o - 1`` (least squares, non-negative),
    pulled towards a prior from the pieces' durations, refined four times."""
    m = len(count)
    live = np.flatnonzero(count > 0)
    steps = np.zeros(m)
    if not len(live):
        return steps
    col = np.full(m, -1)
    col[live] = np.arange(len(live))
    rows = np.repeat(np.arange(len(o)), last - first)
    cols = col[np.concatenate([np.arange(a, b) for a, b in zip(first, last)] + [np.zeros(0, int)])]
    A = sparse.csr_matrix((np.ones(len(rows)), (rows, cols)), shape=(len(o), len(live)))
    b_live, d_live, p_live = count[live].astype(float), dur[live], prefill_tokens[live]
    prior = s0[live]
    for _ in range(4):
        scale = np.maximum(prior, 1e-9)
        # unknowns x = s / prior (the pull is relative): Σ_k prior_k x_k = o_r - 1 per request; pull · (x - 1) = 0
        lhs = sparse.vstack([A @ sparse.diags(scale), pull * sparse.identity(len(live))]).tocsr()
        rhs = np.concatenate([o - 1.0, pull * np.ones(len(live))])
        x = lsq_linear(lhs, rhs, bounds=(0.0, np.inf), lsmr_tol="auto", tol=1e-10, max_iter=5000).x
        s_live = x * scale
        # the pieces' durations: steps · (base + per_request · B) + prefill · prompt tokens admitted in them
        coef, _ = nnls(np.column_stack([s_live, s_live * b_live, p_live]), d_live)
        per_step = coef[0] + coef[1] * b_live
        if not (per_step > 0).all():
            break
        prior = np.maximum(d_live - coef[2] * p_live, 0.0) / per_step
    steps[live] = s_live
    return steps
