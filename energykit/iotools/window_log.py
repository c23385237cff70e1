"""The reader of a sweep's raw ``windows.jsonl`` (a torn last line is ignored)."""

from __future__ import annotations

import json
import math
from pathlib import Path


from ..errors import DataError
from ..schema import DIMS, INT_DIMS
from .checks import MAX_INT, MAX_WINDOW_ENERGY_J, _short, check_regular_file

__all__ = ["read_window_log"]

def read_window_log(path: str | Path) -> tuple[list[dict], dict]:
    """Records of a sweep's ``windows.jsonl``, and metadata (``source``, ``records``, ``torn_tail``).

    A torn last line (a crash mid-write) is ignored: the window in flight is lost, nothing else.
    """
    path = Path(path)
    if not path.exists():
        return [], {"source": path.name, "records": 0, "torn_tail": False}
    if path.is_dir():
        raise DataError(f"{path}: is a folder, not a window log; give the windows.jsonl file")
    check_regular_file(path, "a window log")
    out = []
    torn = False
    with open(path, encoding="utf-8", errors="replace") as f:
        for n, line in enumerate(f, start=1):
            if not line.endswith("\n"):
                torn = True
                break  # torn write from a crash
            try:
                rec = json.loads(line)
            except (json.JSONDecodeError, RecursionError):
                raise DataError(f"{path} line {n}: not a JSON window record; remove that line "
                                "(the kit never writes one)") from None
            if not isinstance(rec, dict) or "model" not in rec:
                raise DataError(f"{path} line {n}: not a window record (a JSON object with model, lengths and "
                                "status); remove that line")
            missing = [d for d in DIMS if d not in rec]
            bad = [d for d in INT_DIMS if d not in missing and (isinstance(rec[d], bool) or not isinstance(rec[d], int)
                                                                 or not (0 if d == "repeat" else 1) <= rec[d] <= MAX_INT)]
            if missing or bad or not isinstance(rec["model"], str):
                what = (f"lacks {', '.join(missing)}" if missing else
                        f"{bad[0]} {_short(rec[bad[0]])} is not a valid count" if bad else "model is not text")
                raise DataError(f"{path} line {n}: not a window record ({what}); remove that line "
                                "(the kit never writes one)")
            if rec.get("status") == "ok":
                _check_window_values(rec, f"{path} line {n}")
            out.append(rec)
    return out, {"source": path.name, "records": len(out), "torn_tail": torn}


def _check_window_values(rec: dict, where: str) -> None:
    """A completed window's energy, duration and tokens as :func:`read_tidy` accepts them: numbers (not text or
    booleans), energy positive and at most :data:`MAX_WINDOW_ENERGY_J` (NaN: a sweep without a meter), duration
    positive and finite, output tokens non-negative."""
    def number(key):
        v = rec.get(key)
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise DataError(f"{where}: {key} {str(v)[:40]!r} is not a number; the kit never writes one — remove that "
                            "line, or re-measure the window")
        try:
            return float(v)
        except OverflowError:  # an integer of hundreds of digits
            return float("inf") if v > 0 else float("-inf")

    e = number("energy_j")
    if e == e and not 0 < e <= MAX_WINDOW_ENERGY_J:
        raise DataError(f"{where}: energy_j {e:g} J is {'not positive' if e <= 0 else 'infinite or over %g J' % MAX_WINDOW_ENERGY_J}; "
                        "a window always draws energy — remove that line, or re-measure the window")
    t = number("duration_s")
    if not (math.isfinite(t) and t > 0):
        raise DataError(f"{where}: duration_s {t:g} s is not a positive, finite number; remove that line, or re-measure "
                        "the window")
    if "output_tokens" in rec and rec["output_tokens"] is not None:
        k = number("output_tokens")
        if not (math.isfinite(k) and 0 <= k <= MAX_INT):
            raise DataError(f"{where}: output_tokens {k:g} is not a count of tokens; remove that line, or re-measure "
                            "the window")
