"""Readers of production request traces (Azure LLM inference format, or input_len/output_len), with or
without arrival times."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from ..errors import DataError
from .checks import MAX_INT, TRACE_COLUMNS, _is_bool, _numeric, check_regular_file, resolve

__all__ = ["read_trace", "read_arrival_trace"]

def read_trace(path: str | Path) -> tuple[pd.DataFrame, dict]:
    """Read a request trace with columns ``ContextTokens``/``GeneratedTokens`` (Azure format) or
    ``input_len``/``output_len``; returns ``input_len`` and ``output_len`` [tokens] per request, and
    metadata (``source``, ``requests``, ``format``).
    """
    path = resolve(path)
    check_regular_file(path, "a request trace")
    try:
        df = pd.read_csv(path)
    except pd.errors.EmptyDataError:
        raise DataError(f"{path}: the trace is empty; it needs one row per request") from None
    df = df.rename(columns=TRACE_COLUMNS)
    for col in ("input_len", "output_len"):
        if col not in df.columns:
            raise DataError(
                f"{path}: missing column '{col}'; a trace needs ContextTokens/GeneratedTokens or input_len/output_len"
            )
        v = _numeric(df[col])
        f = v.astype(float)
        bad = (v.isna() | ~np.isfinite(f) | (f < 0) | (f > MAX_INT) | (f != np.round(f))).to_numpy() | _is_bool(df[col])
        if bad.any():
            row = int(np.flatnonzero(bad)[0])
            raise DataError(f"{path}: column '{col}' row {row + 2}: {str(df[col].iloc[row])[:40]!r} is not a "
                            f"non-negative integer up to {MAX_INT:.0e}; fix that row")
        df[col] = v.astype(np.int64)
    if len(df) == 0:
        raise DataError(f"{path}: the trace has no requests")
    out = df[["input_len", "output_len"]].copy()
    out.attrs["source"] = path.name
    fmt = "azure" if "ContextTokens" in pd.read_csv(path, nrows=0).columns else "tidy"
    return out, {"source": path.name, "requests": len(out), "format": fmt}


def read_arrival_trace(path: str | Path) -> tuple[pd.DataFrame, dict]:
    """Read a request trace with arrival times: ``arrival_s`` [s], ``input_len``, ``output_len`` [tokens].

    Azure's format (``TIMESTAMP``, ``ContextTokens``, ``GeneratedTokens``) gives arrivals as timestamps,
    made seconds since the first; any CSV with ``arrival_s`` (seconds, non-decreasing) and
    ``input_len``/``output_len`` works too. Lengths are checked by :func:`read_trace`.
    """
    lengths, meta = read_trace(path)
    raw = pd.read_csv(resolve(path))
    if "arrival_s" in raw.columns:
        t = pd.to_numeric(raw["arrival_s"], errors="coerce").to_numpy(dtype=float)
    elif "TIMESTAMP" in raw.columns:
        stamps = pd.to_datetime(raw["TIMESTAMP"], errors="coerce")
        t = (stamps - stamps.min()).dt.total_seconds().to_numpy(dtype=float)
    else:
        raise DataError(f"{path}: no arrival times; a replayed trace needs a column 'arrival_s' [s] or 'TIMESTAMP'")
    bad = ~np.isfinite(t) | (t < 0)
    if bad.any():
        raise DataError(f"{path}: arrival time on row {int(np.flatnonzero(bad)[0]) + 2} is not a time >= 0")
    if (np.diff(t) < 0).any():
        raise DataError(f"{path}: arrival times go back on row {int(np.flatnonzero(np.diff(t) < 0)[0]) + 3}; "
                        "sort the trace by arrival")
    out = lengths.assign(arrival_s=t - t[0])[["arrival_s", "input_len", "output_len"]]
    return out, {**meta, "arrivals": "arrival_s" if "arrival_s" in raw.columns else "TIMESTAMP"}
