"""What a sweep folder records, and its readers: the setup fingerprint, the provenance, the shard file.

A sweep folder holds ``windows.jsonl`` (:data:`LOG`, the crash-safe window log), ``fingerprint.json``
(:data:`FINGERPRINT`: everything that changes what a window measures, compared before a folder is
resumed or shards are merged), ``provenance.json`` (the meter, the engines' versions, the idle power),
``params.json``, and in a shard folder ``shard.json`` (its planned windows). The readers check each file's
shape and name a damaged file in one line.
"""

from __future__ import annotations

import socket
import subprocess
from importlib import metadata
from pathlib import Path

from .engines import ENGINES, engine_class
from .errors import DataError
from .params import MeasureParams
from .state import read_json

__all__ = ["LOG", "DATASET", "FINGERPRINT", "PROVENANCE", "SHARD", "HOST", "LIBRARIES", "SETUP", "git_commit",
           "library_versions", "fingerprint", "allocation_of", "fingerprint_difference", "engine_label",
           "read_fingerprint", "read_provenance", "read_shard"]

LOG = "windows.jsonl"
"""A sweep folder's window log (one JSON line per window, flushed as it completes)."""
DATASET = "measurements.nc"
"""The dataset a sweep folder's log becomes."""
PROVENANCE = "provenance.json"
"""The meter at start, the engines' versions and the idle baseline of a sweep folder."""
SHARD = "shard.json"
"""A shard folder's index, count, cost and planned windows."""


FINGERPRINT = "fingerprint.json"
HOST = socket.gethostname()
"""The machine a window ran on (recorded in each log line)."""
LIBRARIES = ("torch", "transformers", "tensorrt_llm", "tensorrt-llm", "nvidia-ml-py")
SETUP = ("engine", "dtype", "min_window_s", "meter", "device")
"""Fields of the params that enter every fingerprint; an engine adds its own."""


def library_versions() -> dict:
    """Installed versions of the libraries that shape a measurement (read without importing them)."""
    out = {}
    for name in LIBRARIES:
        try:
            out[name.replace("-", "_")] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return out


def fingerprint(params: MeasureParams, meter_info: dict, engine: type | None = None) -> dict:
    """Everything that changes what a window measures: the setup, and each model's geometry.

    Cells, repeats, batch sizes and new models may be added to a folder; anything here may not change.
    The setup is the core's fields (:data:`SETUP`) and the engine's own (``Engine.fingerprint``);
    ``engine``, the engine class when the caller already looked it up (else from the registry).
    """
    engine = engine or engine_class(params.engine)
    setup = {k: getattr(params, k) for k in SETUP}
    if params.meter == "process_cpu":  # the stated power scales every window of the proxy
        setup["cpu_core_power_w"] = params.cpu_core_power_w
    setup.update(engine.fingerprint(params.engine_options))
    setup["gpu_uuids"] = meter_info.get("gpu_uuids") or ([meter_info["gpu_uuid"]] if "gpu_uuid" in meter_info
                                                         else ["none"])
    setup["libraries"] = library_versions()
    # what the engine allocates once per sweep: its static KV cache holds the longest request, and an
    # engine may size itself by the sweep too (its max_* arguments): a longer cell measures another setup
    setup["max_len"] = params.max_len
    setup.update({k: v for k, v in engine.engine_kwargs(params).items() if k.startswith("max_")})
    models = {name: {"geometry": geom, "checkpoint": ckpt} for name, geom, ckpt in params.resolved}
    return {"setup": setup, "models": models}


def allocation_of(params: dict) -> dict:
    """The allocations (``max_len``, ``max_batch_size``, ``max_input_len``) of a folder's recorded ``params.json``,
    for fingerprints written before they were recorded; ``{}`` when the file does not tell."""
    try:
        cells = params.get("cells") or [(i, o) for i in params["input_lens"] for o in params["output_lens"]]
        return {"max_len": max(int(i) + int(o) for i, o in cells), "max_input_len": max(int(i) for i, _ in cells),
                "max_batch_size": max(int(b) for b in params["batch_sizes"])}
    except (KeyError, TypeError, ValueError):
        return {}


def fingerprint_difference(old: dict, new: dict) -> list[str]:
    """What differs between a folder's fingerprint and this run's, as ``key: old -> new`` strings.

    Every key of this run's setup is compared. A key only the folder has is an option of another
    engine (fingerprints written before engines owned their options recorded every engine's) and
    does not change what this engine measures; a different engine differs in ``engine``.
    """
    diffs = []
    o_setup, n_setup = old.get("setup", {}), new["setup"]
    for k in sorted(n_setup):
        if k.startswith("max_") and k not in o_setup:
            continue  # an allocation the folder did not record (and its params.json could not tell)
        if k == "libraries":
            lo, ln = o_setup.get(k, {}), n_setup.get(k, {})
            diffs += [f"{lib} {lo.get(lib)} -> {ln.get(lib)}" for lib in sorted(set(lo) | set(ln))
                      if lo.get(lib) != ln.get(lib)]
        elif o_setup.get(k) != n_setup.get(k):
            diffs.append(f"{k}: {o_setup.get(k)!r} -> {n_setup.get(k)!r}")
    for m, spec in new["models"].items():
        if m in old.get("models", {}) and old["models"][m] != spec:
            og, ng = old["models"][m].get("geometry", {}), spec.get("geometry", {})
            keys = sorted(k for k in set(og) | set(ng) if og.get(k) != ng.get(k))
            what = ", ".join(f"{k} {og.get(k)!r} -> {ng.get(k)!r}" for k in keys) or "checkpoint"
            diffs.append(f"model {m!r}: {what}")
    return diffs


def git_commit() -> str:
    """The energykit checkout's commit, or "unknown" outside a git checkout."""
    try:
        p = subprocess.run(["git", "rev-parse", "--verify", "HEAD"], capture_output=True, text=True, timeout=5,
                           cwd=Path(__file__).resolve().parent)
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return p.stdout.strip() if p.returncode == 0 and p.stdout.strip() else "unknown"


def engine_label(versions: dict) -> str:
    """A readable engine label from recorded versions, e.g. ``hf transformers-5.17.0 compiled``."""
    cls = ENGINES.get(versions.get("engine"))
    return cls.label(versions) if cls is not None else str(versions.get("engine", "unknown"))


def _damaged(path: Path, what: str) -> DataError:
    return DataError(f"{path}: damaged ({what}); it was edited by hand or torn — restore it from a copy, or measure "
                     "into a new output folder")


def read_fingerprint(folder: Path) -> dict:
    """A folder's ``fingerprint.json`` (``{}`` when absent), its shape checked: ``setup`` and ``models`` objects."""
    path = Path(folder) / FINGERPRINT
    p = read_json(path)
    if not p:
        return p
    setup, models = p.get("setup"), p.get("models")
    if not isinstance(setup, dict) or not isinstance(models, dict):
        raise _damaged(path, "expected the objects 'setup' and 'models'")
    if not isinstance(setup.get("libraries", {}), dict):
        raise _damaged(path, "setup.libraries is not an object")
    for m, spec in models.items():
        if not isinstance(spec, dict) or not isinstance(spec.get("geometry", {}), dict):
            raise _damaged(path, f"model {m[:60]!r} is not an object with a geometry")
    return p


def read_provenance(folder: Path) -> dict:
    """A folder's ``provenance.json`` (``{}`` when absent), its shape checked: ``meter`` and ``engines`` objects."""
    path = Path(folder) / PROVENANCE
    p = read_json(path)
    if not isinstance(p.get("meter", {}), dict):
        raise _damaged(path, "meter is not an object")
    engines = p.get("engines", {})
    if not isinstance(engines, dict) or not all(isinstance(v, dict) for v in engines.values()):
        raise _damaged(path, "engines is not an object of objects")
    limit = p.get("meter", {}).get("power_limit_w")
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, (int, float))):
        raise _damaged(path, f"meter.power_limit_w {str(limit)[:40]!r} is not a number")
    for k in ("idle_power_w",):
        if k in p and (isinstance(p[k], bool) or not isinstance(p[k], (int, float))):
            raise _damaged(path, f"{k} {str(p[k])[:40]!r} is not a number")
    return p


def read_shard(folder: Path) -> dict:
    """A shard folder's ``shard.json`` (``{}`` when absent), its windows checked as (model, B, i, o, repeat) lists."""
    path = Path(folder) / SHARD
    p = read_json(path)
    windows = p.get("windows")
    if windows is None:
        return p
    if not isinstance(windows, list):
        raise _damaged(path, "windows is not a list")
    for w in windows:
        if not (isinstance(w, list) and len(w) == 5 and isinstance(w[0], str)
                and all(isinstance(x, int) and not isinstance(x, bool) and x >= 0 for x in w[1:])):
            raise _damaged(path, f"window {str(w)[:60]} is not [model, batch_size, input_len, output_len, repeat]")
    return p
