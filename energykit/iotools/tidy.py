"""The tidy reader: CSV/JSONL measurements, one row per window, validated with one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from ..errors import DataError, ParamsError
from ..schema import DIMS, DURATION_UNITS_S, ENERGY_UNITS_J, GEOMETRY_COLUMNS, INT_DIMS, PROVENANCE_COLUMNS
from .checks import (KEY, MAX_INT, MAX_WINDOW_ENERGY_J, _check_energy_scale, _check_model_names, _is_bool,
                    _json_int, _numeric, _rows, _short, _unit_column, check_geometry, check_regular_file, json_lines,
                    resolve)

__all__ = ["read_tidy"]

def _read_jsonl(path: Path) -> pd.DataFrame:
    """One JSON object per line; a bad line is reported by its line number."""
    rows = [rec for _, rec in json_lines(path, "one window", parse_int=_json_int)]
    if not rows:
        raise pd.errors.EmptyDataError("no rows")
    df = pd.DataFrame(rows)
    if "model" in df.columns:
        df["model"] = [m if isinstance(m, str) or m is None else json.dumps(m) for m in df["model"]]
    return df


def read_tidy(path: str | Path, *, allow_nan_energy: bool = False, variables=()) -> pd.DataFrame:
    """Read and validate a tidy CSV or JSONL file of measured windows.

    Parameters
    ----------
    path : str or Path
        ``.csv`` (header in the first line) or ``.jsonl`` / ``.json`` (one object per line).
    allow_nan_energy : bool
        Accept NaN energies (a sweep run with ``meter: none``); otherwise NaN is an error.
    variables : iterable of str
        Declared cell variables (:func:`energykit.model.cell_key`): a column named by one beyond the
        built-in dimensions is checked to hold finite numbers and keys the window with them.

    Returns
    -------
    (pandas.DataFrame, dict)
        One row per window with columns ``energy_j`` [J] and ``duration_s`` [s] in SI units; and
        metadata: ``source``, ``format`` and the original energy and duration columns.

    Raises
    ------
    DataError
        With a one-line message naming the file, the column or row, and the fix.
    """
    path = resolve(path)
    name = str(path)
    if path.is_dir():
        raise DataError(f"{name}: is a folder; give a measurement file in it (e.g. {name}/measurements.nc)")
    check_regular_file(path, "a measurement file")
    df, first_row, suffix = _read_frame(path, name)
    df.columns = [str(c).strip() for c in df.columns]
    extra = [v for v in variables if v not in KEY and v in df.columns]
    key = [*KEY[:-1], *extra, KEY[-1]]
    if "status" in df.columns and "energy_j" in df.columns:  # the kit's own windows.jsonl: its good windows
        df = df[df["status"] == "ok"]
        df = df.drop_duplicates(key, keep="last").reset_index(drop=True)
        df = df.drop(columns=[c for c in ("status", "time", "timeline", "reason", "error", "gpu_energy_j")
                              if c in df.columns]).rename(columns={"energy_method": "method"})
        if len(df) == 0:
            raise DataError(f"{name}: the log holds no completed window; measure first")
    for col in DIMS:
        if col not in df.columns:
            raise DataError(f"{name}: missing column '{col}'; every row needs {', '.join(DIMS)}")
    e_col = _unit_column(df, "energy", ENERGY_UNITS_J, name)
    t_col = _unit_column(df, "duration", DURATION_UNITS_S, name)
    out = _keys(df, name, first_row, extra)
    out["energy_j"] = _energy(df, e_col, name, first_row, allow_nan_energy)
    out["duration_s"] = _duration(df, t_col, name, first_row)
    out["output_tokens"] = _output_tokens(df, out, name, first_row)
    dup = out.duplicated(key, keep=False).to_numpy()
    if dup.any():
        where = out.loc[dup, key].iloc[0].to_dict()
        raise DataError(
            f"{name}: duplicate rows {_rows(dup, first_row)} for the same window {where}; "
            "give each window its own 'repeat' index or remove the duplicate"
        )
    _per_model(df, out, name)
    for col in [c for c in df.columns if c not in out.columns and c not in (e_col, t_col)]:
        out[col] = df[col]
    out.attrs["source"] = path.name
    meta = {"source": path.name, "format": "tidy " + suffix.lstrip("."), "energy_column": e_col,
            "duration_column": t_col, "kit_log": "status" in df.columns}
    return out, meta


def _read_frame(path: Path, name: str) -> tuple[pd.DataFrame, int, str]:
    """The file's rows, the line number of its first data row, and its suffix."""
    suffix = path.suffix.lower()
    try:
        if suffix == ".csv":
            df = pd.read_csv(path, dtype={"model": str})
            first_row = 2  # line number of the first data row (after the header)
            if len(df.columns) == 1 and ";" in str(df.columns[0]):
                raise DataError(f"{name}: the columns are separated by ';'; save the file with commas "
                                "(e.g. pandas to_csv or a spreadsheet's 'CSV (comma delimited)')")
        elif suffix in (".jsonl", ".json"):
            df = _read_jsonl(path)
            first_row = 1
        else:
            raise DataError(f"{name}: unknown file type '{suffix}'; use .csv, .jsonl or .nc")
    except pd.errors.EmptyDataError:
        raise DataError(f"{name}: the file is empty; it needs a header and one row per measured window") from None
    except (ValueError, UnicodeDecodeError) as e:
        raise DataError(f"{name}: cannot be parsed ({str(e).splitlines()[0]}); check its format") from None
    if len(df) == 0:
        raise DataError(f"{name}: the file has no rows; it needs one row per measured window")
    return df, first_row, suffix


def _keys(df: pd.DataFrame, name: str, first_row: int, extra: list[str]) -> pd.DataFrame:
    """The window's key columns checked: model names, positive integers, and declared variables as numbers."""
    out = pd.DataFrame({"model": df["model"].astype(str)})
    if out["model"].str.strip().eq("").any() or df["model"].isna().any():
        bad = df["model"].isna().to_numpy() | out["model"].str.strip().eq("").to_numpy()
        raise DataError(f"{name}: column 'model' is empty in row {_rows(bad, first_row)}; name every model")
    _check_model_names(out["model"], name, first_row)
    for col in INT_DIMS:
        values = _numeric(df[col])
        lower = 0 if col == "repeat" else 1
        bad = (values.isna() | ~np.isfinite(values.astype(float)) | (values < lower) | (values > MAX_INT)
               | (values != np.round(values))).to_numpy() | _is_bool(df[col])
        if bad.any():
            first = df[col].to_numpy()[bad][0]
            first = first.item() if hasattr(first, "item") else first
            kind = "non-negative" if col == "repeat" else "positive"
            raise DataError(
                f"{name}: column '{col}' row {_rows(bad, first_row)}: {_short(first)} is not a {kind} integer "
                f"up to {MAX_INT:.0e}; "
                f"use values such as {'0, 1, 2' if col == 'repeat' else '16, 64, 256'}"
            )
        out[col] = values.astype(np.int64)
    for col in extra:
        values = _numeric(df[col])
        bad = (values.isna() | ~np.isfinite(values.astype(float))).to_numpy() | _is_bool(df[col])
        if bad.any():
            raise DataError(f"{name}: column '{col}' row {_rows(bad, first_row)}: {_short(df[col].to_numpy()[bad][0])} "
                            f"is not a finite number; give every window its {col}")
        out[col] = values.astype(float)
    return out


def _energy(df: pd.DataFrame, e_col: str, name: str, first_row: int, allow_nan: bool) -> pd.Series:
    """The energy column in joules, checked: present (unless ``allow_nan``), finite, positive, plausible."""
    energy = _numeric(df[e_col]) * ENERGY_UNITS_J[e_col.split("_", 1)[1]]
    nan = energy.isna().to_numpy()
    if nan.any() and not allow_nan:
        raise DataError(
            f"{name}: column '{e_col}' row {_rows(nan, first_row)}: energy is missing or not a number; "
            "re-measure or remove those windows"
        )
    inf = np.isinf(energy.to_numpy(dtype=float)) | (energy.to_numpy(dtype=float) > MAX_WINDOW_ENERGY_J)
    if inf.any():
        raise DataError(f"{name}: column '{e_col}' row {_rows(inf, first_row)}: energy "
                        f"{energy.to_numpy(dtype=float)[inf][0]:g} J is infinite or over {MAX_WINDOW_ENERGY_J:g} J "
                        "(no window draws that much; it overflows the fit) — re-measure or remove those windows")
    neg = (energy <= 0).to_numpy() | _is_bool(df[e_col])
    if neg.any():
        v = df[e_col][neg].iloc[0]
        what = (f"{v!r} is not a number" if isinstance(v, (bool, np.bool_))
                else f"{energy[neg].iloc[0]:g} is negative" if energy[neg].iloc[0] < 0 else "0 is not positive")
        raise DataError(
            f"{name}: column '{e_col}' row {_rows(neg, first_row)}: energy {what}; a window always draws energy "
            "(0 J means the counter did not move) — re-measure or remove those windows"
        )
    energy = energy.astype(float)
    _check_energy_scale(energy.to_numpy(), f"{name}: column '{e_col}'")
    return energy


def _duration(df: pd.DataFrame, t_col: str, name: str, first_row: int) -> pd.Series:
    duration = _numeric(df[t_col]) * DURATION_UNITS_S[t_col.split("_", 1)[1]]
    bad = (duration.isna() | (duration <= 0) | np.isinf(duration.astype(float))).to_numpy()
    if bad.any():
        raise DataError(
            f"{name}: column '{t_col}' row {_rows(bad, first_row)}: duration must be a positive number; "
            "re-measure or remove those windows"
        )
    return duration.astype(float)


def _output_tokens(df: pd.DataFrame, out: pd.DataFrame, name: str, first_row: int) -> pd.Series:
    if "output_tokens" not in df.columns:
        return out["output_len"].astype(float)
    tokens = _numeric(df["output_tokens"])
    bad = (tokens.isna() | (tokens < 0)).to_numpy()
    if bad.any():
        raise DataError(
            f"{name}: column 'output_tokens' row {_rows(bad, first_row)}: must be a non-negative integer"
        )
    return tokens.astype(float)


def _per_model(df: pd.DataFrame, out: pd.DataFrame, name: str) -> None:
    """Provenance and geometry columns into ``out``: one value per model, geometries checked."""
    for col in PROVENANCE_COLUMNS + GEOMETRY_COLUMNS:
        if col in df.columns:
            out[col] = df[col]
            varies = out.groupby("model")[col].nunique(dropna=False) > 1
            if varies.any():
                raise DataError(
                    f"{name}: column '{col}' varies within model '{varies.idxmax()}'; "
                    "split the file by that column or give the models distinct names"
                )
    geo = [c for c in GEOMETRY_COLUMNS if c in out.columns]
    if geo:
        for model, row in out.drop_duplicates("model").set_index("model")[geo].iterrows():
            try:
                check_geometry(row.to_dict(), f"{name}: model {model!r}")
            except ParamsError as e:
                raise DataError(str(e)) from None
    for col in PROVENANCE_COLUMNS:
        if col not in out.columns:
            out[col] = "unknown"
