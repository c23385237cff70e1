"""The notebook runner: find the analysis notebooks, read their sources and defaults, run them headless.

The notebooks run one after another in one kernel started in the repository root (its working directory is
given to the kernel, never taken by ``os.chdir``), each from an empty namespace, with its declared
parameters injected as papermill does.
"""

from __future__ import annotations

import ast
import signal
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import jupytext
import nbformat
from jupyter_client.manager import AsyncKernelManager
from jupyter_core.utils import run_sync
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError, DeadKernelError
from papermill.parameterize import parameterize_notebook

from ..errors import EnergykitError, ParamsError
from ..params import ReportParams, notebook_parameters

__all__ = ["ANALYSIS_GLOB", "RESET_CELL", "repo_root", "analysis_notebooks", "read_source", "description",
           "notebook_defaults", "start_kernel", "execute_all", "execute"]

ANALYSIS_GLOB = "0[2-9]_*.py"
"""Notebook sources: jupytext percent scripts, paired with .ipynb in JupyterLab (jupytext.toml)."""


def repo_root() -> Path:
    """The directory that holds ``notebooks/`` and ``params/`` (the current one, or the package's parent)."""
    for cand in (Path.cwd(), Path(__file__).resolve().parents[2]):
        if (cand / "notebooks").is_dir():
            return cand
    raise EnergykitError("cannot find the notebooks/ folder; run from the energykit repository root")


def analysis_notebooks(root: Path, only: list[str] | None = None) -> list[Path]:
    """The analysis notebooks in order (measurement, 01, is run by ``energykit measure``)."""
    nbs = sorted((root / "notebooks").glob(ANALYSIS_GLOB))
    if only:
        wanted = {Path(o).stem for o in only}
        unknown = wanted - {p.stem for p in nbs}
        if unknown:
            raise ParamsError(
                f"unknown notebook(s) {sorted(unknown)}; choose from {', '.join(p.stem for p in nbs)}"
            )
        nbs = [p for p in nbs if p.stem in wanted]
    return nbs


def read_source(nb_path: Path) -> nbformat.NotebookNode:
    """A notebook from its jupytext percent script (or an .ipynb)."""
    return jupytext.read(nb_path)


def description(nb_path: Path) -> str:
    """The one-line description stored in a notebook's metadata (``energykit.description``)."""
    return read_source(nb_path).metadata.get("energykit", {}).get("description", "")


def notebook_defaults(nb_path: Path) -> dict:
    """The default values of a notebook's ``parameters`` cell (what stepping through it in Lab uses)."""
    cell = next(c for c in read_source(nb_path).cells if "parameters" in c.metadata.get("tags", []))
    out = {}
    for node in ast.parse(cell.source).body:
        if isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name):
            out[node.targets[0].id] = ast.literal_eval(node.value)
    return out



RESET_CELL = ("%reset -f\nimport matplotlib.pyplot as plt\nplt.close('all')\n"
              "%config InlineBackend.figure_formats = ['png', 'svg']\nplt.rcParams['svg.fonttype'] = 'none'")
"""Run before each notebook in the shared kernel: an empty namespace and no open figures, as in a fresh
kernel. Figures come as PNG (the landing page's thumbnails) and as SVG with real text, which the pages
embed: crisp at any zoom, searchable, and their tick labels checkable by the browser test."""


def start_kernel(root: Path) -> AsyncKernelManager:
    """A Python kernel started in ``root``; it boots while the caller goes on (load, fit)."""
    km = AsyncKernelManager(kernel_name="python3")
    # the kernel's own log (its warnings, its traceback when a signal stops it) stays out of the command's one line
    run_sync(km.start_kernel)(cwd=str(root), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return km


def execute_all(notebooks: list[Path], out_dir: Path, params: ReportParams, root: Path, km=None,
                on_done=None, moved: dict[str, str] | None = None) -> dict[str, float]:
    """Run the notebooks one after another in one kernel, each from an empty namespace; returns seconds each.

    Each notebook gets its declared parameters injected as papermill does (a cell tagged
    ``injected-parameters`` after the ``parameters`` cell) and is written executed to
    ``out_dir/NN_name.ipynb``, then ``on_done(path)`` is called (the build renders its HTML while the
    next notebook runs). One kernel start, and the science stack imported once, instead of one per
    notebook; the namespace is reset (``%reset -f``) between notebooks so that none reads another's
    variables, as when each is run alone in JupyterLab. ``km``: a kernel already started (see
    :func:`start_kernel`); it is shut down at the end either way. ``moved``: ``{path while building: path
    once built}``, written into each executed notebook's injected parameters, so that a rendered notebook names
    the files beside it (the build runs in a staging folder that is renamed into place), never a folder
    that no longer exists.
    """
    timings = {}
    try:
        for nb_path in notebooks:
            nb = read_source(nb_path)
            nb.metadata.setdefault("papermill", {})  # papermill records the parameters here
            for cell in nb.cells:  # and reads every cell's tags
                cell.metadata.setdefault("tags", [])
            nb = parameterize_notebook(nb, notebook_parameters(params, notebook_defaults(nb_path)))
            nb.cells.insert(0, nbformat.v4.new_code_cell(RESET_CELL))
            client = NotebookClient(nb, km=km, kernel_name="python3", timeout=None, allow_errors=False,
                                    resources={"metadata": {"path": str(root)}})
            t0 = time.perf_counter()
            handlers = _signal_handlers()
            try:
                client.execute(cleanup_kc=False)
            except DeadKernelError:
                if getattr(client, "_async_cleanup_kernel_future", None) is not None:
                    raise KeyboardInterrupt("the build was interrupted") from None  # nbclient's signal handler killed it
                raise EnergykitError(f"the kernel running {nb_path.name} died (out of memory, or killed); no report was "
                                     "replaced — free memory and run the same command again") from None
            except CellExecutionError as e:
                failed = next(((c.get("execution_count") or 1) - 1 for c in nb.cells  # the reset cell ran first
                               if any(o.get("output_type") == "error" for o in c.get("outputs", []))), None)
                raise EnergykitError(f"notebook {nb_path.name} failed in cell {failed}: {e.ename}: "
                                     f"{str(e.evalue).splitlines()[0] if e.evalue else ''} (no report was replaced)") from None
            finally:
                km = client.km
                _restore_signal_handlers(handlers)  # nbclient resets SIGINT/SIGTERM to their defaults when done
            timings[nb_path.stem] = time.perf_counter() - t0
            nb.cells.pop(0)
            _renumber(nb)
            for cell in nb.cells:
                if "injected-parameters" in cell.metadata.get("tags", []):
                    for staged, final in (moved or {}).items():
                        cell.source = cell.source.replace(staged, final)
            nbformat.write(nb, out_dir / f"{nb_path.stem}.ipynb")
            if on_done is not None:
                on_done(out_dir / f"{nb_path.stem}.ipynb")
    finally:
        if km is not None and km.has_kernel:
            run_sync(km.shutdown_kernel)(now=True)
    return timings


def _signal_handlers() -> dict:
    """The SIGINT and SIGTERM handlers in place (in the main thread; ``{}`` elsewhere)."""
    if threading.current_thread() is not threading.main_thread():
        return {}
    return {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}


def _restore_signal_handlers(handlers: dict) -> None:
    for s, h in handlers.items():
        if h is not None:
            signal.signal(s, h)


def _renumber(nb: nbformat.NotebookNode) -> None:
    """Execution counts 1, 2, … within the notebook (the shared kernel counts across notebooks)."""
    n = 0
    for cell in nb.cells:
        if cell.cell_type == "code" and cell.get("execution_count") is not None:
            n += 1
            cell.execution_count = n
            for out in cell.get("outputs", []):
                if "execution_count" in out:
                    out["execution_count"] = n


def execute(nb_path: Path, out_path: Path, params: ReportParams, root: Path) -> float:
    """Run one notebook (in its own kernel, started in ``root``) and write it executed to ``out_path``; returns
    its wall time [s]. The same runner as :func:`execute_all`, for one page."""
    with tempfile.TemporaryDirectory(dir=Path(out_path).parent, prefix=f".{nb_path.stem}.run-") as tmp:
        seconds = execute_all([nb_path], Path(tmp), params, root, start_kernel(root))[nb_path.stem]
        Path(tmp, f"{nb_path.stem}.ipynb").replace(out_path)
    return seconds
