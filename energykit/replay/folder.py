"""The replay folder: its two JSONL files and ``replay.json`` read and validated (:func:`read_replay`), and written
(:func:`write_replay`).

``requests.jsonl`` holds one object per request (:data:`REQUEST_FIELDS`, times [s] from the replay's start
on the meter's clock), ``energy.jsonl`` one per meter window (:data:`WINDOW_FIELDS`), ``replay.json`` the
replay's metadata (trace, ``idle_power_w``, meter, GPUs, server fingerprint). Every bad value is a one-line
:class:`~energykit.errors.DataError` naming the file, line and field.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from ..errors import DataError
from ..iotools.checks import json_lines, resolve

__all__ = ["REQUEST_FIELDS", "WINDOW_FIELDS", "Replay", "read_replay", "write_replay"]

REQUEST_FIELDS = ("request_id", "arrival_s", "sent_s", "first_token_s", "last_token_s", "input_len", "output_len",
                  "prompt_tokens", "completion_tokens", "ok", "error")
WINDOW_FIELDS = ("start_s", "end_s", "energy_j", "method")
_TIMES = ("arrival_s", "sent_s", "first_token_s", "last_token_s")


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


def _lines(path: Path, what: str) -> list[tuple[int, dict]]:
    if not path.is_file():
        raise DataError(f"{path}: no such file; a replay folder holds requests.jsonl, energy.jsonl and replay.json "
                        "(written by energykit replay)")
    out = list(json_lines(path, what))
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
    meta = _read_meta(folder / "replay.json", idle_power_w)
    requests = _read_requests(folder / "requests.jsonl")
    windows = _read_windows(folder / "energy.jsonl", meta)
    rep = Replay(requests, windows, meta)
    _check_metered(rep, folder)
    return rep


def _read_meta(meta_path: Path, idle_power_w: float | None) -> dict:
    """``replay.json``, with ``idle_power_w`` [W] replaced where given, and checked to be a power."""
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
    return meta


def _read_requests(path: Path) -> pd.DataFrame:
    """``requests.jsonl``: one row per request, every field checked; null token counts of unserved requests are 0."""
    rows, seen = [], {}
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
    return requests


def _read_windows(path: Path, meta: dict) -> pd.DataFrame:
    """``energy.jsonl``: one row per meter window, in time order, not overlapping; a null energy is NaN."""
    wrows = []
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
    return windows


def _check_metered(rep: Replay, folder: Path) -> None:
    """Refuse a replay whose served requests ran outside the span its meter windows cover."""
    windows = rep.windows
    served = rep.served
    if len(served):
        lo, hi = windows["start_s"].iloc[0], windows["end_s"].iloc[-1]
        outside = served[(served["sent_s"] < lo - 1e-9) | (served["last_token_s"] > hi + 1e-9)]
        if len(outside):
            r = outside.iloc[0]
            raise DataError(f"{folder}: request {int(r['request_id'])} ran outside the metered span "
                            f"[{lo}, {hi}] s (sent {r['sent_s']} s, last token {r['last_token_s']} s); "
                            "the meter windows must cover the replay")


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
