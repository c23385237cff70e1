"""Measured inference energy as an xarray Dataset: import, validate, store.

One measured *window* is one ``generate()`` call on a batch of ``batch_size`` identical-length
requests (or the mean of several identical calls inside one meter window). Windows are indexed by
the five dimensions :data:`DIMS`; the data variables carry SI units in ``attrs["units"]`` and the
dataset carries its provenance (GPU, engine, dtype, source files) in its attributes.

Tidy files (CSV or JSONL, one row per window) use the columns of ``data/h200_*.csv``:

========================  ==================================================================
column                    meaning
========================  ==================================================================
model                     model (geometry) name
batch_size                concurrent sequences in the window
input_len, output_len     prompt tokens and generated tokens per sequence
repeat                    repetition index of the cell
energy_<unit>             energy of the window; unit one of ``j, mj, kj, wh, kwh``
duration_<unit>           wall time of the window; unit one of ``s, ms, us``
output_tokens (opt.)      tokens actually generated per sequence (defaults to output_len)
engine, gpu, dtype (opt.) provenance; constant per model
geometry (opt.)           :data:`GEOMETRY_COLUMNS`, constant per model
========================  ==================================================================
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import pandas as pd
import xarray as xr

from . import __version__
from .errors import DataError
from .iotools import read_netcdf, read_tidy, resolve
from .model import VARIABLES
from .state import atomic_write_netcdf

from .schema import DIMS, GEOMETRY_COLUMNS, GLOSSARY, PROVENANCE_COLUMNS, UNITS

__all__ = ["KEY", "window_key", "cell_variables", "DENSE_LIMIT", "dense_size", "is_stacked", "from_frame", "model_names", "batch_sizes",
           "model_value", "measured_cells", "OUTLIER_REL", "outlier_windows", "write_netcdf", "load",
           "combine", "load_many", "to_frame", "cell_means", "geometry"]

KEY = DIMS
"""The dimensions of a window when the data carry no variable beyond the built-in ones (see :func:`window_key`)."""


def _names(data) -> set:
    if isinstance(data, pd.DataFrame):
        return set(data.columns)
    return set(data.variables) | set(data.dims)


def window_key(data=None) -> tuple[str, ...]:
    """Dimensions of a measured window: :data:`KEY` plus every other declared variable
    (:data:`energykit.model.VARIABLES`, read now) that ``data`` (a frame or Dataset) carries, before ``repeat``.

    >>> window_key()
    ('model', 'batch_size', 'input_len', 'output_len', 'repeat')
    """
    extra = [v for v in VARIABLES if v not in KEY and (data is None or v in _names(data))]
    return (*KEY[:-1], *extra, KEY[-1])


def cell_variables(data=None) -> list[str]:
    """The declared variables a cell of ``data`` is keyed by, in the order of :func:`window_key`."""
    return [d for d in window_key(data) if d in VARIABLES]


DENSE_LIMIT = 4
"""A dense (grid) layout may hold at most this many slots per measured window (plus 100,000)."""


def dense_size(df: pd.DataFrame) -> int:
    """Slots of the full product of every distinct value of the five dimensions."""
    return int(np.prod([df[d].nunique() for d in window_key(df)], dtype=float))


def is_stacked(ds: xr.Dataset) -> bool:
    """True for the stacked layout (one ``window`` dimension) of long-tail data."""
    return "window" in ds.dims


def from_frame(df: pd.DataFrame, *, source: str = "", attrs: dict | None = None,
               layout: str = "auto") -> xr.Dataset:
    """Build the measurement Dataset from a validated tidy frame (see :func:`energykit.iotools.read_tidy`).

    ``layout="dense"`` indexes windows by the five dimensions :data:`DIMS` (a grid of cells);
    ``"stacked"`` keeps one ``window`` dimension with the five as coordinates, so that memory
    follows the rows of long-tail data; ``"auto"`` stacks when the grid would hold more than
    :data:`DENSE_LIMIT` slots per window.
    """
    per_model = [c for c in PROVENANCE_COLUMNS + GEOMETRY_COLUMNS if c in df.columns]
    key = window_key(df)
    window_cols = [c for c in df.columns if c not in per_model and c not in key]
    if layout == "auto":
        layout = "stacked" if dense_size(df) > DENSE_LIMIT * len(df) + 100_000 else "dense"
    if layout == "stacked":
        ds = _stacked(df, per_model, window_cols)
    else:
        ds = df.set_index(list(key))[window_cols].to_xarray()
        models = ds["model"].values
        first = df.drop_duplicates("model").set_index("model")
        for col in per_model:
            values = first.loc[models, col].to_numpy()
            if col in GEOMETRY_COLUMNS and col != "arch":
                values = pd.to_numeric(pd.Series(values), errors="coerce").to_numpy()
            else:
                values = values.astype(str)
            ds = ds.assign_coords({col: ("model", values)})
    for var in ds.data_vars:
        if ds[var].dtype == object:
            ds[var] = ds[var].fillna("").astype(str)
    ds.attrs["layout"] = layout
    for name in list(ds.variables):
        if name in UNITS:
            ds[name].attrs["units"] = UNITS[name]
        if name in GLOSSARY:
            ds[name].attrs["long_name"] = GLOSSARY[name]
    ds.attrs.update(
        {
            "title": "LLM inference energy per generate() call",
            "source": source or df.attrs.get("source", ""),
            "gpu": ", ".join(sorted(set(map(str, df["gpu"])))),
            "engine": ", ".join(sorted(set(map(str, df["engine"])))),
            "dtype": ", ".join(sorted(set(map(str, df["dtype"])))),
            "energykit_version": _version(),
        }
    )
    if attrs:
        ds.attrs.update(attrs)
    return ds


def _stacked(df: pd.DataFrame, per_model: list[str], window_cols: list[str]) -> xr.Dataset:
    df = df.reset_index(drop=True)
    coords = {d: ("window", df[d].to_numpy() if d != "model" else df[d].astype(str).to_numpy()) for d in window_key(df)}
    for col in per_model:
        values = df[col]
        values = pd.to_numeric(values, errors="coerce") if col in GEOMETRY_COLUMNS and col != "arch" else values.astype(str)
        coords[col] = ("window", values.to_numpy())
    return xr.Dataset({c: ("window", df[c].to_numpy()) for c in window_cols}, coords=coords)


def model_names(ds: xr.Dataset) -> list[str]:
    """The models of a dataset, in order, once each (either layout)."""
    return list(dict.fromkeys(str(m) for m in ds["model"].values))


def batch_sizes(ds: xr.Dataset, model: str | None = None) -> list[int]:
    """The batch sizes measured (for one model), sorted."""
    if not is_stacked(ds):
        return sorted(int(b) for b in ds["batch_size"].values)
    b = ds["batch_size"].values if model is None else ds["batch_size"].values[ds["model"].values.astype(str) == model]
    return sorted({int(x) for x in b})


def model_value(ds: xr.Dataset, model: str, name: str, default=None):
    """A per-model coordinate (engine, gpu, dtype, geometry column) of one model (either layout)."""
    if name not in ds.coords:
        return default
    if is_stacked(ds):
        hit = np.flatnonzero(ds["model"].values.astype(str) == model)
        if not len(hit):
            return default
        v = ds[name].values[hit[0]]
    else:
        v = ds[name].sel(model=model).values
    return v.item() if hasattr(v, "item") else v


def measured_cells(ds: xr.Dataset, model: str | None = None, batch_size: int | None = None) -> pd.DataFrame:
    """Repeat means of the cells with a positive measured energy, as a frame (either layout).

    Columns: model, batch_size, input_len, output_len, energy_j [J], energy_j_std [J],
    duration_s [s], n_repeats. The one home of "the measured cells" for fits and designs.
    """
    df = to_frame(ds)
    if model is not None:
        df = df[df["model"].astype(str) == str(model)]
    if batch_size is not None:
        df = df[df["batch_size"] == int(batch_size)]
    df = df.dropna(subset=["energy_j"])
    g = df.groupby(["model", *cell_variables(df)], sort=True)
    out = g.agg(energy_j=("energy_j", "mean"), energy_j_std=("energy_j", "std"),
                duration_s=("duration_s", "mean"), n_repeats=("energy_j", "size")).reset_index()
    return out[out["energy_j"] > 0].reset_index(drop=True)


OUTLIER_REL = 0.05
"""A window is an outlier when it is this far (relative) from its cell's median and 4 robust spreads."""


def outlier_windows(ds: xr.Dataset) -> pd.DataFrame:
    """Windows whose energy departs from the median of their cell's repeats (cells of ≥ 3 repeats).

    A window is flagged when ``|E − median| > max(5 % · median, 4 · 1.4826 · MAD)``. Returns the
    flagged windows with ``deviation_pct``; they stay in the data (the fits are robust), but a
    report or a user can see and drop them.
    """
    df = to_frame(ds).dropna(subset=["energy_j"])
    cell = ["model", *cell_variables(df)]
    g = df.groupby(cell)["energy_j"]
    med = g.transform("median")
    mad = (df["energy_j"] - med).abs().groupby([df[c] for c in cell]).transform("median")
    n = g.transform("size")
    dev = (df["energy_j"] - med).abs()
    flag = (n >= 3) & (dev > np.maximum(OUTLIER_REL * med, 4 * 1.4826 * mad))
    out = df.loc[flag, cell + ["repeat", "energy_j"]].copy()
    out["deviation_pct"] = 100 * (df.loc[flag, "energy_j"] - med[flag]) / med[flag]
    return out.reset_index(drop=True)


def _version() -> str:
    return __version__


def write_netcdf(ds: xr.Dataset, path: str | Path) -> Path:
    """Write a measurement Dataset to NetCDF (h5netcdf); dict attributes are stored as JSON."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    ds = ds.copy()
    ds.attrs = {k: (json.dumps(v) if isinstance(v, (dict, list)) else v) for k, v in ds.attrs.items() if v is not None}
    ds.attrs.setdefault("energykit_version", _version())  # the marker by which the kit knows its own files
    return atomic_write_netcdf(ds, path)  # own temp file, free space checked first, renamed into place


def load(path: str | Path) -> xr.Dataset:
    """Load measurements from a NetCDF dataset or a tidy CSV/JSONL file (attribute ``loaded_from``: the path given)."""
    given, path = path, resolve(path)
    if path.is_dir():
        raise DataError(f"{path}: is a folder; give a measurement file in it (e.g. {path}/measurements.nc)")
    if path.suffix.lower() == ".nc":
        ds = read_netcdf(path)[0]
    else:
        ds = from_frame(read_tidy(path, variables=cell_variables())[0], source=path.name)
    ds.attrs["loaded_from"] = str(given)  # the file read, as named (``source`` is where it was measured)
    return ds


def combine(datasets: Sequence[xr.Dataset]) -> xr.Dataset:
    """Concatenate datasets along ``model``.

    A model name that occurs in two datasets measured with different engines is renamed to
    ``"<model> [<engine>]"`` so that both stay; the same name with the same engine is an error.
    """
    if len(datasets) == 1:
        return datasets[0]
    if any(is_stacked(d) for d in datasets):
        return _combine_stacked(datasets)
    seen: dict[str, str] = {}
    renamed = []
    for ds in datasets:
        names = []
        for m, eng in zip(ds["model"].values, _coord(ds, "engine")):
            name = str(m)
            if name in seen or any(str(m) == str(o) for o in names):
                if seen.get(name) == eng:
                    raise DataError(f"model '{name}' with engine '{eng}' occurs in two datasets; merge or rename them")
                name = f"{m} [{eng}]"
            names.append(name)
        for n, eng in zip(names, _coord(ds, "engine")):
            seen[n] = eng
        renamed.append(ds.assign_coords(model=names))
    out = xr.concat(renamed, dim="model", join="outer", combine_attrs="drop_conflicts")
    out.attrs["source"] = ", ".join(d.attrs.get("source", "") for d in datasets)
    for key in ("gpu", "engine", "dtype"):
        out.attrs[key] = ", ".join(sorted({p.strip() for d in datasets for p in str(d.attrs.get(key, "")).split(",")}))
    return out


def _combine_stacked(datasets: Sequence[xr.Dataset]) -> xr.Dataset:
    """Combine when one dataset is long-tail: through tidy frames, renaming clashing models as above."""
    frames, seen = [], {}
    for ds in datasets:
        df = to_frame(ds)
        for col in PROVENANCE_COLUMNS + GEOMETRY_COLUMNS:
            if col in ds.coords:
                df[col] = df["model"].astype(str).map({m: model_value(ds, m, col) for m in model_names(ds)})
        rename = {}
        for m in model_names(ds):
            eng = str(model_value(ds, m, "engine", ds.attrs.get("engine", "unknown")))
            if m in seen:
                if seen[m] == eng:
                    raise DataError(f"model '{m}' with engine '{eng}' occurs in two datasets; merge or rename them")
                rename[m] = f"{m} [{eng}]"
            seen[rename.get(m, m)] = eng
        df["model"] = df["model"].astype(str).replace(rename)
        frames.append(df)
    out = from_frame(pd.concat(frames, ignore_index=True), layout="stacked")
    out.attrs["source"] = ", ".join(d.attrs.get("source", "") for d in datasets)
    return out


def _coord(ds: xr.Dataset, name: str) -> list[str]:
    if name in ds.coords:
        return [str(v) for v in ds[name].values]
    return [str(ds.attrs.get(name, "unknown"))] * ds.sizes["model"]


def load_many(paths: Iterable[str | Path]) -> xr.Dataset:
    """Load several files (see :func:`load`) and :func:`combine` them."""
    paths = list(paths)
    if not paths:
        raise DataError("no measurement files given; pass at least one .nc, .csv or .jsonl file")
    out = combine([load(p) for p in paths])
    out.attrs["loaded_from"] = ", ".join(str(p) for p in paths)
    return out


def to_frame(ds: xr.Dataset) -> pd.DataFrame:
    """Tidy frame of the measured windows (rows with no energy and no duration dropped)."""
    if is_stacked(ds):
        cols = [v for v in ds.data_vars if ds[v].dims == ("window",)]
        df = ds[cols].reset_coords()[list(window_key(ds)) + cols].to_dataframe().reset_index(drop=True)
        return df.dropna(subset=["duration_s"]).reset_index(drop=True)
    cols = [v for v in ds.data_vars if set(ds[v].dims) == set(window_key(ds))]
    df = ds[cols].to_dataframe().reset_index()
    return df.dropna(subset=["duration_s"]).reset_index(drop=True)


def cell_means(ds: xr.Dataset) -> xr.Dataset:
    """Mean and spread over ``repeat`` of energy and duration per cell.

    Returns a Dataset over (model, batch_size, input_len, output_len) with ``energy_j``,
    ``energy_j_std``, ``duration_s``, ``duration_s_std`` and ``n_repeats``. A stacked (long-tail)
    dataset is put on that grid only when the grid stays small; otherwise use :func:`measured_cells`.
    """
    if is_stacked(ds):
        key = ["model", *cell_variables(ds)]
        cells = to_frame(ds).groupby(key)
        frame = pd.DataFrame({"energy_j": cells["energy_j"].mean(), "energy_j_std": cells["energy_j"].std(),
                              "duration_s": cells["duration_s"].mean(), "duration_s_std": cells["duration_s"].std(),
                              "n_repeats": cells["energy_j"].count()})
        size = int(np.prod([frame.index.get_level_values(k).nunique() for k in range(len(key))], dtype=float))
        if size > DENSE_LIMIT * len(frame) + 100_000:
            raise DataError(f"this dataset is long-tail: {len(frame)} measured cells would fill a grid of {size} "
                            "slots; maps and grids need a designed grid of lengths — fit it, or bin its lengths")
        out = frame.to_xarray()
        out["n_repeats"] = out["n_repeats"].fillna(0).astype(int)
        return _cell_units(out, ds)
    out = xr.Dataset(
        {
            "energy_j": ds["energy_j"].mean("repeat", skipna=True),
            "energy_j_std": ds["energy_j"].std("repeat", skipna=True, ddof=1),
            "duration_s": ds["duration_s"].mean("repeat", skipna=True),
            "duration_s_std": ds["duration_s"].std("repeat", skipna=True, ddof=1),
            "n_repeats": ds["energy_j"].notnull().sum("repeat"),
        }
    )
    return _cell_units(out, ds)


def _cell_units(out: xr.Dataset, ds: xr.Dataset) -> xr.Dataset:
    for v in ("energy_j", "energy_j_std"):
        out[v].attrs["units"] = "J"
    for v in ("duration_s", "duration_s_std"):
        out[v].attrs["units"] = "s"
    out.attrs = dict(ds.attrs)
    return out


def geometry(ds: xr.Dataset, model: str) -> dict:
    """The geometry coordinates of one model as a plain dict (missing ones omitted)."""
    out = {}
    for col in GEOMETRY_COLUMNS:
        if col in ds.coords:
            v = model_value(ds, model, col)
            if v is None or (isinstance(v, float) and np.isnan(v)):
                continue
            out[col] = v if col == "arch" else int(v)
    return out
