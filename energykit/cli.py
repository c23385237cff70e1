"""Command line: ``python -m energykit {fit,report,measure,...}``.

User mistakes (bad files, bad params, missing extras) print one line on stderr and exit with code 2,
without a traceback.
"""

from __future__ import annotations

import argparse
import json
import math
import sys

from .errors import EnergykitError


def _finite(x: float):
    return x if math.isfinite(x) else None


def fit_json(fits) -> dict:
    """The ``fit --json`` object: per model its accuracy, θ, standard errors and ``o*`` per input length."""
    from .sweetspots import o_star

    out = {}
    multi = {m for m, _ in fits.keys if sum(1 for mm, _ in fits.keys if mm == m) > 1}
    for m, b in fits.keys:
        s, lin = fits.get(m, b, "sweetspot"), fits.get(m, b, "linear")
        name = f"{m} (batch {b})" if m in multi else m
        out[name] = {
            "batch_size": b,
            "cells": len(s.energy_j),
            "mape_pct": s.mape_pct,
            "max_ape_pct": s.max_ape_pct,
            "r2": s.r2,
            "cv_mape_pct": _finite(s.cv_mape_pct),
            "baseline_mape_pct": lin.mape_pct,
            "baseline_cv_mape_pct": _finite(lin.cv_mape_pct),
            "params": s.params,
            "params_stderr": {k: _finite(v) for k, v in s.stderr.items()},
            "baseline_params": lin.params,
            "o_star": {str(int(i)): _finite(float(o_star(s.params, float(i)))) for i in sorted(set(s.input_len))},
        }
    return {"loss": fits.loss, "cv_folds": fits.cv_folds, "models": out}


def cmd_fit(args) -> int:
    from .dataset import load
    from .fitting import fit_dataset

    ds = load(args.data)
    fits = fit_dataset(ds, models=args.model or None, loss=args.loss, cv_folds=args.cv_folds)
    from .dataset import outlier_windows

    flagged = outlier_windows(ds)
    if len(flagged):
        worst = flagged.iloc[flagged["deviation_pct"].abs().argmax()]
        print(f"energykit: warning: {len(flagged)} window(s) depart from their cell's other repeats by more than "
              f"5 % (worst: {worst['model']} i={worst['input_len']} o={worst['output_len']} repeat {worst['repeat']}, "
              f"{worst['deviation_pct']:+.0f} %); the l1 fit is robust to them — see energykit.dataset.outlier_windows",
              file=sys.stderr)
    if args.json:
        print(json.dumps(fit_json(fits), indent=2))
        return 0
    import pandas as pd

    with pd.option_context("display.width", 200, "display.max_columns", 30):
        print(fits.summary().round(3).to_string(index=False))
        print()
        t = fits.table().query("kind == 'sweetspot'")
        cols = ["model", "batch_size"] + [c for c in t.columns if c.startswith("theta")]
        print(t[cols].to_string(index=False, float_format=lambda v: f"{v:.4g}"))
    return 0


def cmd_report(args) -> int:
    from .report import build

    timings = build(args.params, args.out, args.only or None)
    print(f"reports written to {args.out}/index.html ({sum(timings.values()):.1f} s)")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="energykit", description="Energy-efficiency sweet spots of LLM inference.")
    sub = p.add_subparsers(dest="command", required=True)

    f = sub.add_parser("fit", help="fit the analytical model and the linear baseline to measured data")
    f.add_argument("data", help="NetCDF dataset (.nc) or tidy CSV/JSONL file of measured windows")
    f.add_argument("--model", action="append", help="fit only this model (repeatable)")
    f.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    f.add_argument("--loss", choices=["l1", "l2"], default="l1", help="robust (l1, default) or squared relative loss")
    f.add_argument("--cv-folds", type=int, default=5, help="folds of the cross-validation (default 5)")
    f.set_defaults(func=cmd_fit)

    r = sub.add_parser("report", help="execute the analysis notebooks and render HTML into reports/")
    r.add_argument("--params", default="params/report.yaml", help="parameter file (default params/report.yaml)")
    r.add_argument("--out", default="reports", help="output directory (default reports)")
    r.add_argument("--only", action="append", help="render only this notebook (repeatable), e.g. 02_fit")
    r.set_defaults(func=cmd_report)

    for register in _extra_commands():
        register(sub)
    return p


def _extra_commands():
    """Sub-commands that live with their concern (measurement, planning)."""
    from . import design, hardware, sweep

    return [sweep.register_cli, design.register_cli, hardware.register_cli]


def _one_line_warning(message, category, filename, lineno, file=None, line=None):
    return f"energykit: warning: {message}\n"


def main(argv=None) -> int:
    import warnings

    warnings.formatwarning = _one_line_warning
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except EnergykitError as e:
        print(f"energykit: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("energykit: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
