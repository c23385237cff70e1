"""Sweep folders into datasets: one folder's log (:func:`finalize`), several shard folders (:func:`merge`), their status.

A merge keeps one record per window (:func:`energykit.shards.window_key`), the last good attempt, and refuses
folders measured with different setups (:func:`check_shard_setups`, :func:`check_shard_meters`). The
completeness report and :func:`status` count windows against the one window plan
(:func:`energykit.shards.all_windows`, or a shard's ``shard.json``).
"""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from .dataset import from_frame, write_netcdf
from .errors import DataError, EnergykitError
from .iotools import read_window_log
from .params import MeasureParams
from .physics import param_count
from .provenance import (DATASET, FINGERPRINT, LOG, engine_label, fingerprint, fingerprint_difference,
                         read_fingerprint, read_provenance, read_shard)
from .schema import DIMS, GEOMETRY_KEYS
from .shards import all_windows, window_key
from .state import check_output

__all__ = ["LOG_ONLY", "finalize", "dataset_frame", "merge", "status", "SHARD_LOCAL", "check_shard_setups",
           "check_shard_meters", "merged_provenance"]


LOG_ONLY = ("status", "time", "timeline", "reason", "error", "gpu_energy_j", "shard_folder")
"""Log fields that do not go into a dataset."""


def finalize(out: Path, params: MeasureParams | None = None) -> Path:
    """Turn the raw log of ``out`` into ``out/measurements.nc`` (one record per (cell, repeat))."""
    records = read_window_log(out / LOG)[0]
    ok = [r for r in records if r.get("status") == "ok"]
    if not ok:
        raise EnergykitError(f"{out / LOG}: no completed window to turn into a dataset")
    df = pd.DataFrame(ok).drop_duplicates(list(DIMS), keep="last")
    df, attrs = dataset_frame(df, read_provenance(out), params)
    attrs.update(errors=sum(r.get("status") == "error" for r in records),
                 invalid_windows=sum(r.get("status") == "invalid" for r in records))
    ds = from_frame(df, source=str(out / LOG), attrs=attrs)
    return write_netcdf(ds, out / DATASET)  # atomic: temp file, then rename


def dataset_frame(df: pd.DataFrame, provenance: dict, params: MeasureParams | None = None) -> tuple[pd.DataFrame, dict]:
    """Good log records as a tidy frame (engine labels, geometry columns) and the dataset's attributes."""
    df = df.drop(columns=list(LOG_ONLY), errors="ignore")
    labels = {m: engine_label(v) for m, v in provenance.get("engines", {}).items()}
    df["engine"] = [labels.get(m, e) for m, e in zip(df["model"], df["engine"])]
    if params is not None:
        geoms = {name: geom for name, geom, _ in params.resolved}
        for col in GEOMETRY_KEYS:
            df[col] = df["model"].map(lambda m: geoms.get(m, {}).get(col))
        df["params"] = df["model"].map(lambda m: param_count(geoms[m]) if m in geoms else None)
    meter = provenance.get("meter", {})
    attrs = {
        "gpu_uuid": meter.get("gpu_uuid", ""),
        "driver_version": meter.get("driver_version", ""),
        "power_limit_w": meter.get("power_limit_w", float("nan")),
        "counter_period_s": meter.get("counter_period_s", float("nan")),
        "meter_at_start": meter,
        "idle_power_w": provenance.get("idle_power_w", float("nan")),
        "engine_versions": provenance.get("engines", {}),
        "energykit_commit": provenance.get("energykit_commit", ""),
        "library_energy": provenance.get("library_energy", ""),
        "params": params.model_dump() if params is not None else {},
    }
    if meter.get("note"):  # a proxy meter (process_cpu): its energy is not measured joules, and says so
        attrs["energy_method"] = f"{meter.get('meter', '')}: {meter['note']}"
    return df, attrs


def _shard_folders(outputs) -> list[Path]:
    found = []
    for out in map(Path, outputs):
        if not out.exists():
            raise DataError(f"{out}: no such output folder; check the path")
        if (out / LOG).exists():
            found.append(out)
        found += sorted(p for p in out.glob("shard-*-of-*") if (p / LOG).exists())
    if not found:
        raise DataError(f"no windows.jsonl under {', '.join(map(str, outputs))}; give sweep or shard folders")
    return found


def merge(outputs, destination: str | Path, params: MeasureParams | None = None) -> tuple[Path, dict]:
    """One dataset from shard folders: one record per (cell, repeat), the last good attempt.

    Returns the NetCDF path and a completeness report: windows found, retried, and — when the
    sweep's params are given — missing ones.
    """
    folders = _shard_folders(outputs)
    check_output(destination, [f / LOG for f in folders] + folders + [Path(o) for o in outputs], "measurements", "-o")
    check_shard_setups(folders, params)
    records = []
    for f in folders:
        known = read_fingerprint(f).get("models", {})
        for rec in read_window_log(f / LOG)[0]:
            if rec.get("status") == "ok" and rec["model"] not in known:  # a line from another sweep, or edited
                raise DataError(f"{f / LOG} holds a window of model {str(rec['model'])[:60]!r}, which {f / FINGERPRINT} "
                                f"does not list ({', '.join(map(repr, known)) or 'none'}); its setup is unknown — "
                                "remove those lines or merge only folders measured by this sweep")
            records.append(dict(rec, shard_folder=f.name))
    ok = [r for r in records if r.get("status") == "ok"]
    if not ok:
        raise DataError(f"no completed window in {len(folders)} folder(s); measure first")
    df = pd.DataFrame(ok)
    df["time"] = df["time"].fillna("").astype(str) if "time" in df else ""
    df = df.sort_values("time", kind="stable")
    retried = int(df.duplicated(list(DIMS)).sum())
    df = df.drop_duplicates(list(DIMS), keep="last")
    provenance = {f.name: read_provenance(f) for f in folders}
    check_shard_meters(provenance)
    frame, attrs = dataset_frame(df, merged_provenance(provenance), params)
    gpus = sorted({str(g) for g in frame["gpu"]}) if "gpu" in frame else []
    if len(gpus) > 1:  # shards on different GPU models: never average them; one entry per (model, GPU)
        frame["model"] = frame["model"].astype(str) + " [" + frame["gpu"].astype(str) + "]"
    attrs.update({"shards": sorted(provenance), "shard_provenance": provenance, "gpus": gpus,
                  "retried_windows": retried})
    ds = from_frame(frame, source=", ".join(f.name for f in folders), attrs=attrs)
    path = write_netcdf(ds, destination)
    report = {"folders": len(folders), "windows": len(df), "retried": retried, "gpus": gpus}
    if params is not None:
        want = set(all_windows(params))
        have = {window_key(r) for r in df.to_dict("records")}
        report["missing"] = len(want - have)
        report["planned"] = len(want)
    return path, report


SHARD_LOCAL = ("gpu_uuids",)
"""Fingerprint fields that differ between shards by design (each shard runs on its own GPU)."""


def check_shard_setups(folders: list[Path], params: MeasureParams | None = None) -> None:
    """Refuse, naming the field, to merge folders measured with different setups.

    Every folder's ``fingerprint.json`` must equal the first one's (and the params', when given),
    except the GPU each shard ran on; a model measured in two folders must have one geometry.
    """
    prints = {f: read_fingerprint(f) for f in folders}
    missing = [f for f, p in prints.items() if not p]
    if missing:
        raise DataError(f"{missing[0]} has no {FINGERPRINT}: its setup is unknown and cannot be checked against "
                        "the other folders; merge only folders measured by this energykit")

    def setup_of(p):
        return {"setup": {k: v for k, v in p.get("setup", {}).items() if k not in SHARD_LOCAL},
                "models": p.get("models", {})}

    first, ref = folders[0], setup_of(prints[folders[0]])
    if params is not None:
        want = setup_of(fingerprint(params, {}))
        want["setup"].pop("libraries", None)  # the versions of where the shards ran, not of this machine
        for f, p in prints.items():
            have = setup_of(p)
            have["setup"].pop("libraries", None)
            diffs = fingerprint_difference(have, want)
            if diffs:
                raise DataError(f"{f} was measured with another setup than the params give ({'; '.join(diffs)}); "
                                "merge only the shards of this sweep")
    for f in folders[1:]:  # both ways: a field one shard lacks is a difference too, whichever folder comes first
        diffs = fingerprint_difference(ref, setup_of(prints[f])) or fingerprint_difference(setup_of(prints[f]), ref)
        if diffs:
            raise DataError(f"{f} and {first} were measured with different setups ({'; '.join(diffs)}); "
                            "merge only shards of one sweep, or fit them as separate datasets")


def check_shard_meters(provenance: dict[str, dict]) -> None:
    """Refuse shards whose GPUs of one model ran at different power limits: the merged dataset records one limit
    (the first shard's meter), and a capped GPU draws less energy per window."""
    seen = {}
    for name, p in provenance.items():
        meter = p.get("meter") or {}
        if meter.get("power_limit_w") is None:
            continue
        gpu = meter.get("gpu_name", "")
        if gpu in seen and seen[gpu][1] != meter["power_limit_w"]:
            raise DataError(f"{name} ran its {gpu or 'GPU'} at power_limit_w {meter['power_limit_w']}, {seen[gpu][0]} at "
                            f"{seen[gpu][1]}; merge only shards measured at one power limit (nvidia-smi -pl), or fit "
                            "them as separate datasets")
        seen.setdefault(gpu, (name, meter["power_limit_w"]))


def merged_provenance(provenance: dict[str, dict]) -> dict:
    """One provenance of several shard folders: the first's meter, and every shard's engines and versions."""
    first = next(iter(provenance.values()))
    engines = {}
    for p in provenance.values():
        engines.update(p.get("engines", {}))
    return {**first, "engines": engines}


def status(outputs) -> pd.DataFrame:
    """Per shard folder: planned, done, failed and missing windows."""
    rows = []
    for f in _shard_folders(outputs):
        recs = read_window_log(f / LOG)[0]
        ok = {window_key(r) for r in recs if r.get("status") == "ok"}
        failed = {window_key(r) for r in recs if r.get("status") != "ok"} - ok
        planned = read_shard(f).get("windows")
        planned = {tuple(w) for w in planned} if planned else None
        rows.append({"folder": str(f), "planned": len(planned) if planned else math.nan, "done": len(ok),
                     "failed": len(failed), "missing": len(planned - ok) if planned else math.nan})
    return pd.DataFrame(rows)
