"""Execute the analysis notebooks headless (papermill) and render them to HTML (nbconvert).

For each notebook source ``notebooks/NN_name.py`` (a jupytext percent script) this writes, under ``reports/``:

- ``NN_name.ipynb``: the executed copy, with the injected parameters;
- ``NN_name.html``: the full report (code and outputs, figures embedded);
- ``NN_name.nocode.html``: the same without code cells;

and ``reports/index.html`` linking them, one line each on what it shows.
"""

from __future__ import annotations

import ast
import base64
import html
import json
import os
import re
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import jupytext
import latex2mathml.converter
import nbformat
import papermill as pm
from jupyter_client.manager import AsyncKernelManager
from jupyter_core.utils import run_sync
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError, DeadKernelError
from papermill.parameterize import parameterize_notebook
from nbconvert import HTMLExporter
from nbconvert.filters import markdown2html

from .dataset import load_many, model_names
from .errors import EnergykitError, FitError, ParamsError
from .fit import fit_dataset, load_fits
from .iotools import MATH, check_text, escape_markdown, read_trace
from .state import atomic_write_text, file_sha256
from .summary import paper_findings
from .params import (BUILD_FILE, ReportParams, default_out, input_files, input_hashes, load_report_params,
                     notebook_parameters, stale_reasons)

__all__ = ["ANALYSIS_GLOB", "FIT_FILE", "BUILD_FILE", "execute_all", "fit_once", "repo_root", "default_out", "write_catalog", "analysis_notebooks", "description", "execute", "to_html",
           "write_index", "build", "input_files", "input_hashes", "stale_reasons", "read_source", "notebook_defaults",
           "is_report_folder", "CATALOG_MARK", "REPORT_FORMAT", "mathml", "key_results", "findings_table"]

ANALYSIS_GLOB = "0[2-9]_*.py"
"""Notebook sources: jupytext percent scripts, paired with .ipynb in JupyterLab (jupytext.toml)."""


def repo_root() -> Path:
    """The directory that holds ``notebooks/`` and ``params/`` (the current one, or the package's parent)."""
    for cand in (Path.cwd(), Path(__file__).resolve().parent.parent):
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


def execute(nb_path: Path, out_path: Path, params: ReportParams, root: Path) -> float:
    """Run one notebook with papermill; returns its wall time [s]."""
    source = out_path.with_name(f".{nb_path.stem}.source.ipynb")
    nbformat.write(read_source(nb_path), source)  # the .py source as a notebook for papermill
    declared = pm.inspect_notebook(str(source))
    t0 = time.perf_counter()
    try:
        pm.execute_notebook(
            str(source),
            str(out_path),
            parameters=notebook_parameters(params, declared),
            cwd=str(root),
            kernel_name="python3",
            progress_bar=False,
            log_output=False,
        )
    except pm.PapermillExecutionError as e:
        raise EnergykitError(f"notebook {nb_path.name} failed in cell {e.exec_count}: {e.ename}: "
                             f"{str(e.evalue).splitlines()[0] if e.evalue else ''} (no report was replaced)") from None
    finally:
        source.unlink(missing_ok=True)
    return time.perf_counter() - t0


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


FIT_TABLES = ("<style>.jp-OutputArea-output table, .jp-RenderedHTMLCommon table {max-width: 100%; table-layout: auto;}"
              " .jp-RenderedHTMLCommon td, .jp-RenderedHTMLCommon th {white-space: normal !important; "
              "overflow-wrap: break-word; max-width: 40em;}</style>")
"""Table cells wrap (a long list of cells or a policy's assumptions is read in full, never cut)."""
CDN_SCRIPT = re.compile(r"<script[^>]*src=\"https?://[^\"]*(?:mathjax|require)[^\"]*\"[^>]*>\s*</script>", re.I)


def mathml(markdown: str) -> str:
    """Markdown with its LaTeX formulas rendered to MathML at build time (no MathJax, no network)."""

    def convert(m):
        tex, block = (m.group(1), True) if m.group(1) is not None else (m.group(2), False)
        try:
            out = latex2mathml.converter.convert(tex.strip(), display="block" if block else "inline")
        except Exception:  # a formula the converter cannot read stays readable as code
            return f"<code>{html.escape(tex)}</code>"
        return f"\n\n{out}\n\n" if block else out

    return MATH.sub(convert, markdown)


SVG_IMG = re.compile(r'<img[^>]*src="data:image/svg\+xml;base64,([A-Za-z0-9+/=\s]+)"[^>]*>')
SVG_CSS = "<style>.jp-OutputArea-output svg {max-width: 100%; height: auto;}</style>"
MATH_FONTS = '"STIX Two Math", "Latin Modern Math", "Cambria Math", "DejaVu Math TeX Gyre", math'
MATH_CSS = f"<style>math {{font-family: {MATH_FONTS};}}</style>"
"""Formulas in a font with an OpenType MATH table, named: Chromium's generic ``math`` family can fall back to
a text font, whose radical does not stretch, and sqrt((a)/b) then reads as sqrt(a)/b."""


def inline_svg(page: str) -> str:
    """Figures embedded as SVG markup rather than ``<img>``: their text (tick labels, legends) is page text,
    crisp at any zoom and searchable, and the browser test can measure where each tick label lies."""
    def inline(m):
        svg = base64.b64decode(m.group(1)).decode("utf-8")
        svg = svg[svg.find("<svg"):]  # drop the XML declaration and DOCTYPE
        return svg.replace("<svg ", '<svg role="img" ', 1)

    return SVG_IMG.sub(inline, page)


def banner(build_info: dict) -> str:
    """The provenance line atop every page: parameter set and its label, data files loaded, command, commit."""
    label = build_info.get("label") or ""
    return ('<div class="ek-banner" style="font:0.9em sans-serif;background:#f4f4f4;border-left:4px solid '
            f'{"#c60" if label.upper().startswith(("PILOT", "APPENDIX")) else "#888"};padding:0.4em 0.8em;margin:0.5em 0">'
            f'<b>{html.escape(label or "parameter set")}</b> · params <code>{html.escape(build_info.get("params", ""))}</code>'
            f' · data loaded: {", ".join(f"<code>{html.escape(d)}</code>" for d in build_info.get("data", []))}'
            f' · rendered by <code>{html.escape(build_info.get("rendered_by", ""))}</code>'
            f' · commit {html.escape(build_info.get("commit", ""))}</div>')


def to_html(executed: Path, out_dir: Path, build_info: dict | None = None) -> tuple[Path, Path]:
    """Render the full and the no-code HTML of an executed notebook, formulas as MathML, nothing from a CDN.

    ``build_info`` (see :func:`build`) puts a provenance line atop the page. The no-code page shows
    no ``In``/``Out`` prompts: a reader without the code has nothing to number.
    """
    nb = nbformat.read(executed, as_version=4)
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            cell.source = mathml(cell.source)
        for out in cell.get("outputs", []):  # Markdown a notebook displays holds data (model names): no HTML of it
            if "text/markdown" in out.get("data", {}):
                out["data"]["text/markdown"] = escape_markdown(out["data"]["text/markdown"])
    full = out_dir / f"{executed.stem}.html"
    nocode = out_dir / f"{executed.stem}.nocode.html"
    top = banner(build_info) if build_info else ""
    for path, exporter in ((full, HTMLExporter()),
                           (nocode, HTMLExporter(exclude_input=True, exclude_input_prompt=True,
                                                 exclude_output_prompt=True))):
        body = CDN_SCRIPT.sub("", exporter.from_notebook_node(nb)[0]).replace("</head>", FIT_TABLES + SVG_CSS + MATH_CSS + "</head>", 1)
        body = inline_svg(body)
        if top:
            body = re.sub(r"(<main[^>]*>|<body[^>]*>)", lambda m: m.group(1) + top, body, count=1)
        path.write_text(body, encoding="utf-8")
    return full, nocode


def key_results(executed: Path) -> tuple[str, dict, str]:
    """(key-results Markdown, its numbers, the main figure as base64 PNG) of an executed notebook.

    The main figure is the first image of the cell tagged ``main-figure``, else the first image.
    """
    nb = nbformat.read(executed, as_version=4)
    text, numbers, first, main = "", {}, "", ""
    for cell in nb.cells:
        tagged = "main-figure" in cell.get("metadata", {}).get("tags", [])
        for out in cell.get("outputs", []):
            meta = out.get("metadata", {})
            if not text and "energykit_key_results" in meta:
                text, numbers = out.get("data", {}).get("text/markdown", ""), meta["energykit_key_results"]
            png = out.get("data", {}).get("image/png", "")
            if png and not first:
                first = png
            if png and tagged and not main:
                main = png
    return text, numbers, main or first


def _commit(root: Path) -> str:
    try:
        p = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=root, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return p.stdout.strip() if p.returncode == 0 else "unknown"


VERDICT_COLOURS = {"reproduced": "#d9f2d9", "differs": "#fde0d0", "not yet": "#eeeeee", "kit only": "#e0ecfa"}


def findings_table(pages: dict[str, dict]) -> str:
    """The landing page's first table: the paper's findings against the kit's (:func:`energykit.summary.paper_findings`)."""
    rows = []
    for r in paper_findings(pages):
        colour = VERDICT_COLOURS.get(r["verdict"], "#fff")
        rows.append(f'<tr><td><b>{html.escape(r["finding"])}</b></td><td>{html.escape(r["paper"])}</td>'
                    f'<td>{html.escape(r["kit"])}</td><td class="data">{html.escape(r["data"])}</td>'
                    f'<td style="background:{colour}"><b>{html.escape(r["verdict"])}</b>: {html.escape(r["why"])}'
                    f' (<a href="{html.escape(r["page"])}.nocode.html">{html.escape(r["page"])}</a>)</td></tr>')
    return ('<table class="findings"><thead><tr><th>paper finding</th><th>paper (TensorRT-LLM, H100)</th>'
            '<th>this kit [95 % interval]</th><th>data</th><th>verdict</th></tr></thead><tbody>'
            + "".join(rows) + "</tbody></table>")


def write_index(out_dir: Path, entries: list[tuple[str, str]], params_path: Path, params: ReportParams | None = None,
                root: Path | None = None, rendered_by: str = "") -> Path:
    """``index.html``: the set's landing page.

    It opens with one table, the paper's findings (mean MAPE, best/worst ratio, GQA vs MHA, the workload saving)
    against the kit's with their intervals, the data and a verdict, then the provenance line, then each page's
    key results with its main figure at a readable width.
    """
    sections, pages = [], {}
    for stem, desc in entries:
        executed = out_dir / f"{stem}.ipynb"
        text, numbers, figure = key_results(executed) if executed.exists() else ("", {}, "")
        pages[stem] = numbers
        body = (markdown2html(mathml(escape_markdown(text.replace("### Key results", "")))) if text
                else "<p>(no key results)</p>")
        fig = (f'<a href="{stem}.nocode.html"><img class="fig" alt="main figure of {html.escape(stem)}" '
               f'src="data:image/png;base64,{figure.strip()}"></a>') if figure else ""
        sections.append(
            f'<section id="{html.escape(stem)}"><h2>{html.escape(stem)}</h2><p class="desc">{html.escape(desc)} '
            f'[<a href="{stem}.nocode.html">report</a> · <a href="{stem}.html">with code</a> · '
            f'<a href="{stem}.ipynb">notebook</a>]</p><div class="key">{body}</div>{fig}</section>'
        )
    data = ", ".join(params.data) if params is not None else ""
    label = params.label if params is not None else ""
    rendered_by = rendered_by or f"energykit report --params {params_path}"
    flag = "#c60" if label.upper().startswith(("PILOT", "APPENDIX")) else "#888"
    page = f"""<!doctype html>
<html><head><meta charset="utf-8"><title>energykit: what was reproduced</title>
<style>
body{{font-family:sans-serif;max-width:80em;margin:1em auto;line-height:1.4;padding:0 1em}} math{{font-family:{MATH_FONTS}}}
h1{{font-size:1.45em;margin:0.2em 0 0.3em}} .label{{border-left:4px solid {flag};background:#f4f4f4;padding:0.2em 0.6em;font-size:0.92em}}
table.findings{{border-collapse:collapse;font-size:0.86em;width:100%;margin:0.5em 0}}
table.findings td,table.findings th{{border:1px solid #ccc;padding:0.25em 0.45em;text-align:left;vertical-align:top}}
table.findings th{{background:#f0f0f0}} table.findings td.data{{font-size:0.9em;color:#333;overflow-wrap:anywhere}}
.prov{{font-size:0.85em;color:#333}} .fig{{width:100%;max-width:62em;border:1px solid #ddd;margin-top:0.5em}}
.key table{{border-collapse:collapse;font-size:0.92em}} .key td,.key th{{border:1px solid #ddd;padding:0.2em 0.5em;text-align:left}}
.desc{{color:#444}} section{{border-top:1px solid #ddd;margin-top:1.2em}}
</style></head>
<body><h1>What was reproduced, and how close</h1>
<p class="label"><b>{html.escape(label or "parameter set")}</b></p>
{findings_table(pages)}
<p class="prov">Paper: Pizzini Cavagna et al., arXiv:2602.05695 (TensorRT-LLM, H100, 13 models of 1–9 B parameters).
Verdicts: <i>reproduced</i> (within the interval, or a MAPE up to 3 %), <i>differs</i> (with the reason),
<i>not yet</i> (the data cannot say), <i>kit only</i> (the paper has no such figure).
<b>Data loaded:</b> {html.escape(data)} · <b>params:</b> <code>{html.escape(str(params_path))}</code> ·
<b>built:</b> {time.strftime("%Y-%m-%d %H:%M")} · <b>commit:</b> {html.escape(_commit(root or Path.cwd()))} ·
<b>rendered by</b> <code>{html.escape(rendered_by)}</code>, never edited by hand ·
<b>fits:</b> <a href="{FIT_FILE}">{FIT_FILE}</a> (fitted once, read by every page; <code>energykit.load_fits</code>).</p>
{"".join(sections)}
<p>Azure LLM inference traces: Patel et al., "Splitwise: Efficient generative LLM inference using
phase splitting", ISCA 2024 (CC-BY 4.0).</p>
</body></html>
"""
    path = out_dir / "index.html"
    path.write_text(page, encoding="utf-8")
    return path


FIT_FILE = "fits.nc"
"""The report build's one fit of the data (every page loads it), stored beside the pages."""


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




CATALOG_MARK = '<meta name="generator" content="energykit report catalog">'
"""The marker by which the kit knows a ``reports/index.html`` it wrote (never a word in the text)."""
REPORT_FORMAT = "energykit-report"
"""``build.json``'s ``format``: the marker of a folder of pages the kit built."""


def is_report_folder(folder: Path) -> bool:
    """True when ``folder`` holds a finished build: a ``build.json`` the kit wrote (its ``format`` marker, or the
    fields every earlier build wrote) and an ``index.html``."""
    info_path = Path(folder) / BUILD_FILE
    try:
        if not info_path.is_file() or info_path.is_symlink() or info_path.stat().st_size > 1 << 20:
            return False
        info = json.loads(info_path.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError):
        return False
    ours = isinstance(info, dict) and (info.get("format") == REPORT_FORMAT
                                       or {"params", "rendered_by", "commit", "built"} <= set(info))
    return ours and (Path(folder) / "index.html").is_file()


def write_catalog(reports_dir: str | Path) -> Path | None:
    """``reports_dir/index.html``: one line per finished parameter set (its sub-folder), label first.

    Only folders holding a finished build are listed (never a build in progress, ``.NAME.building-…``,
    nor a folder the kit did not write). An ``index.html`` the kit did not write (no catalog marker) is
    left as it is: returns None.
    """
    reports_dir = Path(reports_dir)
    path = reports_dir / "index.html"
    if path.is_symlink() or path.exists() and not _is_catalog(path):
        return None
    rows = []
    for folder in sorted(p for p in reports_dir.iterdir() if p.is_dir() and not p.is_symlink()
                         and not p.name.startswith(".")):
        if not is_report_folder(folder):
            continue
        info = json.loads((folder / BUILD_FILE).read_text(encoding="utf-8"))
        name = folder.name
        text = {k: str(info.get(k) or "") for k in ("label", "params", "built", "rendered_by", "commit")}
        data = info.get("data") if isinstance(info.get("data"), list) else []
        rows.append(f'<li><a href="{html.escape(name)}/index.html"><b>{html.escape(name)}</b></a>: '
                    f'{html.escape(text["label"] or "(no label)")}<br><small>params <code>'
                    f'{html.escape(text["params"])}</code> · data {html.escape(", ".join(map(str, data)))}'
                    f' · built {html.escape(text["built"])} by <code>{html.escape(text["rendered_by"])}'
                    f'</code> · commit {html.escape(text["commit"])}</small></li>')
    page = (f'<!doctype html><html><head><meta charset="utf-8">{CATALOG_MARK}<title>energykit reports</title><style>'
            f'body{{font-family:sans-serif;max-width:60em;margin:2em auto;line-height:1.5;padding:0 1em}} li{{margin:0.6em 0}}'
            f'</style></head><body><h1>energykit reports</h1><p>One folder per parameter set (<code>make report '
            f'PARAMS=params/X.yaml</code> renders <code>reports/X/</code>):</p><ul>{"".join(rows)}</ul></body></html>\n')
    atomic_write_text(path, page)
    return path


def _is_catalog(path: Path) -> bool:
    """An ``index.html`` the kit wrote as a catalog: its marker (or the heading every earlier catalog had)."""
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            head = f.read(4096)
    except OSError:
        return False
    return CATALOG_MARK in head or head.startswith(_OLD_CATALOG)


_OLD_CATALOG = ('<!doctype html><html><head><meta charset="utf-8"><title>energykit reports</title><style>body{font-family:'
                'sans-serif;max-width:60em;margin:2em auto;line-height:1.5;padding:0 1em} li{margin:0.6em 0}</style></head>'
                '<body><h1>energykit reports</h1>')
"""The exact head of the catalogs written before the marker, so that they are still updated."""


def build(params_path: str | Path = "params/report.yaml", out_dir: str | Path | None = None, only=None,
          rendered_by: str | None = None) -> dict:
    """Fit once, then execute and render the analysis notebooks; returns {"fit" or notebook: seconds}.

    Parameters are validated before any notebook runs. Notebooks whose names are in ``only`` are
    run; the index always lists every notebook that has a rendered report in ``out_dir`` (default
    :func:`default_out`). ``rendered_by`` is the command the pages name as their origin.
    """
    root = repo_root()
    out_dir = default_out(params_path) if out_dir is None else out_dir
    params_path = Path(params_path)
    if not params_path.is_absolute():  # as the working directory reads it, else the repository's (params/…)
        params_path = Path.cwd() / params_path if params_path.exists() else root / params_path
    params = load_report_params(params_path)
    shown_params = params_path.relative_to(root) if params_path.is_relative_to(root) else params_path
    rendered_by = rendered_by or f"energykit.report.build({str(shown_params)!r})"
    for f in params.data + list(params.traces.values()) + ([params.calibrate_data] if params.calibrate_data else []):
        if not (root / f).exists():
            raise ParamsError(f"{params_path}: file {f!r} does not exist (paths are relative to {root})")
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
    notebooks = analysis_notebooks(root, only)
    km = start_kernel(root)  # it boots while the data are loaded and fitted
    try:
        ds = _check_inputs(params, params_path, root)
    except BaseException:
        run_sync(km.shutdown_kernel)(now=True)
        raise
    # build into a fresh folder and swap it in: a failure never leaves a mix of new and stale pages
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        stage = Path(tempfile.mkdtemp(prefix=f".{out.name}.building-{os.getpid()}-", dir=out.parent))  # one per writer
    except OSError as e:
        raise EnergykitError(f"cannot write the reports to {out} ({e.strerror or e}); choose a writable --out") from None
    pages = ThreadPoolExecutor(max_workers=1)  # HTML of one page is written while the kernel runs the next
    try:
        if out.is_dir():
            stage.rmdir()
            copy_previous(out, stage)
        info = {"format": REPORT_FORMAT, "params": str(shown_params), "label": params.label, "data": list(params.data),
                "calibrate_data": params.calibrate_data, "rendered_by": rendered_by, "commit": _commit(root),
                "built": time.strftime("%Y-%m-%d %H:%M"), "inputs": input_hashes(params_path, params, root)}
        (stage / BUILD_FILE).write_text(json.dumps(info, indent=1))
        timings = {"fit": fit_once(params, ds, stage / FIT_FILE, root)}
        print(f"fitted once in {timings['fit']:.1f} s: {FIT_FILE}", flush=True)
        shared = params.model_copy(update={"fit_file": _relative(stage / FIT_FILE, root)})
        # a rendered notebook names the fits beside it (reports/<set>/fits.nc, relative to the repository root,
        # found from any working directory by iotools.resolve), not the staging folder it ran in
        moved = {_relative(stage / FIT_FILE, root): _relative(out / FIT_FILE, root)}
        rendering = []
        timings.update(execute_all(notebooks, stage, shared, root, km, moved=moved,  # one kernel for every page
                                   on_done=lambda nb: rendering.append(pages.submit(to_html, nb, stage, info))))
        km = None
        for nb, done in zip(notebooks, rendering):
            done.result()
            print(f"rendered {nb.stem} (ran {timings[nb.stem]:.1f} s)", flush=True)
        entries = [(p.stem, description(p)) for p in analysis_notebooks(root) if (stage / f"{p.stem}.html").exists()]
        write_index(stage, entries, shown_params, params, root, rendered_by)
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
    except OSError as e:
        raise EnergykitError(f"cannot write the reports to {out} ({e.strerror or e}); choose a writable --out") from None
    finally:
        pages.shutdown(wait=True, cancel_futures=True)
        if km is not None and km.has_kernel:  # the build stopped before the notebooks ran
            run_sync(km.shutdown_kernel)(now=True)
        shutil.rmtree(stage, ignore_errors=True)
    return timings


def _check_inputs(params: ReportParams, params_path: Path, root: Path):
    """Load the data and traces the notebooks will read, so that a bad file stops before any notebook runs.

    Returns the combined dataset (fitted once by :func:`fit_once`)."""
    cwd = Path.cwd()
    try:
        os.chdir(root)
        ds = load_many(params.data)
        for path in params.traces.values():
            read_trace(path)
    finally:
        os.chdir(cwd)
    models = [str(m) for m in ds["model"].values]
    if params.workload_model and params.workload_model not in models:
        raise ParamsError(f"{params_path}: workload_model {params.workload_model!r} is not in the data; "
                          f"use one of {', '.join(models)}")
    return ds
