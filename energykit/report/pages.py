"""Page assembly: a notebook's HTML (MathML formulas, inline SVG figures, the provenance banner), its key
results, and the set's landing page (the paper's findings against the kit's, then each page's key results).
"""

from __future__ import annotations

import base64
import html
import re
import subprocess
import time
from pathlib import Path

import latex2mathml.converter
import nbformat
from nbconvert import HTMLExporter
from nbconvert.filters import markdown2html

from .. import paper
from ..iotools import MATH, escape_markdown
from ..params import ReportParams
from ..findings import REPRODUCED_MAPE_PCT, paper_findings

__all__ = ["FIT_FILE", "mathml", "inline_svg", "banner", "to_html", "key_results", "findings_table", "write_index",
           "commit"]

FIT_FILE = "fits.nc"
"""The report build's one fit of the data (every page loads it), stored beside the pages."""

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


def commit(root: Path) -> str:
    try:
        p = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=root, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return p.stdout.strip() if p.returncode == 0 else "unknown"


VERDICT_COLOURS = {"reproduced": "#d9f2d9", "differs": "#fde0d0", "not yet": "#eeeeee", "kit only": "#e0ecfa"}


def findings_table(pages: dict[str, dict]) -> str:
    """The landing page's first table: the paper's findings against the kit's (:func:`energykit.findings.paper_findings`)."""
    rows = []
    for r in paper_findings(pages):
        colour = VERDICT_COLOURS.get(r["verdict"], "#fff")
        rows.append(f'<tr><td><b>{html.escape(r["finding"])}</b></td><td>{html.escape(r["paper"])}</td>'
                    f'<td>{html.escape(r["kit"])}</td><td class="data">{html.escape(r["data"])}</td>'
                    f'<td style="background:{colour}"><b>{html.escape(r["verdict"])}</b>: {html.escape(r["why"])}'
                    f' (<a href="{html.escape(r["page"])}.nocode.html">{html.escape(r["page"])}</a>)</td></tr>')
    return (f'<table class="findings"><thead><tr><th>paper finding</th><th>paper ({paper.HARDWARE})</th>'
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
<p class="prov">Paper: {paper.CITATION} ({paper.SETUP}).
Verdicts: <i>reproduced</i> (within the interval, or a MAPE up to {REPRODUCED_MAPE_PCT:g} %), <i>differs</i> (with the reason),
<i>not yet</i> (the data cannot say), <i>kit only</i> (the paper has no such figure).
<b>Data loaded:</b> {html.escape(data)} · <b>params:</b> <code>{html.escape(str(params_path))}</code> ·
<b>built:</b> {time.strftime("%Y-%m-%d %H:%M")} · <b>commit:</b> {html.escape(commit(root or Path.cwd()))} ·
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
