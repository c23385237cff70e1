"""The NetCDF reader: a measurement Dataset written by the kit, validated like a tidy file; and the
header check that refuses a file declaring huge arrays before any is read."""

from __future__ import annotations

import json
import math
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import xarray as xr

from ..errors import DataError, ParamsError
from ..schema import DIMS, GEOMETRY_COLUMNS, UNITS
from .checks import (MAX_INT, MAX_WINDOW_ENERGY_J, _check_energy_scale, _check_model_names, _short,
                    check_geometry, check_regular_file, resolve)

__all__ = ["NUMERIC_VARIABLES", "MAX_NETCDF_BYTES", "MAX_NETCDF_ELEMENTS", "check_netcdf_header", "read_netcdf"]

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
    _check_key(ds, path)
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


def _check_key(ds: xr.Dataset, path) -> None:
    """Each window named once (dense: each coordinate value once; stacked: each key once), by positive integers."""
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
