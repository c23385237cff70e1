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
import re
from pathlib import Path

import numpy as np
import pandas as pd
import xarray as xr

from .errors import DataError, ParamsError
from .schema import DIMS, DURATION_UNITS_S, ENERGY_UNITS_J, GEOMETRY_COLUMNS, INT_DIMS, PROVENANCE_COLUMNS, UNITS

__all__ = ["resolve", "read_tidy", "read_netcdf", "read_window_log", "read_trace", "read_hf_config", "geometry_from_hf_config",
           "MAX_INT"]

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


TRACE_COLUMNS = {"ContextTokens": "input_len", "GeneratedTokens": "output_len"}


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
                rec = json.loads(line)
            except json.JSONDecodeError as e:
                raise DataError(f"{path} line {n}: not valid JSON ({e.msg}); fix or remove that line") from None
            if not isinstance(rec, dict):
                raise DataError(f"{path} line {n}: expected a JSON object (one window), got {type(rec).__name__}")
            rows.append(rec)
    if not rows:
        raise pd.errors.EmptyDataError("no rows")
    df = pd.DataFrame(rows)
    if "model" in df.columns:
        df["model"] = [m if isinstance(m, str) or m is None else json.dumps(m) for m in df["model"]]
    return df


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
    if not path.exists():
        raise DataError(f"{name}: no such file; check the path")
    if path.is_dir():
        raise DataError(f"{name}: is a folder; give a measurement file in it (e.g. {name}/measurements.nc)")
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
    for col in INT_DIMS:
        values = pd.to_numeric(df[col], errors="coerce")
        lower = 0 if col == "repeat" else 1
        bad = (values.isna() | ~np.isfinite(values.astype(float)) | (values < lower) | (values > MAX_INT)
               | (values != np.round(values))).to_numpy()
        if bad.any():
            first = df[col].to_numpy()[bad][0]
            first = first.item() if hasattr(first, "item") else first
            kind = "non-negative" if col == "repeat" else "positive"
            raise DataError(
                f"{name}: column '{col}' row {_rows(bad, first_row)}: {first!r} is not a {kind} integer "
                f"up to {MAX_INT:.0e}; "
                f"use values such as {'0, 1, 2' if col == 'repeat' else '16, 64, 256'}"
            )
        out[col] = values.astype(np.int64)

    energy = pd.to_numeric(df[e_col], errors="coerce") * ENERGY_UNITS_J[e_col.split("_", 1)[1]]
    nan = energy.isna().to_numpy()
    if nan.any() and not allow_nan_energy:
        raise DataError(
            f"{name}: column '{e_col}' row {_rows(nan, first_row)}: energy is missing or not a number; "
            "re-measure or remove those windows"
        )
    inf = np.isinf(energy.to_numpy(dtype=float))
    if inf.any():
        raise DataError(f"{name}: column '{e_col}' row {_rows(inf, first_row)}: energy is infinite; "
                        "re-measure or remove those windows")
    neg = (energy < 0).to_numpy()
    if neg.any():
        raise DataError(
            f"{name}: column '{e_col}' row {_rows(neg, first_row)}: energy {energy[neg].iloc[0]:g} is negative; "
            "energy must be >= 0 — re-measure or remove those windows"
        )
    out["energy_j"] = energy.astype(float)

    duration = pd.to_numeric(df[t_col], errors="coerce") * DURATION_UNITS_S[t_col.split("_", 1)[1]]
    bad = (duration.isna() | (duration <= 0) | np.isinf(duration.astype(float))).to_numpy()
    if bad.any():
        raise DataError(
            f"{name}: column '{t_col}' row {_rows(bad, first_row)}: duration must be a positive number; "
            "re-measure or remove those windows"
        )
    out["duration_s"] = duration.astype(float)

    if "output_tokens" in df.columns:
        tokens = pd.to_numeric(df["output_tokens"], errors="coerce")
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


def read_netcdf(path: str | Path) -> xr.Dataset:
    """Read a measurement Dataset written by :func:`energykit.dataset.write_netcdf`, checking dims,
    units and energies like a tidy file; returns (Dataset, metadata = its attributes)."""
    path = resolve(path)
    if not path.exists():
        raise DataError(f"{path}: no such file; check the path")
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
    e = ds["energy_j"].values
    bad = np.isinf(e) | (e < 0)
    if bad.any():
        where = {d: ds[d].values[ix].item() for d, ix in zip(ds["energy_j"].dims, np.argwhere(bad)[0])}
        raise DataError(f"{path}: energy_j {e[bad][0]:g} J is negative or infinite at {where}; "
                        "re-measure or remove that window")
    t = ds["duration_s"].values
    if (np.isinf(t) | (t <= 0)).any():
        raise DataError(f"{path}: a duration_s is zero, negative or infinite; re-measure or remove that window")
    for k, v in list(ds.attrs.items()):
        if isinstance(v, str) and v[:1] in "{[":
            try:
                ds.attrs[k] = json.loads(v)
            except json.JSONDecodeError:
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
    out = []
    torn = False
    with open(path, encoding="utf-8", errors="replace") as f:
        for n, line in enumerate(f, start=1):
            if not line.endswith("\n"):
                torn = True
                break  # torn write from a crash
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                raise DataError(f"{path} line {n}: not a JSON window record; remove that line "
                                "(the kit never writes one)") from None
            if not isinstance(rec, dict) or "model" not in rec:
                raise DataError(f"{path} line {n}: not a window record (a JSON object with model, lengths and "
                                "status); remove that line")
            out.append(rec)
    return out, {"source": path.name, "records": len(out), "torn_tail": torn}


def read_trace(path: str | Path) -> tuple[pd.DataFrame, dict]:
    """Read a request trace with columns ``ContextTokens``/``GeneratedTokens`` (Azure format) or
    ``input_len``/``output_len``; returns ``input_len`` and ``output_len`` [tokens] per request, and
    metadata (``source``, ``requests``, ``format``).
    """
    path = resolve(path)
    if not path.exists():
        raise DataError(f"{path}: no such trace file; check the path")
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
        v = pd.to_numeric(df[col], errors="coerce")
        bad = v.isna() | (v < 0)
        if bad.any():
            raise DataError(f"{path}: column '{col}' row {int(np.flatnonzero(bad)[0]) + 2} is not a non-negative integer")
        df[col] = v.astype(np.int64)
    if len(df) == 0:
        raise DataError(f"{path}: the trace has no requests")
    out = df[["input_len", "output_len"]].copy()
    out.attrs["source"] = path.name
    fmt = "azure" if "ContextTokens" in pd.read_csv(path, nrows=0).columns else "tidy"
    return out, {"source": path.name, "requests": len(out), "format": fmt}


def read_hf_config(path: str | Path) -> tuple[dict, dict]:
    """A Hugging Face ``config.json`` as a geometry, and metadata (``source``, ``model_type``)."""
    path = Path(path)
    try:
        cfg = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ParamsError(f"{path}: not valid JSON ({getattr(e, 'msg', e)}); fix the file or use a preset") from None
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
    d = cfg.get("hidden_size") or cfg.get("n_embd") or cfg.get("d_model")
    nq = cfg.get("num_attention_heads") or cfg.get("n_head")
    L = cfg.get("num_hidden_layers") or cfg.get("n_layer")
    if not (d and nq and L):
        raise ParamsError("config.json lacks hidden_size / num_attention_heads / num_hidden_layers; give a model's config")
    if arch == "falcon":
        nkv = 1 if cfg.get("multi_query", True) and not cfg.get("new_decoder_architecture") else cfg.get("num_kv_heads", nq)
    else:
        nkv = cfg.get("num_key_value_heads") or nq
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
    return geom
