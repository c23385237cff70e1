"""A continuous-batching scheduler (:func:`schedule`), the step time it runs at (:class:`StepTime`, fitted on a
replay by :func:`step_time`), and the Shapley values of a busy period's shared energy (:func:`shapley`).

The game: ``v(S)`` is the shared energy (θw per decode step, θ0 per admission) of serving only the
requests ``S`` at their arrival times. Exact over all coalitions up to :data:`EXACT_SHAPLEY_MAX` requests,
sampled permutations above (Castro, Gómez and Tejada 2009, doi:10.1016/j.cor.2008.04.004), none above
:data:`SHAPLEY_MAX`.
"""

from __future__ import annotations

import bisect
import heapq
import math
from dataclasses import dataclass
from itertools import combinations

import numpy as np
from scipy.optimize import nnls

from .reconstruction import Occupancy

__all__ = ["EXACT_SHAPLEY_MAX", "SHAPLEY_MAX", "StepTime", "step_time", "schedule", "shapley"]

EXACT_SHAPLEY_MAX = 12
"""Busy periods of at most this many requests get exact Shapley values (2^n coalitions); larger ones sampled permutations."""
SHAPLEY_MAX = 2000
"""Busy periods of more requests get no Shapley value (NaN, method "skipped"): sampling costs grow as n²."""


@dataclass(frozen=True)
class StepTime:
    """Duration of a decode step [s] at ``B`` requests: ``base_s + per_request_s · B``.

    >>> round(StepTime(0.008, 0.0005)(16), 6)
    0.016
    """

    base_s: float
    per_request_s: float

    def __call__(self, batch_size):
        return self.base_s + self.per_request_s * batch_size


def step_time(occ: Occupancy) -> StepTime:
    """Step time against batch occupancy, fitted (non-negative least squares) on the replay's pieces."""
    live = (occ.count > 0) & (occ.steps > 1e-9)
    if live.sum() < 2:
        return StepTime(float(np.median(occ.step_s)), 0.0)
    d, s, b = occ.duration_s[live], occ.steps[live], occ.count[live].astype(float)
    coef, _ = nnls(np.column_stack([s, s * b]), d)  # duration = steps · (base + per_request · B)
    if coef.sum() <= 0:
        coef = np.array([float(np.median(occ.step_s)), 0.0])
    return StepTime(float(coef[0]), float(coef[1]))


def schedule(arrival_s, output_len, step: StepTime, max_batch: int | None = None) -> tuple[int, int]:
    """Decode steps and admissions of a continuous-batching server serving these requests alone.

    Each step, requests that have arrived are admitted (up to ``max_batch`` active; an admission
    is a step that prefills them, and yields their first token), then every active request emits
    one token. Runs of identical steps are jumped over, so the cost is per event, not per step.

    >>> schedule([0.0, 0.0, 5.0], [10, 20, 5], StepTime(0.02, 0.0))  # two together, one alone later
    (25, 2)
    """
    order = np.argsort(arrival_s, kind="stable")
    arr = np.asarray(arrival_s, dtype=float)[order].tolist()
    outs = np.asarray(output_len, dtype=np.int64)[order].tolist()
    return _schedule_sorted(range(len(arr)), arr, outs, step.base_s, step.per_request_s, max_batch)


def _schedule_sorted(members, arr: list, outs: list, base: float, per: float, max_batch: int | None):
    """:func:`schedule` of the requests ``members`` (indices into ``arr``/``outs``, in arrival order)."""
    members = list(members)
    n = len(members)
    cap = max_batch or n
    t = arr[members[0]] if n else 0.0
    nxt, steps, admits = 0, 0, 0
    finish: list[int] = []  # the step count at which each active request has emitted its last token (a heap)
    while nxt < n or finish:
        if not finish and arr[members[nxt]] > t:
            t = arr[members[nxt]]
        joined = False
        while nxt < n and arr[members[nxt]] <= t + 1e-12 and len(finish) < cap:
            heapq.heappush(finish, steps + outs[members[nxt]])
            nxt += 1
            joined = True
        admits += joined
        dt = base + per * len(finish)
        k = finish[0] - steps
        if nxt < n and len(finish) < cap and dt > 0:
            k = max(1, min(k, math.ceil((arr[members[nxt]] - t) / dt - 1e-9)))
        steps += k
        t += k * dt
        while finish and finish[0] <= steps:
            heapq.heappop(finish)
    return steps, admits


def shapley(arrival_s, output_len, theta_w: float, theta_0: float, step: StepTime, max_batch: int | None = None,
            n_permutations: int = 200, seed: int = 0, exact_max: int = EXACT_SHAPLEY_MAX,
            max_schedules: int = 20_000):
    """Shapley values [J] of the shared energy (θw per step, θ0 per admission) among the requests of one
    busy period, and their standard errors [J] (0 when exact).

    The game: ``v(S)`` is the shared energy of serving only the requests in ``S`` at their arrival
    times (:func:`schedule`). Exact over all ``2^n`` coalitions up to ``exact_max`` requests; above,
    the mean marginal contribution over ``n_permutations`` random orders (Castro et al. 2009,
    doi:10.1016/j.cor.2008.04.004), with
    standard error ``std / sqrt(n_permutations)``; a period of ``n`` requests gets at most
    ``max_schedules / n`` permutations (at least 20), which the method string states.

    Returns
    -------
    (values, stderr, method)
    """
    order = np.argsort(np.asarray(arrival_s, dtype=float), kind="stable")
    arr = np.asarray(arrival_s, dtype=float)[order].tolist()
    out = np.asarray(output_len, dtype=np.int64)[order].tolist()
    n = len(arr)
    back = np.empty(n, dtype=np.int64)
    back[order] = np.arange(n)  # the caller's request r is arr[back[r]]

    def cost(members):
        if not members:
            return 0.0
        s, a = _schedule_sorted(members, arr, out, step.base_s, step.per_request_s, max_batch)
        return theta_w * s + theta_0 * a

    if n == 0:
        return np.zeros(0), np.zeros(0), "exact"
    if n > SHAPLEY_MAX:
        nan = np.full(n, np.nan)
        return nan, nan.copy(), f"skipped (busy period of {n} > {SHAPLEY_MAX} requests)"
    if n <= exact_max:
        v = {S: cost(S) for size in range(n + 1) for S in combinations(range(n), size)}
        phi = np.zeros(n)
        fact = [math.factorial(k) for k in range(n + 1)]
        for S, val in v.items():
            w = fact[len(S)] * fact[n - len(S) - 1] / fact[n]
            for r in set(range(n)) - set(S):
                phi[r] += w * (v[tuple(sorted(S + (r,)))] - val)
        return phi[back], np.zeros(n), "exact"
    n_permutations = max(20, min(n_permutations, max_schedules // n))
    rng = np.random.default_rng(seed)
    marg = np.zeros((n_permutations, n))
    for p in range(n_permutations):
        members: list[int] = []
        prev = 0.0
        for r in rng.permutation(n).tolist():
            bisect.insort(members, r)
            val = cost(members)
            marg[p, r] = val - prev
            prev = val
    se = marg.std(axis=0, ddof=1) / math.sqrt(n_permutations)
    return marg.mean(axis=0)[back], se[back], f"sampled ({n_permutations} permutations)"
