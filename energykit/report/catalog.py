"""The catalog: ``reports/index.html``, one line per finished parameter set, and how the kit knows a folder
of pages (or a catalog) it wrote."""

from __future__ import annotations

import html
import json
from pathlib import Path

from ..params import BUILD_FILE
from ..state import atomic_write_text

__all__ = ["CATALOG_MARK", "REPORT_FORMAT", "is_report_folder", "write_catalog"]

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
