"""The stored fit file: a versioned NetCDF of every fit with its cells, cross-validation errors and draws.

Version 2 stores each fit's cells under its model's declared variables (one column per variable,
any declared in :data:`energykit.model.VARIABLES`) and what it holds fixed as JSON
(``fit_fixed``: ``{"batch_size": 16}``, or ``{}`` for the batch-aware fit). Version 1 files (kit
0.1.0 before issue 31) marked the batch-aware fit with ``fit_batch_size = 0``; they still load, read
as ``fixed = {}``.
"""

from __future__ import annotations

import json
from pathlib import Path

import lmfit
import numpy as np
import xarray as xr

from ..errors import DataError, FitError
from ..iotools import check_netcdf_header, resolve
from ..model import VARIABLES, model_of
from ..state import atomic_write_netcdf, file_sha256
from .estimate import DRAWS, LINEAR_THETA, THETA
from .result import FitSet, ModelFit, SavedResult

__all__ = ["FITS_FORMAT", "FITS_VERSION", "READS_VERSIONS", "save_fits", "load_fits"]

FITS_FORMAT = "energykit-fits"
FITS_VERSION = 2
"""Version of the stored fit artifact written (:meth:`FitSet.save`)."""
READS_VERSIONS = (1, 2)
"""Versions :func:`load_fits` reads (1: the batch-aware fit marked by batch size 0)."""


def _layout(every: list[ModelFit]) -> tuple[list[str], list[str]]:
    """Parameter names (θ, the baseline's, then any other model's) and cell variables (declared order)."""
    names = list(THETA) + list(LINEAR_THETA)
    for f in every:
        names += [n for n in f.energy_model.names if n not in names]
    used = {v for f in every for v in (*f.variables, *f.fixed)}
    variables = [v for v in VARIABLES if v in used] + sorted(used - set(VARIABLES))
    return names, variables


def save_fits(fitset: FitSet, path, n_draws: int = DRAWS, source: dict | None = None) -> Path:
    """Write every fit of ``fitset`` with its cells, cross-validation errors and bootstrap draws."""
    source = _with_data_hash(source)
    every = fitset.every()
    names, variables = _layout(every)
    value = np.full((len(every), len(names)), np.nan)
    stderr = np.full_like(value, np.nan)
    draws = np.full((len(every), n_draws, len(names)), np.nan)
    cell_fit, cells = [], {v: [] for v in ("energy_j", "cv_ape_pct", *variables)}
    for k, f in enumerate(every):
        for name, v in f.params.items():
            j = names.index(name)
            value[k, j], stderr[k, j] = v, f.stderr[name]
            draws[k, :, j] = f.draws(n_draws)[name][:, 0]
        cell_fit += [k] * len(f.energy_j)
        cells["energy_j"] += list(np.asarray(f.energy_j, dtype=float))
        cells["cv_ape_pct"] += list(np.asarray(f.cv_ape_pct, dtype=float))
        for v in variables:
            has = v in f.cells or v in f.fixed
            cells[v] += list(f.cell_values(v)) if has else [np.nan] * len(f.energy_j)
    ds = xr.Dataset(
        {
            "value": (("fit", "param"), value),
            "stderr": (("fit", "param"), stderr),
            "draws": (("fit", "draw", "param"), draws),
            "cell_fit": ("cell", np.asarray(cell_fit, dtype=np.int64)),
            **{col: ("cell", np.asarray(v, dtype=float)) for col, v in cells.items()},
        },
        coords={"param": names, "fit_model": ("fit", [f.model for f in every]),
                "fit_kind": ("fit", [f.kind for f in every]),
                "fit_fixed": ("fit", [json.dumps(f.fixed, sort_keys=True) for f in every])},
        attrs={"format": FITS_FORMAT, "version": FITS_VERSION, "loss": fitset.loss, "cv_folds": fitset.cv_folds,
               "n_draws": n_draws, "seed": 0, "variables": json.dumps(variables),
               **({"batch_cv": json.dumps({m: {str(b): v for b, v in d.items()} for m, d in fitset.batch_cv.items()})}
                  if fitset.batch_cv else {}),
               **{f"source_{k}": json.dumps([str(x) for x in v]) if isinstance(v, (list, tuple)) else str(v)
                  for k, v in (source or {}).items()}},
    )
    return atomic_write_netcdf(ds, Path(path), "the data are unchanged")  # own temp file, free space checked first


def _with_data_hash(source: dict | None) -> dict:
    """``source`` plus ``data_sha256``, the content hashes of its ``data`` files (when they all exist here)."""
    source = dict(source or {})
    data = source.get("data")
    if data is not None and "data_sha256" not in source:
        paths = [resolve(p) for p in ([data] if isinstance(data, (str, Path)) else data)]  # as the readers find them
        if paths and all(p.is_file() for p in paths):
            source["data_sha256"] = [file_sha256(p) for p in paths]
    return source




def _open(path) -> tuple[Path, xr.Dataset]:
    """The fit file at ``path`` read whole, its format and version checked; one-line errors."""
    path = resolve(path)
    if not path.is_file() and not path.is_absolute() and Path(path.name).is_file():
        path = Path(path.name)  # a copied report folder: the fits beside the notebook, whose folder its kernel runs in
    if path.exists() and not path.is_file():
        raise FitError(f"fit file {path} is not a regular file (a folder, FIFO or device); give the file written by "
                       "energykit fit --save")
    if not path.is_file():
        raise FitError(f"fit file {path} does not exist; write one with: energykit fit DATA --save {path}")
    try:
        check_netcdf_header(path, what="a fit file")  # sizes from the header, before any array is read
    except DataError as e:
        raise FitError(str(e)) from None
    try:
        ds = xr.load_dataset(path, engine="h5netcdf")
    except (OSError, ValueError) as e:
        raise FitError(f"{path} is not a readable fit file ({e}); write it again with energykit fit --save") from None
    version = ds.attrs.get("version", -1)
    if ds.attrs.get("format") != FITS_FORMAT or int(version) not in READS_VERSIONS:
        raise FitError(f"{path} is not an energykit fit file of version {', '.join(map(str, READS_VERSIONS))} "
                       f"(format {ds.attrs.get('format')!r}, version {ds.attrs.get('version')!r}); "
                       "write it again with energykit fit --save")
    missing = [v for v in ("value", "stderr", "draws", "cell_fit", "input_len", "output_len", "energy_j",
                           "cv_ape_pct") if v not in ds.variables]
    if int(version) == 1 and "fit_batch_size" not in ds.variables:
        missing.append("fit_batch_size")
    if int(version) >= 2 and "fit_fixed" not in ds.variables:
        missing.append("fit_fixed")
    if missing or any(k not in ds.attrs for k in ("n_draws", "loss", "cv_folds")):
        raise FitError(f"{path} lacks {', '.join(missing) or 'its attributes'}: it is damaged or not written by "
                       "energykit fit --save; write it again")
    return path, ds


def _check_expected(path: Path, ds: xr.Dataset, expect: dict) -> None:
    expect = _with_data_hash(expect) if "data" in expect else expect
    for key, want in expect.items():
        have = ds.attrs.get(key, ds.attrs.get(f"source_{key}"))
        if key == "data_sha256" and str(have) != json.dumps([str(w) for w in want]):
            raise FitError(f"{path} was fitted on other data: the content of {', '.join(map(str, expect['data']))} "
                           "changed since (or the fit predates content hashes); fit again "
                           f"(energykit fit DATA --save {path}) or leave fit_file empty")
        if isinstance(want, (list, tuple)):
            want = json.dumps([str(w) for w in want])
        if str(have) != str(want):
            raise FitError(f"{path} was fitted with {key}={have}, not {want}; fit again "
                           f"(energykit fit DATA --save {path}) or leave fit_file empty")


def _fixed(ds: xr.Dataset, k: int, kind: str) -> dict:
    """What fit ``k`` holds fixed; version 1 said "every batch size" by batch size 0 (the batch-aware fit)."""
    if int(ds.attrs["version"]) == 1:
        b = int(ds["fit_batch_size"].values[k])
        return {} if kind == "batched" or b == 0 else {"batch_size": b}
    return json.loads(str(ds["fit_fixed"].values[k]))


def _fit(path: Path, ds: xr.Dataset, k: int, names: list[str], mine: np.ndarray) -> ModelFit:
    kind = str(ds["fit_kind"].values[k])
    try:
        model = model_of(kind)
    except ValueError:
        raise FitError(f"{path} holds a fit of the model kind {kind!r}, which energykit/model.py does not declare; "
                       "declare it in model.MODELS or fit again") from None
    lacking = [v for v in model.variables if v not in ds.variables]
    if lacking:
        raise FitError(f"{path} lacks the cells' {', '.join(lacking)} of its {kind} fit; write it again")
    pars = lmfit.Parameters()
    draws = {}
    for name in model.names:
        j = names.index(name)
        pars.add(name, value=float(ds["value"].values[k, j]), min=0.0)
        err = float(ds["stderr"].values[k, j])
        pars[name].stderr = None if np.isnan(err) else err
        draws[name] = ds["draws"].values[k, :, [j]].T.copy()
    f = ModelFit(str(ds["fit_model"].values[k]), kind, SavedResult(pars),
                 {v: ds[v].values[mine] for v in model.variables}, ds["energy_j"].values[mine],
                 ds["cv_ape_pct"].values[mine], str(ds.attrs["loss"]), _fixed(ds, k, kind))
    f._draws[(int(ds.attrs["n_draws"]), 0)] = draws
    return f


def load_fits(path, **expect) -> FitSet:
    """Read a fit artifact written by :meth:`FitSet.save` (or ``energykit fit --save``); nothing is refitted.

    The fits come back with their parameters, standard errors, cells, cross-validation errors and
    the stored bootstrap draws, so intervals equal those of the fit that was saved. Keyword
    arguments (``loss="l1"``, ``cv_folds=5``, ``data=[...]``) must match what the file was fitted
    with, else a one-line error says which differs. Files of version 1 load too.
    """
    path, ds = _open(path)
    _check_expected(path, ds, expect)
    names = [str(p) for p in ds["param"].values]
    cell_fit = ds["cell_fit"].values
    every = [_fit(path, ds, k, names, cell_fit == k) for k in range(ds.sizes["fit"])]
    batch_cv = {m: {int(b): float(v) for b, v in d.items()} for m, d in json.loads(ds.attrs.get("batch_cv", "{}")).items()}
    return FitSet.of(every, str(ds.attrs["loss"]), int(ds.attrs["cv_folds"]), batch_cv)
