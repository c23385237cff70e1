"""``energykit report``: execute the analysis notebooks and render HTML."""

from __future__ import annotations

import sys

__all__ = ["cmd_report", "add_parsers"]


def cmd_report(args) -> int:
    import shlex
    import time
    from pathlib import Path

    from ..iotools import REPO_ROOT
    from ..params import DEFAULT_PARAMS, default_out, stale_reasons

    params = args.params or DEFAULT_PARAMS
    root = Path.cwd() if (Path.cwd() / "notebooks").is_dir() else REPO_ROOT  # as report.repo_root finds it
    # a relative --out is the working directory's; the default reports/<params-stem> is the repository's
    out = Path(args.out).absolute() if args.out else root / default_out(params)
    if args.check_stale:  # make report asks this (no science stack loaded): exit 1 when the pages are stale
        reasons = stale_reasons(Path(params).absolute(), out, root)
        print(f"{args.out or default_out(params)}: " + ("; ".join(reasons) if reasons else
              "up to date (the params and every file they name are unchanged since the last build)"))
        return 1 if reasons else 0
    from ..report import build, write_catalog
    command = args.rendered_by or "energykit " + shlex.join(sys.argv[1:])
    t0 = time.perf_counter()
    build(params, out, args.only or None, rendered_by=command)
    # the catalog: the repository's reports/index.html, or one the kit wrote before in another reports/ folder
    listed = out.parent.name == "reports" and (out.parent.resolve() == (root / "reports").resolve()
                                               or (out.parent / "index.html").exists())
    catalog = write_catalog(out.parent) if listed else None
    if listed and catalog is None:
        print(f"energykit: warning: {out.parent / 'index.html'} was not written by energykit; it is left as it is "
              "(the catalog of parameter sets is not updated)", file=sys.stderr)
    print(f"reports written to {out}/index.html{f', listed in {catalog}' if catalog else ''} "
          f"({time.perf_counter() - t0:.1f} s)")
    return 0


def add_parsers(sub) -> None:
    """The sub-commands ``report``."""
    r = sub.add_parser("report", help="execute the analysis notebooks and render HTML into reports/")
    r.add_argument("--params", help="parameter file (default params/report.yaml, energykit.params.DEFAULT_PARAMS)")
    r.add_argument("--out", help="output directory (default reports/<params-stem>, listed in reports/index.html)")
    r.add_argument("--rendered-by", help="the command to name as the pages' origin (default: this command line)")
    r.add_argument("--only", action="append", help="render only this notebook (repeatable), e.g. 02_fit")
    r.add_argument("--check-stale", action="store_true", help="build nothing: exit 0 when the pages in --out were "
                   "built from the params file and every file it names as they are now (SHA-256), else print why and exit 1")
    r.set_defaults(func=cmd_report)
