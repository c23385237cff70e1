"""Execute the analysis notebooks headless and render them to HTML: the report of one parameter set.

For each notebook source ``notebooks/NN_name.py`` (a jupytext percent script) a build writes, under ``reports/``:

- ``NN_name.ipynb``: the executed copy, with the injected parameters;
- ``NN_name.html``: the full report (code and outputs, figures embedded);
- ``NN_name.nocode.html``: the same without code cells;

and ``index.html``, the set's landing page. One module per room:

- :mod:`~energykit.report.runner`: find, read and run the notebooks (one kernel, started in the repository root);
- :mod:`~energykit.report.pages`: a notebook's HTML, its key results and the landing page;
- :mod:`~energykit.report.catalog`: ``reports/index.html`` listing the finished sets;
- :mod:`~energykit.report.builder`: :func:`build`, which validates, fits once, runs, renders and swaps the set in.
"""

from __future__ import annotations

from ..params import BUILD_FILE, default_out, input_files, input_hashes, stale_reasons
from .builder import build, copy_previous, fit_once
from .catalog import CATALOG_MARK, REPORT_FORMAT, is_report_folder, write_catalog
from .pages import (FIT_FILE, banner, findings_table, inline_svg, key_results, mathml, to_html,
                    write_index)
from .runner import (ANALYSIS_GLOB, analysis_notebooks, description, execute, execute_all, notebook_defaults,
                     read_source, repo_root, start_kernel)

__all__ = ["ANALYSIS_GLOB", "FIT_FILE", "BUILD_FILE", "execute_all", "fit_once", "repo_root", "default_out",
           "write_catalog", "analysis_notebooks", "description", "execute", "to_html", "write_index", "build",
           "input_files", "input_hashes", "stale_reasons", "read_source", "notebook_defaults", "is_report_folder",
           "CATALOG_MARK", "REPORT_FORMAT", "mathml", "key_results", "findings_table", "banner", "inline_svg",
           "copy_previous", "start_kernel"]
