"""The build of one parameter set: validate, fit once, run and render every page in a staging folder, swap it in.

A failure at any step leaves the previous pages in place (the set is built beside them and renamed over them).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from jupyter_core.utils import run_sync

from ..dataset import load_many, model_names
from ..errors import EnergykitError, FitError, ParamsError
from ..fit import fit_dataset, load_fits
from ..iotools import check_text, read_trace
from ..params import BUILD_FILE, DEFAULT_PARAMS, ReportParams, default_out, input_hashes, load_report_params
from ..state import file_sha256
from .catalog import REPORT_FORMAT, is_report_folder
from .pages import FIT_FILE, commit, to_html, write_index
from .runner import analysis_notebooks, description, execute_all, repo_root, start_kernel

__all__ = ["build", "fit_once", "copy_previous"]


def _relative(path: Path, root: Path) -> str:
    return str(path.relative_to(root)) if path.is_relative_to(root) else str(path)


def copy_previous(out: Path, stage: Path) -> None:
    """Copy the pages of a previous build into ``stage``, leaving symbolic links out.

    A link planted in a reports folder is neither followed (its target's content copied into pages that get
    published) nor kept (the build would write through it); a dangling one no longer stops the build."""
    shutil.copytree(out, stage, ignore=lambda folder, names: [n for n in names if os.path.islink(os.path.join(folder, n))])


def fit_once(params: ReportParams, ds, path: Path, root: Path) -> float:
    """Fit the report's data ``ds`` once, bootstrap draws included, and store it at ``path``; returns seconds.

    A ``fit_file`` given in the parameters is copied instead (and checked against loss, folds and data).
    """
    t0 = time.perf_counter()
    hashes = [file_sha256(root / f) for f in params.data]  # ties the fit to the data's content, not its path
    if params.fit_file:
        source = Path(params.fit_file) if Path(params.fit_file).is_absolute() else root / params.fit_file
        fits = load_fits(source, loss=params.loss, cv_folds=params.cv_folds, data=params.data, data_sha256=hashes)
        lacking = [m for m in model_names(ds) if m not in {m for m, _ in fits.keys}]
        if lacking:  # a fit of some models only (fit --model) would drop the others from every page
            raise FitError(f"fit_file {params.fit_file} holds no fit of model {lacking[0]!r} of the data (fitted with "
                           f"--model?); fit every model (energykit fit DATA --save FILE) or leave fit_file empty")
        shutil.copyfile(source, path)
    else:
        fit_dataset(ds, loss=params.loss, cv_folds=params.cv_folds).save(
            path, source={"data": params.data, "data_sha256": hashes})
    return time.perf_counter() - t0


def build(params_path: str | Path = DEFAULT_PARAMS, out_dir: str | Path | None = None, only=None,
          rendered_by: str | None = None) -> dict:
    """Fit once, then execute and render the analysis notebooks; returns {"fit" or notebook: seconds}.

    Parameters are validated before any notebook runs. Notebooks whose names are in ``only`` are
    run; the index always lists every notebook that has a rendered report in ``out_dir`` (default
    :func:`default_out`). ``rendered_by`` is the command the pages name as their origin.
    """
    root = repo_root()
    out_dir = default_out(params_path) if out_dir is None else out_dir
    params_path, params, shown_params = _read_params(params_path, root)
    rendered_by = rendered_by or f"energykit.report.build({str(shown_params)!r})"
    out = _check_out(out_dir, root)
    notebooks = analysis_notebooks(root, only)
    km = start_kernel(root)  # it boots while the data are loaded and fitted
    try:
        ds = _check_inputs(params, params_path, root)
    except BaseException:
        run_sync(km.shutdown_kernel)(now=True)
        raise
    stage = _new_stage(out, km)
    pages = ThreadPoolExecutor(max_workers=1)  # HTML of one page is written while the kernel runs the next
    try:
        if out.is_dir():
            stage.rmdir()
            copy_previous(out, stage)
        info = {"format": REPORT_FORMAT, "params": str(shown_params), "label": params.label, "data": list(params.data),
                "calibrate_data": params.calibrate_data, "rendered_by": rendered_by, "commit": commit(root),
                "built": time.strftime("%Y-%m-%d %H:%M"), "inputs": input_hashes(params_path, params, root)}
        (stage / BUILD_FILE).write_text(json.dumps(info, indent=1))
        timings = {"fit": fit_once(params, ds, stage / FIT_FILE, root)}
        print(f"fitted once in {timings['fit']:.1f} s: {FIT_FILE}", flush=True)
        km, timings = None, {**timings, **_run_pages(notebooks, params, stage, out, root, km, pages, info)}
        entries = [(p.stem, description(p)) for p in analysis_notebooks(root) if (stage / f"{p.stem}.html").exists()]
        write_index(stage, entries, shown_params, params, root, rendered_by)
        _swap_in(stage, out)
    except OSError as e:
        raise EnergykitError(f"cannot write the reports to {out} ({e.strerror or e}); choose a writable --out") from None
    finally:
        pages.shutdown(wait=True, cancel_futures=True)
        if km is not None and km.has_kernel:  # the build stopped before the notebooks ran
            run_sync(km.shutdown_kernel)(now=True)
        shutil.rmtree(stage, ignore_errors=True)
    return timings


def _read_params(params_path: str | Path, root: Path) -> tuple[Path, ReportParams, Path]:
    """The parameter file (as the working directory reads it, else the repository's), its params, and its path as
    shown on the pages (relative to the repository when inside it); every file it names must exist."""
    params_path = Path(params_path)
    if not params_path.is_absolute():  # as the working directory reads it, else the repository's (params/…)
        params_path = Path.cwd() / params_path if params_path.exists() else root / params_path
    params = load_report_params(params_path)
    shown = params_path.relative_to(root) if params_path.is_relative_to(root) else params_path
    for f in params.data + list(params.traces.values()) + ([params.calibrate_data] if params.calibrate_data else []):
        if not (root / f).exists():
            raise ParamsError(f"{params_path}: file {f!r} does not exist (paths are relative to {root})")
    return params_path, params, shown


def _check_out(out_dir: str | Path, root: Path) -> Path:
    """The output folder, absolute; refused in one line when it is a file, a link, a folder the kit did not build,
    or the project folder (or above it): the build replaces it as a whole."""
    out = Path(out_dir)
    if not out.is_absolute():
        out = root / out
    check_text(str(out_dir), "--out")
    if out.exists() and not out.is_dir() or out.is_symlink():
        raise ParamsError(f"--out {out_dir} is an existing file or link, not a reports folder; give a folder path "
                          "(it is replaced as a whole)")
    if out.is_dir() and any(out.iterdir()) and not is_report_folder(out):
        raise ParamsError(f"--out {out_dir} is a folder the kit did not build (no {BUILD_FILE} and index.html of a "
                          "finished build); it would be replaced as a whole — give a new folder or a reports folder")
    if out.resolve() in (root.resolve(), *root.resolve().parents) or root.resolve().is_relative_to(out.resolve()):
        raise ParamsError(f"--out {out_dir} is the project folder or above it; give a folder such as reports")
    return out


def _new_stage(out: Path, km) -> Path:
    """A fresh staging folder beside ``out``, one per writer (the kernel ``km`` is shut down if it cannot be made)."""
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        return Path(tempfile.mkdtemp(prefix=f".{out.name}.building-{os.getpid()}-", dir=out.parent))
    except OSError as e:
        run_sync(km.shutdown_kernel)(now=True)
        raise EnergykitError(f"cannot write the reports to {out} ({e.strerror or e}); choose a writable --out") from None


def _run_pages(notebooks: list[Path], params: ReportParams, stage: Path, out: Path, root: Path, km,
               pages: ThreadPoolExecutor, info: dict) -> dict[str, float]:
    """Run every notebook in one kernel (``km``, shut down at the end), reading the fit stored in ``stage``, and
    render each page's HTML while the next runs; returns seconds per notebook."""
    shared = params.model_copy(update={"fit_file": _relative(stage / FIT_FILE, root)})
    # a rendered notebook names the fits beside it (reports/<set>/fits.nc, relative to the repository root,
    # found from any working directory by iotools.resolve), not the staging folder it ran in
    moved = {_relative(stage / FIT_FILE, root): _relative(out / FIT_FILE, root)}
    rendering = []
    timings = execute_all(notebooks, stage, shared, root, km, moved=moved,  # one kernel for every page
                          on_done=lambda nb: rendering.append(pages.submit(to_html, nb, stage, info)))
    for nb, done in zip(notebooks, rendering):
        done.result()
        print(f"rendered {nb.stem} (ran {timings[nb.stem]:.1f} s)", flush=True)
    return timings


def _swap_in(stage: Path, out: Path) -> None:
    """Rename the built ``stage`` to ``out``, the previous pages aside first and removed after."""
    old = out.with_name(f".{out.name}.old-{os.getpid()}-{stage.name.rsplit('-', 1)[-1]}")
    if out.exists():
        out.rename(old)
    try:
        stage.rename(out)
    except OSError:
        if old.exists() and not out.exists():
            old.rename(out)  # another build took the name first: keep the previous pages in place
        raise
    shutil.rmtree(old, ignore_errors=True)


def _check_inputs(params: ReportParams, params_path: Path, root: Path):
    """Load the data and traces the notebooks will read, so that a bad file stops before any notebook runs.

    Paths are relative to ``root`` (read from there, without changing the working directory). Returns the
    combined dataset (fitted once by :func:`fit_once`)."""
    ds = load_many([root / f for f in params.data])
    ds.attrs["loaded_from"] = ", ".join(str(f) for f in params.data)  # as the parameter file names them
    for path in params.traces.values():
        read_trace(root / path)
    models = [str(m) for m in ds["model"].values]
    if params.workload_model and params.workload_model not in models:
        raise ParamsError(f"{params_path}: workload_model {params.workload_model!r} is not in the data; "
                          f"use one of {', '.join(models)}")
    return ds
