"""A replayed request stream: read it, predict its energy from a fit, attribute the energy to each request.

``energykit replay`` (issue 29) replays a production trace against a server and writes a folder:

- ``requests.jsonl``: one object per request (``request_id``, ``arrival_s``, ``sent_s``,
  ``first_token_s``, ``last_token_s``, ``input_len``, ``output_len``, ``prompt_tokens``,
  ``completion_tokens``, ``ok``, ``error``), times [s] from the replay's start on the meter's clock;
- ``energy.jsonl``: one object per contiguous meter window (``start_s``, ``end_s``, ``energy_j``, ``method``);
- ``replay.json``: the trace, its time scale or rate, ``idle_power_w`` measured before, meter, GPUs,
  server fingerprint, start time, kit version.

This module reads that folder (:func:`read_replay`), reconstructs the batch occupancy from the token
times (:func:`occupancy`), predicts the energy of the stream from a fit of the batch-aware model
:data:`energykit.model.BATCHED` (:func:`predict`) and attributes the measured energy to each request
(:func:`attribute`). :func:`simulate` is a continuous-batching simulator driven by a known
:math:`E(i, o, B)`: the page's default replay, and the test that the attribution recovers known energies.

**The stream model.** :data:`~energykit.model.BATCHED` is fitted on isolated batches of ``B`` requests,

.. math:: E(i, o, B) = B (\\theta_1 i^2 + \\theta_2 i o + \\theta_3 i + \\theta_4 o^2 + \\theta_5' o) + \\theta_w o + \\theta_0.

In a stream, a request's *own* terms are its per-request part, :math:`\\theta_1 i^2 + \\theta_3 i`
(prefill, at its first token) and :math:`\\theta_2 i + \\theta_4 (2k + 1) + \\theta_5'` at its ``k``-th
token (``k = 0 … o-1``), which sum to :math:`\\theta_2 i o + \\theta_4 o^2 + \\theta_5' o`. The
*shared* terms are paid once per step whoever is in it: :math:`\\theta_w` per decode step and
:math:`\\theta_0` per admission (a step that prefills newly arrived requests). An isolated batch
(``B`` requests admitted together, ``o`` steps) gives back :math:`E(i, o, B)` exactly. Between
requests, the board draws ``idle_power_w`` (the fit's energies are whole-board, idle included).

**Occupancy.** Request ``r`` emits ``o_r`` tokens, taken as evenly spaced between its first and
last token. The time axis is cut at every first- and last-token time and every meter-window
boundary; the number of steps :math:`s_k \\ge 0` in each piece solves :math:`\\sum_{k \\in r} s_k = o_r - 1`
for every request in least squares (``scipy.optimize.lsq_linear``), pulled towards a prior from the
pieces' durations: steps times a step time linear in the batch, plus a prefill time per prompt token
admitted, fitted (non-negative) on the pieces and refined four times. Admissions are the distinct
first-token times (within a quarter of the shortest step); one into an empty server opens a busy
stretch from the request's sending to its first token. A reply that arrived in one chunk (not
streamed) is taken as decoded over the typical step time before it arrived; a replay where every
reply did is refused.

**Attribution.** (a) *Equal split*: own terms plus, for each step, its shared energy divided equally
among the requests in it; (b) *Shapley*: own terms plus the Shapley value of the shared energy in the
game "serve only the requests ``S`` of this busy period at their arrival times", rescheduled by a
continuous-batching scheduler with the step time fitted on the replay. Where every request's steps
would stay as they were, (b) equals (a) (a step's cost paid once if any member is present is split
equally by Shapley); they differ where removing a request would change who shares steps. Both are
then scaled to what was *measured*: the energy above idle-over-gaps of each run of meter windows
linked by active requests is shared in proportion to each request's modelled energy, so
attributions sum to the measured busy energy, and the residual against the model is reported
beside them.

References
----------
Pizzini Cavagna et al., "Determining Energy Efficiency Sweet Spots in Production LLM Inference",
arXiv:2602.05695 (ICPE 2026) — the per-batch model this extends to a stream.
Shapley, "A value for n-person games", Contributions to the Theory of Games II (1953).
Castro, Gómez and Tejada, "Polynomial calculation of the Shapley value based on sampling",
Computers & Operations Research 36 (2009), doi:10.1016/j.cor.2008.04.004 — the permutation sampling.
"""

from __future__ import annotations

import bisect
import heapq
import json
import math
from dataclasses import dataclass, field
from itertools import combinations
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import sparse
from scipy.optimize import lsq_linear, nnls
from tqdm.auto import tqdm

from .dataset import from_frame, geometry, load_many, measured_cells
from .errors import DataError, FitError
from .fit import fit_dataset, load_fits
from .hardware import calibrate
from .hardware import simulate as simulate_windows
from .intervals import LEVEL, estimate_interval
from .iotools import read_trace, resolve
from .model import BATCHED
from .state import kit_netcdf_kind

__all__ = ["REQUEST_FIELDS", "WINDOW_FIELDS", "EXACT_SHAPLEY_MAX", "SHAPLEY_MAX", "Replay", "read_replay", "write_replay",
           "Occupancy", "occupancy", "StepTime", "step_time", "schedule", "predict", "attribute", "shapley",
           "simulate", "batched_fit", "summary_numbers", "trace_stream", "simulated_server", "SIM_BATCHES", "server_fit"]

REQUEST_FIELDS = ("request_id", "arrival_s", "sent_s", "first_token_s", "last_token_s", "input_len", "output_len",
                  "prompt_tokens", "completion_tokens", "ok", "error")
WINDOW_FIELDS = ("start_s", "end_s", "energy_j", "method")
EXACT_SHAPLEY_MAX = 12
"""Busy periods of at most this many requests get exact Shapley values (2^n coalitions); larger ones sampled permutations."""
SHAPLEY_MAX = 2000
"""Busy periods of more requests get no Shapley value (NaN, method "skipped"): sampling costs grow as n²."""
_TIMES = ("arrival_s", "sent_s", "first_token_s", "last_token_s")
_COUNTS = ("input_len", "output_len", "prompt_tokens", "completion_tokens")


@dataclass
class Replay:
    """A replayed stream: ``requests`` (one row per request), ``windows`` (meter windows) and ``meta`` (replay.json)."""

    requests: pd.DataFrame
    windows: pd.DataFrame
    meta: dict = field(default_factory=dict)

    @property
    def idle_power_w(self) -> float:
        """Idle board power measured before the replay [W]."""
        return float(self.meta["idle_power_w"])

    @property
    def served(self) -> pd.DataFrame:
        """Requests that were served (``ok``) with at least one token."""
        r = self.requests
        return r[r["ok"] & (r["completion_tokens"] >= 1)].reset_index(drop=True)


# ---------------------------------------------------------------------------------------------- reading

def _lines(path: Path, what: str) -> list[tuple[int, dict]]:
    if not path.is_file():
        raise DataError(f"{path}: no such file; a replay folder holds requests.jsonl, energy.jsonl and replay.json "
                        "(written by energykit replay)")
    out = []
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except (json.JSONDecodeError, RecursionError) as e:
                raise DataError(f"{path} line {n}: not valid JSON ({getattr(e, 'msg', 'nested too deeply')}); "
                                "fix or remove that line") from None
            if not isinstance(rec, dict):
                raise DataError(f"{path} line {n}: expected a JSON object ({what}), got {type(rec).__name__}")
            out.append((n, rec))
    if not out:
        raise DataError(f"{path}: empty; it needs one {what} per line")
    return out


def _number(rec: dict, key: str, path: Path, n: int, integer: bool = False, allow_null: bool = False):
    v = rec.get(key)
    if v is None and allow_null:
        return None
    ok = isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
    if ok and integer:
        ok = float(v).is_integer() and v >= 0
    if not ok:
        kind = "a non-negative integer" if integer else "a finite number"
        raise DataError(f"{path} line {n}: {key} {v!r} is not {kind}; fix that line (energykit replay writes it)")
    return int(v) if integer else float(v)


def read_replay(folder: str | Path, idle_power_w: float | None = None) -> Replay:
    """Read and validate a replay folder (``requests.jsonl``, ``energy.jsonl``, ``replay.json``).

    Raises a one-line :class:`~energykit.errors.DataError` naming the file, line and field of the first
    bad value. Failed requests (``ok`` false), and requests marked ok without a token, may carry null
    times: they are kept and not attributed. A meter window with a null energy (a counter that went
    down, a meter that cannot measure) is kept with ``energy_j`` NaN (unmeasured); one the meter flags
    ``valid: false`` but gives an energy keeps it, and its flag in ``valid``.
    ``idle_power_w`` [W] replaces the one in ``replay.json`` (needed when the replay measured none).
    """
    folder = resolve(folder)
    if not folder.is_dir():
        raise DataError(f"{folder}: not a replay folder; give the folder energykit replay wrote")
    meta_path = folder / "replay.json"
    if not meta_path.is_file():
        raise DataError(f"{meta_path}: no such file; a replay folder holds replay.json (written by energykit replay)")
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, RecursionError, UnicodeDecodeError) as e:
        raise DataError(f"{meta_path}: not valid JSON ({e}); write it again with energykit replay") from None
    if not isinstance(meta, dict):
        raise DataError(f"{meta_path}: expected a JSON object, got {type(meta).__name__}")
    if idle_power_w is not None:
        meta = {**meta, "idle_power_w": idle_power_w, "idle_power_source": "given"}
    idle = meta.get("idle_power_w")
    if idle is None:
        raise DataError(f"{meta_path}: idle_power_w is null (the replay measured no idle power, idle_s: 0); "
                        "give it (energykit attribute --idle-power-w 84) or replay again with idle_s > 0")
    if not (isinstance(idle, (int, float)) and not isinstance(idle, bool) and math.isfinite(idle) and 0 <= idle < 1e5):
        raise DataError(f"{meta_path}: idle_power_w {idle!r} is not a power in watts; the replay measures it "
                        "before it starts (e.g. 84.0)")
    rows, seen = [], {}
    path = folder / "requests.jsonl"
    for n, rec in _lines(path, "request"):
        missing = [k for k in REQUEST_FIELDS if k not in rec]
        if missing:
            raise DataError(f"{path} line {n}: lacks {', '.join(missing)}; every request needs {', '.join(REQUEST_FIELDS)}")
        if not isinstance(rec["ok"], bool):
            raise DataError(f"{path} line {n}: ok {rec['ok']!r} is not true or false")
        if rec["error"] is not None and not isinstance(rec["error"], str):
            raise DataError(f"{path} line {n}: error {rec['error']!r} is neither text nor null")
        row = {"request_id": _number(rec, "request_id", path, n, integer=True), "ok": rec["ok"], "error": rec["error"]}
        for k in ("input_len", "output_len"):
            row[k] = _number(rec, k, path, n, integer=True)
        for k in ("prompt_tokens", "completion_tokens"):
            row[k] = _number(rec, k, path, n, integer=True, allow_null=True)
        for k in _TIMES:
            row[k] = _number(rec, k, path, n, allow_null=k != "arrival_s")
        served = rec["ok"] and (row["completion_tokens"] or 0) >= 1
        if served:
            nulls = [k for k in ("sent_s", "first_token_s", "last_token_s", "prompt_tokens") if row[k] is None]
            if nulls:
                raise DataError(f"{path} line {n}: {nulls[0]} is null for a request served with "
                                f"{row['completion_tokens']} tokens; a served request has its token times and usage")
            order = [row[k] for k in ("sent_s", "first_token_s", "last_token_s")]
            if not order[0] <= order[1] <= order[2] or order[0] < 0:
                raise DataError(f"{path} line {n}: times out of order (sent_s {order[0]}, first_token_s {order[1]}, "
                                f"last_token_s {order[2]}); they must be non-negative and non-decreasing")
        rid = row["request_id"]
        if rid in seen:
            raise DataError(f"{path} line {n}: request_id {rid} already on line {seen[rid]}; ids must be unique")
        seen[rid] = n
        rows.append(row)
    requests = pd.DataFrame(rows)
    for k in ("prompt_tokens", "completion_tokens"):
        requests[k] = requests[k].fillna(0).astype(np.int64)
    wrows = []
    path = folder / "energy.jsonl"
    last_end = -math.inf
    for n, rec in _lines(path, "meter window"):
        missing = [k for k in WINDOW_FIELDS if k not in rec]
        if missing:
            raise DataError(f"{path} line {n}: lacks {', '.join(missing)}; every window needs {', '.join(WINDOW_FIELDS)}")
        w = {k: _number(rec, k, path, n) for k in ("start_s", "end_s")}
        w["energy_j"] = _number(rec, "energy_j", path, n, allow_null=True)
        valid = rec.get("valid", True)
        if not isinstance(valid, bool):
            raise DataError(f"{path} line {n}: valid {valid!r} is not true or false")
        if w["energy_j"] is None:  # the meter could not measure it (a counter that went down): unknown
            w["energy_j"] = math.nan
        if not w["end_s"] > w["start_s"]:
            raise DataError(f"{path} line {n}: end_s {w['end_s']} is not after start_s {w['start_s']}")
        if not (math.isnan(w["energy_j"]) or 0 <= w["energy_j"] < 1e12):
            raise DataError(f"{path} line {n}: energy_j {w['energy_j']} is negative or over 1e12 J; "
                            "a window measures a non-negative energy in joules")
        if w["start_s"] < last_end - 1e-9:
            raise DataError(f"{path} line {n}: window starts at {w['start_s']} s, before the previous one ends "
                            f"({last_end} s); windows must be in time order and not overlap")
        last_end = w["end_s"]
        w["method"] = str(rec["method"])
        w["valid"] = valid  # the meter's own flag; a flagged window with an energy keeps it (e.g. a CPU-time
        # proxy's window with no tick: its time shows in the next window, so the sum over windows holds)
        wrows.append(w)
    windows = pd.DataFrame(wrows)
    if not np.isfinite(windows["energy_j"]).any():
        raise DataError(f"{path}: no window measured an energy (all null or invalid; meter "
                        f"{meta.get('meter', '?')!s}); replay again with a meter that measures (meter: nvml)")
    rep = Replay(requests, windows, meta)
    served = rep.served
    if len(served):
        lo, hi = windows["start_s"].iloc[0], windows["end_s"].iloc[-1]
        outside = served[(served["sent_s"] < lo - 1e-9) | (served["last_token_s"] > hi + 1e-9)]
        if len(outside):
            r = outside.iloc[0]
            raise DataError(f"{folder}: request {int(r['request_id'])} ran outside the metered span "
                            f"[{lo}, {hi}] s (sent {r['sent_s']} s, last token {r['last_token_s']} s); "
                            "the meter windows must cover the replay")
    return rep


def write_replay(replay: Replay, folder: str | Path) -> Path:
    """Write a replay folder in the format :func:`read_replay` reads (what the simulator and tests use)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / "requests.jsonl", "w", encoding="utf-8") as f:
        for rec in replay.requests[list(REQUEST_FIELDS)].to_dict("records"):
            f.write(json.dumps({k: (v.item() if hasattr(v, "item") else v) for k, v in rec.items()}) + "\n")
    with open(folder / "energy.jsonl", "w", encoding="utf-8") as f:
        for rec in replay.windows[list(WINDOW_FIELDS)].to_dict("records"):
            f.write(json.dumps({k: (v.item() if hasattr(v, "item") else v) for k, v in rec.items()}) + "\n")
    (folder / "replay.json").write_text(json.dumps(replay.meta, indent=2), encoding="utf-8")
    return folder


# ---------------------------------------------------------------------------------------------- occupancy

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
    tol = 0.25 * float(np.min(step))
    order = np.argsort(t1, kind="stable")
    group = np.cumsum(np.r_[True, np.diff(t1[order]) > tol]) - 1
    groups = []  # (admitted, decoding across the admission, first-token time)
    for g in range(group[-1] + 1):
        new = order[group == g]
        t_lo = float(t1[new].min())
        groups.append((new, np.flatnonzero((t1 < t_lo - tol) & (t2 >= t_lo - tol)), t_lo, float(t1[new].max())))
    # the admission step into an empty server lasts from sending to the first token (it holds the prefill);
    # one joining a running batch lies inside the others' pieces
    lead = np.zeros(len(o))
    for new, decoding, _, _ in groups:
        if not len(decoding):
            wait = t1[new] - served["sent_s"].to_numpy(dtype=float)[new]
            lead[new] = np.where(wait > 0, wait, step[new])
    cuts = np.unique(np.concatenate([t1 - lead, t1, t2, np.asarray(breaks, dtype=float)]))
    m = len(cuts) - 1
    first = np.searchsorted(cuts, t1)
    last = np.searchsorted(cuts, t2)

    def active(lo, hi, weight=1.0):
        d = np.zeros(m + 1)
        np.add.at(d, lo, weight)
        np.add.at(d, hi, -weight)
        return np.cumsum(d)[:m]

    count = active(first, last).round().astype(np.int64)
    busy = active(np.searchsorted(cuts, t1 - lead), last).round().astype(np.int64)
    dur = np.diff(cuts)
    rate = active(first, last, 1.0 / step)
    s0 = np.where(count > 0, rate / np.maximum(count, 1) * dur, 0.0)
    prompt = served["prompt_tokens"].to_numpy(dtype=float)
    admissions, members, pieces = [], [], []
    prefill_tokens = np.zeros(m)  # prompt tokens prefilled in the admission step that ends each piece
    for new, decoding, t_lo, t_hi in groups:
        admissions.append(t_hi)
        members.append(np.union1d(new, decoding))
        k = int(np.searchsorted(cuts, t_lo, side="left") - 1) if len(decoding) else -1
        pieces.append(k)
        if k >= 0:
            prefill_tokens[k] += prompt[new].sum()
    live = np.flatnonzero(count > 0)
    steps = np.zeros(m)
    if len(live):
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
    return Occupancy(served.reset_index(drop=True), cuts, count, busy, steps, first, last, t1, t2, step,
                     np.array(admissions), members, np.array(pieces, dtype=np.int64), lead)


# ---------------------------------------------------------------------------------------------- features

_OWN = ("theta1", "theta2", "theta3", "theta4", "theta5p")
_SHARED = ("thetaw", "theta0")


def _own_cumulative(occ: Occupancy, t: float) -> np.ndarray:
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


def _features(occ: Occupancy, edges: np.ndarray, rows=None) -> np.ndarray:
    """Model features of requests ``rows`` (all by default) in each interval between ``edges``:
    (len(rows), len(edges)-1, 7), in :data:`~energykit.model.BATCHED`'s term order, so that energy = features @ θ."""
    n_all, w = len(occ.requests), len(edges) - 1
    rows = np.arange(n_all) if rows is None else np.asarray(rows)
    names = BATCHED.names
    out = np.zeros((len(rows), w, len(names)))
    own_idx = [names.index(k) for k in _OWN]
    cum = np.stack([_own_cumulative(occ, t)[rows] for t in edges], axis=1)  # (n, w+1, 5)
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


def _feature_sums(occ: Occupancy, edges: np.ndarray, theta: np.ndarray, chunk: int = 256):
    """What prediction and attribution need of :func:`_features`, computed a chunk of requests at a time
    (memory ``chunk × windows × 7``): features per window summed over requests (w, 7), per request
    summed over windows (n, 7), and each request's first and last window with modelled energy (-1: none)."""
    n, w = len(occ.requests), len(edges) - 1
    per_window = np.zeros((w, len(theta)))
    per_request = np.zeros((n, len(theta)))
    first = np.full(n, -1)
    last = np.full(n, -1)
    for start in range(0, n, chunk):
        rows = np.arange(start, min(n, start + chunk))
        F = _features(occ, edges, rows)
        per_window += F.sum(axis=0)
        per_request[rows] = F.sum(axis=1)
        touch = (F @ theta) > 0
        has = touch.any(axis=1)
        first[rows[has]] = np.argmax(touch[has], axis=1)
        last[rows[has]] = w - 1 - np.argmax(touch[has][:, ::-1], axis=1)
    return per_window, per_request, first, last


def _theta(params: dict) -> np.ndarray:
    return np.array([float(params.get(k, 0.0)) for k in BATCHED.names])


def _theta_draws(draws: dict) -> np.ndarray:
    return np.column_stack([np.asarray(draws[k], dtype=float)[:, 0] for k in BATCHED.names])  # (n, 7)


def _gap_s(occ: Occupancy, edges: np.ndarray) -> np.ndarray:
    """Seconds with no active request in each interval between ``edges``."""
    idle = np.where(occ.busy == 0, occ.duration_s, 0.0)
    C = np.r_[0.0, np.cumsum(idle)]
    piece = np.searchsorted(occ.breaks, edges).clip(0, len(occ.breaks) - 1)
    gap = np.diff(C[piece])
    before = np.clip(np.minimum(edges[1:], occ.breaks[0]) - edges[:-1], 0, None)
    after = np.clip(edges[1:] - np.maximum(edges[:-1], occ.breaks[-1]), 0, None)
    return gap + before + after


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


def _window_edges(replay: Replay, window_s: float | None) -> tuple[np.ndarray, pd.DataFrame]:
    """Edges of the reporting windows and their measured energy: the meter's windows, or groups of
    them of about ``window_s`` seconds."""
    w = replay.windows
    if window_s is None:
        return np.r_[w["start_s"].to_numpy(), w["end_s"].iloc[-1]], w[["start_s", "end_s", "energy_j"]].reset_index(drop=True)
    if not (window_s > 0 and math.isfinite(window_s)):
        raise DataError(f"window_s {window_s!r} must be a positive number of seconds, e.g. 10")
    t0 = float(w["start_s"].iloc[0])
    group = np.floor((w["end_s"].to_numpy() - t0 - 1e-9) / window_s).astype(int)
    g = w.assign(group=group).groupby("group", sort=True).agg(start_s=("start_s", "min"), end_s=("end_s", "max"),
                                                               energy_j=("energy_j", lambda x: x.sum(skipna=False))).reset_index(drop=True)
    return np.r_[g["start_s"].to_numpy(), g["end_s"].iloc[-1]], g


# ---------------------------------------------------------------------------------------------- prediction

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
    edges, win = _window_edges(replay, window_s)
    X = _feature_sums(occ, edges, _theta(fit.params))[0]  # (w, 7)
    gap = _gap_s(occ, edges)
    idle_j = replay.idle_power_w * gap
    theta = _theta(fit.params)
    draws = _theta_draws(fit.draws(n_draws))
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


# ---------------------------------------------------------------------------------------------- scheduling and Shapley

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


# ---------------------------------------------------------------------------------------------- attribution

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
    edges, win = _window_edges(replay, None)
    theta = _theta(fit.params)
    per_window, per_request, first, last = _feature_sums(occ, edges, theta)
    names = BATCHED.names
    own_idx = [names.index(k) for k in _OWN]
    shared_idx = [names.index(k) for k in _SHARED]
    own = per_request[:, own_idx] @ theta[own_idx]
    shared = per_request[:, shared_idx] @ theta[shared_idx]
    gap = _gap_s(occ, edges)
    col = per_window @ theta
    holds = col > 0
    valid = np.isfinite(win["energy_j"].to_numpy())
    win_flag = replay.windows["valid"].to_numpy(dtype=bool) if "valid" in replay.windows else np.ones(len(valid), bool)
    # a window the meter could not measure: its busy energy is the model's (stated as modelled_invalid_j)
    busy = np.where(valid, win["energy_j"].to_numpy() - replay.idle_power_w * gap, col)
    run = _window_runs(first, last, len(col))
    run_busy = np.bincount(run[holds], weights=busy[holds], minlength=run.max() + 1)
    run_model = np.bincount(run[holds], weights=col[holds], minlength=run.max() + 1)
    factor = np.where(run_model > 0, run_busy / np.where(run_model > 0, run_model, 1.0), 0.0)
    model_r = own + shared
    energy = np.where(first >= 0, model_r * factor[run[np.maximum(first, 0)]], 0.0)
    table = served[["request_id", "arrival_s", "sent_s", "first_token_s", "last_token_s", "prompt_tokens",
                    "completion_tokens"]].rename(columns={"prompt_tokens": "input_len", "completion_tokens": "output_len"})
    table = table.assign(own_j=own, shared_j=shared, model_j=own + shared, energy_j=energy,
                         busy_period=occ.busy_period)
    if with_shapley:
        step = step_time(occ)
        cap = max_batch or replay.meta.get("max_batch") or int(occ.count.max())
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
    table["energy_per_token_j"] = table["energy_j"] / table["output_len"]
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
    return table, totals


def summary_numbers(pred_total: dict, attr_totals: dict) -> dict:
    """The key numbers of a replay (for a page's key-results box and ``attribute --json``)."""
    out = {f"whole_{k}": v for k, v in pred_total.items()}
    out.update(attr_totals)
    return out


# ---------------------------------------------------------------------------------------------- simulation

def simulate(arrival_s, input_len, output_len, params: dict, idle_power_w: float, step: StepTime,
             prefill_s_per_token: float = 0.0, window_s: float = 1.0, max_batch: int | None = None,
             noise_pct: float = 0.0, seed: int = 0, lead_s: float = 1.0) -> tuple[Replay, pd.Series]:
    """Replay a trace on a simulated continuous-batching server whose energy is a known :math:`E(i, o, B)`.

    Every step admits the requests that have arrived (up to ``max_batch`` active), prefills them
    (their first token ends the step) and emits one token per active request. Its energy is each
    request's own terms at that token plus θw, plus θ0 if it admits; its duration
    ``step(B) + prefill_s_per_token · Σ i`` of the admitted. The board draws ``idle_power_w`` when no
    request is active. Meter windows of ``window_s`` cover the stream from ``t = 0``, each with
    multiplicative Gaussian noise of ``noise_pct`` %.

    Returns the replay (as the runner would write it, with ``meta["simulated"] = True``) and the
    true energy of each request [J] by ``request_id``: its own terms plus an equal share of the
    shared energy of each step it was in.
    """
    p = {k: float(params.get(k, 0.0)) for k in BATCHED.names}
    arr = np.asarray(arrival_s, dtype=float) + lead_s
    i = np.asarray(input_len, dtype=np.int64)
    o = np.asarray(output_len, dtype=np.int64)
    if len(arr) == 0 or (o < 1).any() or (i < 0).any():
        raise DataError("simulate needs at least one request, output lengths ≥ 1 and input lengths ≥ 0")
    n = len(arr)
    order = np.argsort(arr, kind="stable")
    cap = max_batch or n
    done = np.zeros(n, dtype=np.int64)
    first = np.full(n, np.nan)
    last = np.full(n, np.nan)
    truth = np.zeros(n)
    t, nxt = 0.0, 0
    active: list[int] = []
    segments = []  # (start, end, energy)
    while nxt < n or active:
        if not active and arr[order[nxt]] > t:
            t = float(arr[order[nxt]])
        admitted = []
        while nxt < n and arr[order[nxt]] <= t + 1e-12 and len(active) < cap:
            admitted.append(int(order[nxt]))
            nxt += 1
        active.extend(admitted)
        idx = np.array(active)
        k = done[idx]
        own = p["theta2"] * i[idx] + p["theta4"] * (2 * k + 1) + p["theta5p"]
        own = own + np.where(k == 0, p["theta1"] * i[idx] ** 2 + p["theta3"] * i[idx], 0.0)
        shared = p["thetaw"] + (p["theta0"] if admitted else 0.0)
        truth[idx] += own + shared / len(idx)
        dt = step(len(idx)) + prefill_s_per_token * float(i[admitted].sum() if admitted else 0)
        segments.append((t, t + dt, float(own.sum() + shared)))
        t += dt
        done[idx] += 1
        first[idx[k == 0]] = t
        fin = idx[done[idx] >= o[idx]]
        last[fin] = t
        active = [r for r in active if done[r] < o[r]]
    end = math.ceil((t + lead_s) / window_s) * window_s
    edges = np.arange(0.0, end + window_s / 2, window_s)
    seg = np.array(segments)
    energy = np.zeros(len(edges) - 1)
    busy_s = np.zeros(len(edges) - 1)
    for a, b, e in seg:  # spread each step's energy over its duration
        lo = np.clip(edges[:-1], a, b)
        hi = np.clip(edges[1:], a, b)
        energy += e * (hi - lo) / (b - a)
        busy_s += hi - lo
    energy += idle_power_w * (window_s - busy_s)
    rng = np.random.default_rng(seed)
    if noise_pct:
        energy = energy * (1.0 + rng.normal(0.0, noise_pct / 100.0, size=energy.shape))
    requests = pd.DataFrame({"request_id": np.arange(n), "arrival_s": arr, "sent_s": arr, "first_token_s": first,
                             "last_token_s": last, "input_len": i, "output_len": o, "prompt_tokens": i,
                             "completion_tokens": o, "ok": True, "error": None})
    windows = pd.DataFrame({"start_s": edges[:-1], "end_s": edges[1:], "energy_j": energy, "method": "simulated"})
    meta = {"simulated": True, "trace": "simulated", "n_requests": n, "idle_power_w": float(idle_power_w),
            "meter": "simulated", "gpus": [], "max_batch": cap, "step_s": [step.base_s, step.per_request_s],
            "prefill_s_per_token": prefill_s_per_token, "noise_pct": noise_pct, "params": p}
    return Replay(requests, windows, meta), pd.Series(truth, index=requests["request_id"], name="true_energy_j")


def trace_stream(path: str | Path, n_requests: int, time_scale: float = 1.0, skip: int = 0) -> pd.DataFrame:
    """The first ``n_requests`` (after ``skip``) of a trace as a stream: ``arrival_s`` [s] from the first
    (the trace's ``TIMESTAMP`` divided by ``time_scale``; one per second when it has none),
    ``input_len`` and ``output_len`` [tokens] (outputs of 0 become 1: a served request emits a token)."""
    if n_requests < 1 or not (time_scale > 0 and math.isfinite(time_scale)):
        raise DataError(f"n_requests {n_requests} must be ≥ 1 and time_scale {time_scale} positive")
    lengths, _ = read_trace(path)
    rows = lengths.iloc[skip: skip + n_requests].reset_index(drop=True)
    if len(rows) == 0:
        raise DataError(f"{path}: no request after skipping {skip}; lower replay skip")
    stamps = pd.read_csv(resolve(path), usecols=lambda c: c == "TIMESTAMP").iloc[skip: skip + n_requests]
    if "TIMESTAMP" in stamps:
        t = pd.to_datetime(stamps["TIMESTAMP"], errors="coerce")
        if t.isna().any():
            raise DataError(f"{path}: TIMESTAMP row {int(np.flatnonzero(t.isna())[0]) + skip + 2} is not a time")
        arrival = (t - t.iloc[0]).dt.total_seconds().to_numpy()
    else:
        arrival = np.arange(len(rows), dtype=float)
    return pd.DataFrame({"arrival_s": arrival / time_scale, "input_len": rows["input_len"].to_numpy(),
                         "output_len": np.maximum(rows["output_len"].to_numpy(), 1)})


SIM_BATCHES = (1, 4, 16, 64)
"""Batch sizes of the isolated-batch windows simulated to fit E(i, o, B) when no measured fit exists [requests]."""


def simulated_server(cal, noise_pct: float = 3.0, seed: int = 0) -> tuple:
    """A simulated server of the GPU and engine of the measured dataset ``cal``: its E(i, o, B) and timing.

    The hardware model is calibrated on ``cal`` (:func:`energykit.hardware.calibrate`), isolated-batch
    windows are simulated from the per-step physics at :data:`SIM_BATCHES` with ``noise_pct`` % noise
    (as the batching page does) and :data:`~energykit.model.BATCHED` is fitted on them. The step time
    is the shortest measured time per output token; the prefill time per prompt token the slope of
    the windows' durations in ``B·i`` (non-negative least squares with ``o`` and a constant); idle
    power the one stored with ``cal``.

    Returns ``(fit, step, prefill_s_per_token, idle_power_w, note)``.
    """
    hw = calibrate(cal)
    name = hw.calibrated_on[0]
    windows = simulate_windows(geometry(cal, name), hw.coef, SIM_BATCHES, (64, 256, 1024, 4096), (16, 64, 256, 1024),
                               noise_pct=noise_pct, seed=seed, name=f"{name} (SIMULATED)")
    fit = fit_dataset(from_frame(windows), loss="l1", cv_folds=5).batched[f"{name} (SIMULATED)"]
    cells = measured_cells(cal, name)
    per_token = (cells["duration_s"] / cells["output_len"]).to_numpy(dtype=float)
    step = StepTime(float(np.nanmin(per_token)), 0.0)
    # duration of a window ≈ prefill · B·i + step · o + c: the prefill time per prompt token from the cells
    d = cells["duration_s"].to_numpy(dtype=float)
    X = np.column_stack([cells["batch_size"].to_numpy(dtype=float) * cells["input_len"].to_numpy(dtype=float),
                         cells["output_len"].to_numpy(dtype=float), np.ones(len(d))])
    ok = np.isfinite(d)
    prefill = float(nnls(X[ok], d[ok])[0][0]) if ok.sum() >= 3 else 0.0
    idle = float(cal.attrs.get("idle_power_w", 0.0) or 0.0)
    note = (f"E(i, o, B) fitted on isolated-batch windows simulated (±{noise_pct:g} % noise) at B ∈ "
            f"{{{', '.join(map(str, SIM_BATCHES))}}} from the hardware model calibrated on {name} ({hw.gpu}, {hw.engine}); "
            f"step {step.base_s * 1e3:.1f} ms, prefill {prefill * 1e6:.2f} µs per prompt token, idle {idle:.0f} W")
    return fit, step, prefill, idle, note
