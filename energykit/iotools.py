"""Readers of every outside format, one function each, returning ``(data, metadata)`` (pvlib's iotools).

- :func:`read_tidy`: tidy CSV/JSONL measurements (one row per window), validated;
- :func:`read_netcdf`: a NetCDF dataset written by the kit, validated the same way;
- :func:`read_window_log`: a sweep's raw ``windows.jsonl``;
- :func:`read_trace`: a production request trace (Azure LLM inference format, or input_len/output_len);
- :func:`read_hf_config`: a Hugging Face ``config.json``, as a geometry;
- :func:`resolve`: a relative path as the working directory or, failing that, the repository root reads it.

A new format gets one function here; :func:`energykit.dataset.load` dispatches on the suffix.
"""

from __future__ import annotations

import json
import math
import os
import re
import stat
import warnings
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import xarray as xr

from .errors import DataError, ParamsError
from .schema import DIMS, DURATION_UNITS_S, ENERGY_UNITS_J, GEOMETRY_COLUMNS, INT_DIMS, PROVENANCE_COLUMNS, UNITS

__all__ = ["resolve", "read_tidy", "read_netcdf", "read_window_log", "read_trace", "read_arrival_trace", "read_hf_config",
           "geometry_from_hf_config", "MAX_INT", "MATH", "escape_markdown", "check_text", "check_model_name",
           "check_geometry", "MAX_VOCAB", "MIN_ENERGY_J", "MAX_ENERGY_J", "check_regular_file", "check_netcdf_header", "MAX_NETCDF_BYTES"]

KEY = DIMS
MAX_INT = 10**7
"""Largest batch size, length or repeat index accepted [1e7]: beyond it a value is a typo or an overflow."""
REPO_ROOT = Path(__file__).resolve().parent.parent
"""The checkout that holds this package (``params/``, ``data/``, ``notebooks/``) in an editable install."""


def resolve(path: str | Path) -> Path:
    """``path`` as the working directory reads it, else relative to the repository root.

    Parameter files name data relative to the repository root, while JupyterLab starts a notebook's
    kernel in ``notebooks/``; this lets a notebook find its data from any working directory. An
    absolute path, or one that exists from the working directory, is returned unchanged; one found
    nowhere is returned unchanged too, so the reader's "no such file" error names what was given.

    >>> resolve("params/report.yaml").is_file()
    True
    """
    path = Path(path)
    if path.is_absolute() or path.exists():
        return path
    candidate = REPO_ROOT / path
    return candidate if candidate.exists() else path


def check_regular_file(path: Path, what: str = "the file", max_bytes: int | None = None) -> Path:
    """Refuse, in one line, a path that is not a regular file (a FIFO would block a reader forever, a device
    never end) or is larger than ``max_bytes``; a symbolic link to a regular file is read as that file."""
    path = Path(path)
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise DataError(f"{path}: no such file; check the path") from None
    except OSError as e:
        raise DataError(f"{path}: cannot be read ({e.strerror}); check the path") from None
    if stat.S_ISDIR(st.st_mode):
        raise DataError(f"{path}: is a folder, not {what}; give the file")
    if not stat.S_ISREG(st.st_mode):
        raise DataError(f"{path}: is not a regular file (a FIFO, socket or device), not {what}; give a file")
    if max_bytes is not None and st.st_size > max_bytes:
        raise DataError(f"{path}: {st.st_size} bytes is over the {max_bytes} bytes {what} may have; "
                        "check that this is the right file")
    return path



NUMERIC_VARIABLES = ("output_tokens", "iterations", "window_energy_j", "window_duration_s", "ttft_s")
"""Data variables of a kit dataset that hold numbers, besides energy and duration."""
MAX_NETCDF_BYTES = 1 << 30
"""Largest NetCDF read [1 GiB of arrays once decompressed], from the sizes its header declares: a small
compressed file can declare arrays of gigabytes. The kit's datasets of a million windows take ~200 MB."""
MAX_NETCDF_ELEMENTS = 1 << 27
"""Largest number of elements of one NetCDF variable (134 M)."""


def check_netcdf_header(path: Path, max_bytes: int = MAX_NETCDF_BYTES, what: str = "a dataset") -> None:
    """Refuse, from the HDF5 header alone (no array is read), a NetCDF whose variables would take more than
    ``max_bytes`` once loaded, or whose one variable holds more than :data:`MAX_NETCDF_ELEMENTS` values."""
    total, big = 0, ("", 0)
    try:
        with h5py.File(path, "r") as f:
            def visit(name, obj):
                nonlocal total, big
                if isinstance(obj, h5py.Dataset):
                    n = math.prod(int(x) for x in (obj.shape or ()))
                    item = 64 if obj.dtype.kind in "OV" or h5py.check_string_dtype(obj.dtype) else obj.dtype.itemsize
                    total += n * max(int(item), 1)
                    if n > big[1]:
                        big = (name, n)
            f.visititems(visit)
    except (OSError, ValueError, TypeError, KeyError) as e:
        raise DataError(f"{path}: not a readable NetCDF file ({type(e).__name__}); check the file") from None
    if big[1] > MAX_NETCDF_ELEMENTS or total > max_bytes:
        raise DataError(f"{path}: its header declares {total / 1e6:.0f} MB of arrays (variable {big[0][:60]!r}: "
                        f"{big[1]} values), over the {max_bytes / 1e6:.0f} MB {what} may take; it is not a kit dataset "
                        "or is damaged — check the file")


TRACE_COLUMNS = {"ContextTokens": "input_len", "GeneratedTokens": "output_len"}
MAX_VOCAB = 1 << 22
"""Largest plausible vocabulary [tokens]; released models use 32k to 256k."""
MIN_ENERGY_J, MAX_ENERGY_J = 1e-3, 1e7
"""Plausible median energy of one measured window [J]: outside it the column's unit is likely wrong."""
MAX_WINDOW_ENERGY_J = 1e12
"""Largest energy of any one window accepted [J] (278 MWh): beyond it a value is garbage and overflows the fit."""
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029\u061c\u200b-\u200f\u202a-\u202e\u2060-\u2069\ufeff]")
"""Control characters, and the invisible ones that reorder or hide text (bidirectional overrides and isolates,
zero-width spaces and joiners, the byte-order mark): a name holding one prints as another name."""
_PLAIN_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,127}$")


MATH = re.compile(r"\$\$(.+?)\$\$|(?<![\\$])\$([^$\n]+?)\$", re.S)
"""``$$display$$`` and ``$inline$`` LaTeX in markdown cells."""


def escape_markdown(text: str) -> str:
    """Markdown whose text can hold no HTML: ``<``, ``&`` and ``>`` (but a blockquote's ``>``) outside
    ``$math$`` become entities, and ``javascript:`` links are dropped. Model names and file names reach the reports through here.

    >>> escape_markdown("**<img src=x onerror=alert(1)>**: $o < o^*$")
    '**&lt;img src=x onerror=alert(1)&gt;**: $o < o^*$'
    >>> escape_markdown("> **Simulated only.** a > b")  # a blockquote stays one
    '> **Simulated only.** a &gt; b'
    """
    out, last = [], 0
    for m in MATH.finditer(text):
        out += [_escape_text(text[last:m.start()]), m.group(0)]
        last = m.end()
    out.append(_escape_text(text[last:]))
    return "".join(out)


def _escape_text(text: str) -> str:
    text = re.sub(r"&(?!(?:lt|gt|amp|quot|#\d+);)", "&amp;", text)  # entities already escaped stay as they are
    text = text.replace("<", "&lt;")
    # a '>' opens no tag once every '<' is escaped; one at a line's start is a blockquote marker and stays
    text = re.sub(r"(?m)(?<!^)(?<!^ )(?<!^  )(?<!^   )>", "&gt;", text)
    return re.sub(r"\]\(\s*(?:javascript|data|vbscript):[^)]*\)", "](#)", text, flags=re.I)


def check_text(value: str, what: str) -> str:
    """Refuse a string with control characters (a newline would start a new line in a shell script)."""
    m = _CONTROL.search(value)
    if m:
        raise ParamsError(f"{what} {value[:60]!r} holds a control character or an invisible one "
                          f"({m.group()!r}, U+{ord(m.group()):04X}); remove it (names and paths are one line of visible text)")
    return value


def check_model_name(name: str, what: str = "model name") -> str:
    """A model name used as a folder name: letters, digits and ``. _ + -``, not starting with a dot.

    >>> check_model_name("llama3.2-1b")
    'llama3.2-1b'
    """
    if not _PLAIN_NAME.match(name):
        raise ParamsError(f"{what} {name[:60]!r} is not a plain name (letters, digits and . _ + -, at most 128, "
                          "not starting with . or -); it becomes a folder name — rename it, e.g. 'my-model-1b'")
    return name


_GEOMETRY_POSITIVE = ("num_layers", "hidden_size", "num_heads", "num_kv_heads", "head_dim", "intermediate_size")


def _as_int(v):
    """``v`` as an int when it is a whole number (not a bool), else None."""
    if isinstance(v, (bool, np.bool_)) or v is None:
        return None
    if isinstance(v, (int, np.integer)):
        return int(v)
    if isinstance(v, (float, np.floating)) and np.isfinite(v) and float(v).is_integer():
        return int(v)
    return None


def check_geometry(geom: dict, where: str) -> dict:
    """Refuse a geometry that no model has: layers, heads and sizes positive integers, KV heads dividing
    the heads, a plausible vocabulary. Missing keys and NaN (a model without geometry) are skipped.

    >>> check_geometry({"num_heads": 32, "num_kv_heads": 8}, "x")
    {'num_heads': 32, 'num_kv_heads': 8}
    """
    def present(k):
        v = geom.get(k)
        return not (v is None or (isinstance(v, (float, np.floating)) and np.isnan(v)))

    for k in _GEOMETRY_POSITIVE + ("vocab_size",):
        if present(k):
            v = _as_int(geom[k])
            hi = MAX_VOCAB if k == "vocab_size" else MAX_INT
            lo = 2 if k == "vocab_size" else 1
            if v is None or not lo <= v <= hi:
                raise ParamsError(f"{where}: {k} must be an integer from {lo} to {hi}; got {geom[k]!r} — "
                                  "copy it from the model's config.json")
    for k in ("ffn_gated", "tied_embeddings"):
        if present(k) and _as_int(geom[k]) not in (0, 1):
            raise ParamsError(f"{where}: {k} must be 0 or 1; got {geom[k]!r}")
    if present("num_heads") and present("num_kv_heads") and int(geom["num_heads"]) % int(geom["num_kv_heads"]):
        raise ParamsError(f"{where}: num_kv_heads {geom['num_kv_heads']!r} does not divide num_heads "
                          f"{geom['num_heads']!r}; every KV head serves a whole group of query heads")
    return geom


def _unit_column(df: pd.DataFrame, quantity: str, table: dict, path: str) -> str:
    """Find the one ``<quantity>_<unit>`` column and check its unit."""
    pattern = re.compile(rf"^{quantity}_([A-Za-z]+)$")
    found = [c for c in df.columns if pattern.match(c)]
    if not found:
        raise DataError(
            f"{path}: missing column '{quantity}_<unit>' (for example '{quantity}_{next(iter(table))}'); "
            f"add it with one of the units {', '.join(table)}"
        )
    if len(found) > 1:
        raise DataError(f"{path}: several {quantity} columns {found}; keep exactly one")
    unit = pattern.match(found[0]).group(1)  # case-sensitive: energy_MJ is not energy_mj
    if unit not in table:
        raise DataError(
            f"{path}: unknown unit '{unit}' in column '{found[0]}' (units are lower case and case-sensitive); use one of "
            + ", ".join(f"{quantity}_{u}" for u in table)
        )
    return found[0]


def _rows(mask: np.ndarray, first_row: int) -> str:
    idx = np.flatnonzero(mask)[:5] + first_row
    more = " …" if mask.sum() > 5 else ""
    return ", ".join(str(i) for i in idx) + more


def _read_jsonl(path: Path) -> pd.DataFrame:
    """One JSON object per line; a bad line is reported by its line number."""
    rows = []
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line, parse_int=_json_int)
            except (json.JSONDecodeError, RecursionError) as e:
                raise DataError(f"{path} line {n}: not valid JSON ({getattr(e, 'msg', 'nested too deeply')}); "
                                "fix or remove that line") from None
            if not isinstance(rec, dict):
                raise DataError(f"{path} line {n}: expected a JSON object (one window), got {type(rec).__name__}")
            rows.append(rec)
    if not rows:
        raise pd.errors.EmptyDataError("no rows")
    df = pd.DataFrame(rows)
    if "model" in df.columns:
        df["model"] = [m if isinstance(m, str) or m is None else json.dumps(m) for m in df["model"]]
    return df


def _number_or_nan(v) -> float:
    if isinstance(v, (bool, np.bool_)):
        return float("nan")
    try:
        return float(v)
    except OverflowError:
        return float("inf")
    except (TypeError, ValueError):
        return float("nan")


def _short(v, limit: int = 40) -> str:
    """``repr(v)``, cut to ``limit`` characters (a value of hundreds of digits stays one short line)."""
    text = repr(v)
    return text if len(text) <= limit else text[:limit] + "…"


def _numeric(col: pd.Series) -> pd.Series:
    """``pd.to_numeric(col, errors="coerce")``, with integers of hundreds of digits as ``inf`` instead of an
    OverflowError (the checks then name the row)."""
    try:
        return pd.to_numeric(col, errors="coerce")
    except OverflowError:
        return pd.Series([_number_or_nan(v) for v in col], index=col.index, dtype=float)


def _json_int(text: str):
    """A JSON integer as ``int``, or as a float (``inf`` past its range) when no int64 column could hold it, so that
    the checks name it instead of pandas overflowing."""
    n = int(text)
    if -(1 << 63) <= n < 1 << 63:
        return n
    try:
        return float(n)
    except OverflowError:
        return float("inf") if n > 0 else float("-inf")


def read_tidy(path: str | Path, *, allow_nan_energy: bool = False) -> pd.DataFrame:
    """Read and validate a tidy CSV or JSONL file of measured windows.

    Parameters
    ----------
    path : str or Path
        ``.csv`` (header in the first line) or ``.jsonl`` / ``.json`` (one object per line).
    allow_nan_energy : bool
        Accept NaN energies (a sweep run with ``meter: none``); otherwise NaN is an error.

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
    df.columns = [str(c).strip() for c in df.columns]
    if "status" in df.columns and "energy_j" in df.columns:  # the kit's own windows.jsonl: its good windows
        df = df[df["status"] == "ok"]
        df = df.drop_duplicates(list(KEY), keep="last").reset_index(drop=True)
        df = df.drop(columns=[c for c in ("status", "time", "timeline", "reason", "error", "gpu_energy_j")
                              if c in df.columns]).rename(columns={"energy_method": "method"})
        if len(df) == 0:
            raise DataError(f"{name}: the log holds no completed window; measure first")

    for col in DIMS:
        if col not in df.columns:
            raise DataError(f"{name}: missing column '{col}'; every row needs {', '.join(DIMS)}")
    e_col = _unit_column(df, "energy", ENERGY_UNITS_J, name)
    t_col = _unit_column(df, "duration", DURATION_UNITS_S, name)

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

    energy = _numeric(df[e_col]) * ENERGY_UNITS_J[e_col.split("_", 1)[1]]
    nan = energy.isna().to_numpy()
    if nan.any() and not allow_nan_energy:
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
    out["energy_j"] = energy.astype(float)
    _check_energy_scale(out["energy_j"].to_numpy(), f"{name}: column '{e_col}'")

    duration = _numeric(df[t_col]) * DURATION_UNITS_S[t_col.split("_", 1)[1]]
    bad = (duration.isna() | (duration <= 0) | np.isinf(duration.astype(float))).to_numpy()
    if bad.any():
        raise DataError(
            f"{name}: column '{t_col}' row {_rows(bad, first_row)}: duration must be a positive number; "
            "re-measure or remove those windows"
        )
    out["duration_s"] = duration.astype(float)

    if "output_tokens" in df.columns:
        tokens = _numeric(df["output_tokens"])
        bad = (tokens.isna() | (tokens < 0)).to_numpy()
        if bad.any():
            raise DataError(
                f"{name}: column 'output_tokens' row {_rows(bad, first_row)}: must be a non-negative integer"
            )
        out["output_tokens"] = tokens.astype(float)
    else:
        out["output_tokens"] = out["output_len"].astype(float)

    dup = out.duplicated(list(KEY), keep=False).to_numpy()
    if dup.any():
        key = out.loc[dup, list(KEY)].iloc[0].to_dict()
        raise DataError(
            f"{name}: duplicate rows {_rows(dup, first_row)} for the same window {key}; "
            "give each window its own 'repeat' index or remove the duplicate"
        )

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
    extras = [c for c in df.columns if c not in out.columns and c not in (e_col, t_col)]
    for col in extras:
        out[col] = df[col]
    out.attrs["source"] = path.name
    meta = {"source": path.name, "format": "tidy " + suffix.lstrip("."), "energy_column": e_col,
            "duration_column": t_col, "kit_log": "status" in df.columns}
    return out, meta


def _is_bool(col: pd.Series) -> np.ndarray:
    """Rows holding a boolean (JSON ``true`` is not the integer 1)."""
    if col.dtype == bool:
        return np.ones(len(col), dtype=bool)
    if col.dtype == object:
        return col.map(lambda v: isinstance(v, (bool, np.bool_))).to_numpy(dtype=bool)
    return np.zeros(len(col), dtype=bool)


def _check_model_names(models: pd.Series, name: str, first_row: int = 0) -> None:
    """Model names are one line of text, and two names may not differ only in spaces or case."""
    for m in pd.unique(models):
        try:
            check_text(str(m), "model name")
        except ParamsError as e:
            raise DataError(f"{name}: {e}") from None
    names = pd.Series(pd.unique(models)).astype(str)
    norm = names.str.strip().str.casefold()
    clash = norm.duplicated(keep=False)
    if clash.any():
        a, b = names[clash].iloc[:2]
        raise DataError(f"{name}: model names {a!r} and {b!r} differ only in spaces or case and would read as one "
                        "model; give every model one distinct name")


def _check_energy_scale(energy_j: np.ndarray, where: str) -> None:
    """Warn when the median window energy is implausible for joules (a wrong unit or a scaled column)."""
    e = energy_j[np.isfinite(energy_j) & (energy_j > 0)]
    if len(e) == 0:
        return
    med = float(np.median(e))
    if not MIN_ENERGY_J <= med <= MAX_ENERGY_J:
        warnings.warn(f"{where}: the median window energy is {med:.3g} J, outside the plausible "
                      f"{MIN_ENERGY_J:g} to {MAX_ENERGY_J:g} J of one generate() call; check the column's unit "
                      "(energy_j, energy_mj, energy_kwh, ...)", stacklevel=3)


def read_netcdf(path: str | Path) -> xr.Dataset:
    """Read a measurement Dataset written by :func:`energykit.dataset.write_netcdf`, checking dims,
    units and energies like a tidy file; returns (Dataset, metadata = its attributes)."""
    path = resolve(path)
    check_regular_file(path, "a NetCDF dataset")
    check_netcdf_header(path)  # sizes from the header, before any array is read
    try:
        ds = xr.load_dataset(path, engine="h5netcdf")
    except Exception as e:  # h5py raises OSError/ValueError variants for non-NetCDF files
        raise DataError(f"{path}: not a readable NetCDF file ({type(e).__name__}); check the file") from e
    missing = [d for d in DIMS if d not in ds.dims and d not in ds.coords]
    if missing:
        raise DataError(f"{path}: missing dimension(s) {missing}; an energykit dataset has dims {list(DIMS)}")
    for var in ("energy_j", "duration_s"):
        if var not in ds:
            raise DataError(f"{path}: missing data variable '{var}'")
        unit = ds[var].attrs.get("units")
        if unit != UNITS[var]:
            raise DataError(
                f"{path}: variable '{var}' has unknown unit {unit!r}; expected '{UNITS[var]}' (convert it to SI)"
            )
        kind = ds[var].dtype.kind
        if kind not in "iuf":
            raise DataError(f"{path}: variable '{var}' holds {'booleans' if kind == 'b' else 'text or objects'} "
                            f"(dtype {ds[var].dtype}), not numbers in {UNITS[var]}; fix or re-measure the file")
    for var in NUMERIC_VARIABLES:  # the window's other numbers, when present
        if var in ds.variables and ds[var].dtype.kind not in "iuf":
            raise DataError(f"{path}: variable '{var}' holds {'booleans' if ds[var].dtype.kind == 'b' else 'text or objects'}"
                            f" (dtype {ds[var].dtype}), not numbers; fix or re-measure the file")
    if "window" not in ds.dims:  # a dense grid: each coordinate value names one slot
        for d in DIMS:
            if d in ds.dims and pd.Index(ds[d].values).has_duplicates:
                dup = pd.Index(ds[d].values)[pd.Index(ds[d].values).duplicated()][0]
                dup = dup.item() if hasattr(dup, "item") else dup
                raise DataError(f"{path}: coordinate '{d}' holds {dup!r} twice; its windows would be mixed up "
                                "(averaged or dropped) — give each value once, or re-measure the file")
    elif all(d in ds.coords for d in DIMS):
        key = pd.DataFrame({d: ds[d].values for d in DIMS})
        dup = key.duplicated(keep=False).to_numpy()
        if dup.any():
            raise DataError(f"{path}: window {key[dup].iloc[0].to_dict()} occurs {int(dup.sum())} times; give each "
                            "window its own repeat index or remove the duplicate")
    for d in DIMS[1:]:
        v = np.asarray(ds[d].values)
        lower = 0 if d == "repeat" else 1
        if v.dtype == bool or not np.issubdtype(v.dtype, np.number) or not (
                np.all(np.isfinite(v)) and np.all(v == np.round(v)) and np.all((v >= lower) & (v <= MAX_INT))):
            first = next((x for x in v.ravel() if not (isinstance(x, (int, float, np.number)) and not
                                                        isinstance(x, (bool, np.bool_)) and float(x).is_integer()
                                                        and lower <= x <= MAX_INT)), v.ravel()[0])
            first = first.item() if hasattr(first, "item") else first
            raise DataError(f"{path}: coordinate '{d}' holds {_short(first)}, not a "
                            f"{'non-negative' if d == 'repeat' else 'positive'} integer; fix or re-measure the file")
    _check_model_names(pd.Series(ds["model"].values.astype(str)), str(path))
    if "window" not in ds.dims and len(set(map(str, ds["model"].values))) != ds.sizes.get("model", 0):
        raise DataError(f"{path}: a model name occurs twice in the 'model' dimension; give every model one name")
    e = ds["energy_j"].values
    bad = np.isinf(e) | (e <= 0) | (e > MAX_WINDOW_ENERGY_J)
    if bad.any():
        where = {d: ds[d].values[ix].item() for d, ix in zip(ds["energy_j"].dims, np.argwhere(bad)[0])}
        what = ("zero (not positive)" if e[bad][0] == 0 else "negative or infinite" if e[bad][0] < 0 or np.isinf(e[bad][0])
                else f"over {MAX_WINDOW_ENERGY_J:g} J (no window draws that much)")
        raise DataError(f"{path}: energy_j {e[bad][0]:g} J is {what} at {where}; "
                        "a window always draws energy — re-measure or remove that window")
    _check_energy_scale(np.asarray(e, dtype=float).ravel(), f"{path}: energy_j")
    geo = [c for c in GEOMETRY_COLUMNS if c in ds.coords]
    if geo:
        names = ds["model"].values.astype(str)
        for m in map(str, dict.fromkeys(names)):
            k = int(np.flatnonzero(names == m)[0]) if "window" in ds.dims else list(names).index(m)
            geom = {c: ds[c].values[k].item() if hasattr(ds[c].values[k], "item") else ds[c].values[k] for c in geo}
            try:
                check_geometry(geom, f"{path}: model {m!r}")
            except ParamsError as e:
                raise DataError(str(e)) from None
    t = ds["duration_s"].values
    if (np.isinf(t) | (t <= 0)).any():
        raise DataError(f"{path}: a duration_s is zero, negative or infinite; re-measure or remove that window")
    for k, v in list(ds.attrs.items()):
        if isinstance(v, str) and v[:1] in "{[":
            try:
                ds.attrs[k] = json.loads(v)
            except (json.JSONDecodeError, RecursionError):  # not JSON, or nested too deeply: kept as text
                pass
    return ds, dict(ds.attrs)


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


def read_hf_config(path: str | Path) -> tuple[dict, dict]:
    """A Hugging Face ``config.json`` as a geometry, and metadata (``source``, ``model_type``)."""
    path = Path(path)
    try:
        check_regular_file(path, "a config.json", 16 << 20)
    except DataError as e:
        raise ParamsError(str(e)) from None

    def no_constant(name):
        raise ParamsError(f"{path}: holds {name}, which is not a number of layers, heads or sizes; copy the model's "
                          "config.json again")

    try:
        cfg = json.loads(path.read_text(encoding="utf-8"), parse_constant=no_constant)
    except (ValueError, UnicodeDecodeError, RecursionError) as e:
        raise ParamsError(f"{path}: not valid JSON ({getattr(e, 'msg', type(e).__name__)}); fix the file or use a "
                          "preset") from None
    if not isinstance(cfg, dict):
        raise ParamsError(f"{path}: expected a JSON object of model settings; fix the file or use a preset")
    return geometry_from_hf_config(cfg), {"source": str(path), "model_type": cfg.get("model_type", "unknown")}


def _need(cfg: dict, key: str):
    if key not in cfg:
        raise ParamsError(f"config.json lacks {key}; give a model's full config")
    return cfg[key]


def geometry_from_hf_config(cfg: dict) -> dict:
    """Geometry (:data:`energykit.schema.GEOMETRY_KEYS`) from a Hugging Face ``config.json`` mapping."""
    arch = cfg.get("model_type", "unknown")
    if not isinstance(arch, str):
        raise ParamsError(f"config.json: model_type must be a string; got {arch!r}")
    d = cfg.get("hidden_size") or cfg.get("n_embd") or cfg.get("d_model")
    nq = cfg.get("num_attention_heads") or cfg.get("n_head")
    L = cfg.get("num_hidden_layers") or cfg.get("n_layer")
    if not (d and nq and L):
        raise ParamsError("config.json lacks hidden_size / num_attention_heads / num_hidden_layers; give a model's config")
    check_geometry({"hidden_size": d, "num_heads": nq, "num_layers": L}, f"config.json of {arch!r}")
    if arch == "falcon":
        nkv = 1 if cfg.get("multi_query", True) and not cfg.get("new_decoder_architecture") else cfg.get("num_kv_heads", nq)
    else:
        nkv = cfg.get("num_key_value_heads")
        nkv = nq if nkv is None else nkv  # as transformers: absent means one KV head per query head
    ffn = cfg.get("intermediate_size") or cfg.get("ffn_dim") or cfg.get("ffn_hidden_size") or 4 * d
    geom = dict(
        arch=arch, num_layers=L, hidden_size=d, num_heads=nq, num_kv_heads=nkv,
        head_dim=cfg.get("head_dim") or d // nq, intermediate_size=ffn,
        ffn_gated=0 if arch in ("opt", "falcon", "gpt2", "gpt_neox") else 1,
        vocab_size=_need(cfg, "vocab_size"), tied_embeddings=int(cfg.get("tie_word_embeddings", True)),
        max_position_embeddings=cfg.get("max_position_embeddings", 2048),
    )
    if cfg.get("sliding_window") and arch.startswith("gemma"):
        geom["sliding_window"] = cfg["sliding_window"]
    for k in ("max_position_embeddings", "sliding_window"):
        if k in geom and (_as_int(geom[k]) is None or not 1 <= _as_int(geom[k]) <= 1 << 32):
            raise ParamsError(f"config.json of {arch!r}: {k} must be a positive integer of tokens; got {geom[k]!r} — "
                              "copy it from the model's config.json")
    return check_geometry(geom, f"config.json of {arch!r}")
