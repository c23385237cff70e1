"""``energykit fit`` and ``energykit export``: fit measured data, write a price card."""

from __future__ import annotations

import sys

from .common import _cell, _finite, strict_json

__all__ = ["fit_json", "batch_json", "cmd_fit", "cmd_export", "add_parsers"]


def fit_json(fits) -> dict:
    """The ``fit --json`` object: per model its accuracy, θ, standard errors and ``o*`` per input length."""
    from ..fit import o_star

    out = {}
    multi = {m for m, _ in fits.paired_keys if sum(1 for mm, _ in fits.paired_keys if mm == m) > 1}
    for m, b in fits.paired_keys:
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
    result = {"loss": fits.loss, "cv_folds": fits.cv_folds, "models": out}
    if fits.batched:
        result["batch_models"] = batch_json(fits)
    if fits.unpaired():
        result["other_fits"] = other_json(fits)
    return result


def other_json(fits) -> list[dict]:
    """Fits of the declared models that are neither per batch size nor across batch sizes (a model over
    another declared variable, or one fitted at each value of a variable it does not take): per fit its
    variables, what it holds fixed, accuracy and θ."""
    return [{"model": f.model, "kind": f.kind, "variables": list(f.variables), "fixed": f.fixed,
             "cells": len(f.energy_j), "mape_pct": f.mape_pct, "max_ape_pct": f.max_ape_pct, "r2": f.r2,
             "cv_mape_pct": _finite(f.cv_mape_pct), "params": f.params,
             "params_stderr": {k: _finite(v) for k, v in f.stderr.items()}} for f in fits.unpaired()]


def _print_fits(fits) -> None:
    """The text of ``energykit fit``: per batch size, across batch sizes, and every other fit."""
    if fits.paired_keys:
        print(fits.summary().round(3).to_string(index=False))
        print()
        t = fits.table().query("kind == 'sweetspot'")
        cols = ["model", "batch_size"] + [c for c in t.columns if c.startswith("theta")]
        print(t[cols].to_string(index=False, float_format=lambda v: f"{v:.4g}"))
    for m, b in batch_json(fits).items():
        print(f"\n{m}: E(i, o, B) over batch sizes {', '.join(map(str, b['batch_sizes']))}: MAPE {b['mape_pct']:.2f} %")
        print("  batch size   MAPE %   leave-this-batch-out MAPE %")
        for k, v in b["batch_mape_pct"].items():
            lobo = b["leave_one_batch_out_mape_pct"][k]
            print(f"  {k:>10}   {v:6.2f}   {'n/a' if lobo is None else f'{lobo:6.2f}'}")
        print("  " + ", ".join(f"{k}={v:.4g}" for k, v in b["params"].items()))
    for o in other_json(fits):
        fixed = ", ".join(f"{k}={v}" for k, v in o["fixed"].items()) or "nothing fixed"
        print(f"\n{o['model']}: {o['kind']} over ({', '.join(o['variables'])}) at {fixed}: {o['cells']} cells, "
              f"MAPE {o['mape_pct']:.2f} %")
        print("  " + ", ".join(f"{k}={v:.4g}" for k, v in o["params"].items()))


def batch_json(fits) -> dict:
    """Per model measured at several batch sizes: the batch-aware fit E(i, o, B), its MAPE per batch
    size, its k-fold and leave-one-batch-size-out cross-validation and ``o*(i, B)``."""
    out = {}
    for m, f in sorted(fits.batched.items()):
        ins = sorted({float(i) for i in f.input_len})
        out[m] = {
            "batch_sizes": f.batch_sizes,
            "cells": len(f.energy_j),
            "mape_pct": f.mape_pct,
            "batch_mape_pct": {str(b): v for b, v in f.batch_mape_pct().items()},
            "cv_mape_pct": _finite(f.cv_mape_pct),
            "leave_one_batch_out_mape_pct": {str(b): _finite(v) for b, v in fits.batch_cv[m].items()},
            "params": f.params,
            "params_stderr": {k: _finite(v) for k, v in f.stderr.items()},
            "o_star": {str(b): {str(int(i)): _finite(float(f.o_star(i, b))) for i in ins} for b in f.batch_sizes},
        }
    return out


def cmd_fit(args) -> int:
    import pandas as pd

    from ..dataset import load, outlier_windows
    from ..fit import DRAWS, fit_dataset, validation_table
    import os
    from pathlib import Path

    from ..errors import ParamsError
    from ..iotools import resolve
    from ..state import check_output

    if args.save:  # before any work: the output is neither the data nor a file the kit did not write
        check_output(args.save, [args.data, resolve(args.data)], "fits", "--save")  # the data as the reader finds it
        folder = Path(args.save).parent
        if not folder.is_dir() or not os.access(folder, os.W_OK):
            raise ParamsError(f"--save {args.save}: the folder {folder} does not exist or is not writable; "
                              "create it or choose another path")
    ds = load(args.data)
    fits = fit_dataset(ds, models=args.model or None, loss=args.loss, cv_folds=args.cv_folds, kinds=args.kind)
    flagged = outlier_windows(ds)
    if len(flagged):
        worst = flagged.iloc[flagged["deviation_pct"].abs().argmax()]
        print(f"energykit: warning: {len(flagged)} window(s) depart from their cell's other repeats by more than "
              f"5 % (worst: {worst['model']} i={worst['input_len']} o={worst['output_len']} repeat {worst['repeat']}, "
              f"{worst['deviation_pct']:+.0f} %); the l1 fit is robust to them — see energykit.dataset.outlier_windows",
              file=sys.stderr)
    if args.save:
        path = fits.save(args.save, source={"data": [args.data]})
        print(f"energykit: fits with {DRAWS} bootstrap draws saved to {path} (load with energykit.load_fits)",
              file=sys.stderr)
    validation = None
    if args.validate:
        validation = validation_table(ds, args.validate, models=args.model or None, loss=args.loss)
    if args.json:
        out = fit_json(fits)
        if validation is not None:
            out["validation"] = validation.to_dict("records")
        print(strict_json(out))
        return 0
    with pd.option_context("display.width", 200, "display.max_columns", 30):
        _print_fits(fits)
        if validation is not None:
            print("\nvalidation cells (left out of the fit):")
            print(validation.round(3).to_string(index=False))
    return 0


def cmd_export(args) -> int:
    from ..dataset import load
    from ..fit import price_card

    from ..state import atomic_write_text, check_output

    path = check_output(args.o, [args.data], "json", "-o")  # before the fit: never the data, never a foreign file
    card = price_card(load(args.data), args.model or None, args.loss, source=[args.data], kind=args.kind)
    atomic_write_text(path, strict_json(card, indent=1) + "\n")
    print(f"price card of {len(card['models'])} model(s) written to {path} (read it with energykit/price.py)")
    return 0


def add_parsers(sub) -> None:
    """The sub-commands ``fit``, ``export``."""
    f = sub.add_parser("fit", help="fit the analytical model and the linear baseline to measured data")
    f.add_argument("data", help="NetCDF dataset (.nc) or tidy CSV/JSONL file of measured windows")
    f.add_argument("--model", action="append", help="fit only this model (repeatable)")
    f.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    f.add_argument("--loss", choices=["l1", "l2"], default="l1", help="robust (l1, default) or squared relative loss")
    f.add_argument("--cv-folds", type=int, default=5, help="folds of the cross-validation (default 5)")
    f.add_argument("--validate", nargs="+", type=_cell, metavar="I:O",
                   help="validation cells (input:output) left out of a second fit and predicted, e.g. 256:32 512:128")
    f.add_argument("--kind", action="append", metavar="KIND", help="fit this declared model (energykit.model.MODELS, "
                   "repeatable; default: the analytical model and the baseline per batch size, and E(i, o, B) "
                   "across batch sizes), e.g. a model declared over another variable of the data")
    f.add_argument("--save", metavar="PATH", help="store the fits, bootstrap draws included, as a NetCDF file "
                   "(read it with energykit.load_fits, or give it to the reports as fit_file)")
    f.set_defaults(func=cmd_fit)

    x = sub.add_parser("export", help="write a price card: per model/GPU/engine the fitted energy model with its "
                       "bootstrap draws and measured ranges (read by energykit/price.py, standard library only)")
    x.add_argument("data", help="measured data (.nc/.csv/.jsonl)")
    x.add_argument("-o", required=True, help="the card's JSON file, e.g. card.json")
    x.add_argument("--kind", metavar="KIND", help="price with this declared model (energykit.model.MODELS; default: "
                   "E(i, o, B) when the data hold several batch sizes, else the analytical model)")
    x.add_argument("--model", action="append", help="export only this model (repeatable)")
    x.add_argument("--loss", choices=["l1", "l2"], default="l1")
    x.set_defaults(func=cmd_export)
