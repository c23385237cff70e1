"""``energykit design`` and ``energykit predict``: plan cells to measure, predict energy."""

from __future__ import annotations

import math
import sys

from ..errors import FitError, ParamsError
from .common import _finite, positive_int, strict_json

__all__ = ["cmd_design_plan", "cmd_design", "predict_json", "cmd_predict_data", "predict_text", "cmd_predict", "add_parsers"]


def cmd_design_plan(args) -> int:
    """``energykit design PARAMS.yaml --budget N``: the cells of a sweep, chosen before measuring, as a params file."""
    from pathlib import Path

    import numpy as np
    import yaml

    from ..design import plan_design
    from ..params import load_measure_params, read_yaml
    from ..state import atomic_write_text, check_output

    params = load_measure_params(args.data)
    candidates = [(i, o) for i in params.input_lens for o in params.output_lens]  # the grid, whatever cells it had
    batch = min(params.batch_sizes)
    priors, source = {}, "no prior: energy taken as proportional to i + 8·o (decode costs more per token than prefill)"
    if args.prior:
        from ..dataset import load, model_names
        from ..fit import pricing_fit
        from ..hardware import calibrate

        ds = load(args.prior)
        measured = set(model_names(ds))
        hw = None
        for name, geom, _ in params.resolved:
            if name in measured:  # a prior fit of this very model
                fit = pricing_fit(ds, name, args.loss)
                b = batch if fit.energy_model.has_batch else None
                priors[name] = lambda cells, fit=fit, b=b: fit.predict(cells[:, 0].astype(float),
                                                                       cells[:, 1].astype(float), b)
            else:  # the hardware model calibrated on the prior data predicts it from its geometry
                hw = hw or calibrate(ds, None, args.loss)
                priors[name] = lambda cells, g=geom, hw=hw: hw.predict(g, batch, cells[:, 0], cells[:, 1], params.dtype)
        source = (f"prior: {args.prior} (a fit of {', '.join(n for n in priors if n in measured) or 'no model'}; "
                  f"hardware model from geometry for {', '.join(n for n in priors if n not in measured) or 'none'})")
    cells = plan_design(candidates, args.budget, priors or None)
    print(f"{len(cells)} of {len(candidates)} cells (inputs {params.input_lens[0]}–{params.input_lens[-1]}, outputs "
          f"{params.output_lens[0]}–{params.output_lens[-1]}) for {len(params.models)} model(s); {source}")
    if priors:
        grid = np.asarray(cells)
        for name, f in priors.items():
            print(f"  {name}: predicted energy per batch of {batch} at the chosen cells [J]: "
                  + ", ".join(f"({i}, {o}) {e:.3g}" for (i, o), e in zip(cells, f(grid))))
    else:
        print("  cells: " + ", ".join(f"({i}, {o})" for i, o in cells))
    out = Path(args.o) if args.o else Path(args.data).with_name(f"{Path(args.data).stem}_design{args.budget}.yaml")
    check_output(out, [args.data] + ([args.prior] if args.prior else []), "yaml", "-o")
    if out.exists() and not out.read_text(encoding="utf-8", errors="replace").startswith("# Written by energykit design"):
        raise ParamsError(f"-o {out} exists and was not written by energykit design; give a new file path")
    raw = read_yaml(args.data)
    raw["cells"] = [[int(i), int(o)] for i, o in cells]
    header = (f"# Written by energykit design {args.data} --budget {args.budget}"
              + (f" --prior {args.prior}" if args.prior else "") + f": {len(cells)} cells chosen (D-optimal) from the "
              f"{len(params.input_lens)} x {len(params.output_lens)} grid before measuring; {source}.\n"
              f"# Run it: energykit measure {out}\n")
    atomic_write_text(out, header + yaml.safe_dump(raw, sort_keys=False, allow_unicode=True))
    load_measure_params(out)  # what was written validates as a sweep
    print(f"params file written to {out}: energykit measure {out}")
    return 0


def cmd_design(args) -> int:
    from ..dataset import load
    from ..design import evaluate_design

    if str(args.data).endswith((".yaml", ".yml")):
        return cmd_design_plan(args)
    if args.prior or args.o:
        raise ParamsError("--prior and -o plan a sweep from a params file: energykit design PARAMS.yaml --budget N; "
                          "with measured data, design chooses among the measured cells and checks them")
    table = evaluate_design(load(args.data), args.budget, progress=sys.stderr.isatty())
    if args.json:
        multi = table["model"].duplicated(keep=False)
        out = {}
        for (_, r), dup in zip(table.iterrows(), multi):
            name = f"{r['model']} (batch {r['batch_size']})" if dup else r["model"]
            out[name] = {"cells": r["cells"], "heldout_cells": r["heldout_cells"],
                         "heldout_mape_pct": None if math.isnan(r["heldout_mape_pct"]) else r["heldout_mape_pct"]}
        print(strict_json({"budget": args.budget, "models": out}))
    else:
        print(table[["model", "batch_size", "heldout_cells", "heldout_mape_pct", "cells"]].to_string(index=False))
    return 0


def predict_json(fit, batch_size: int, input_lens, output_lens) -> dict:
    """The ``predict DATA --json`` object: energy per batch and per request with intervals, tokens/J,
    ``o*(i, B)`` and whether each cell lies outside the measured ranges."""
    import numpy as np

    from ..fit import DRAWS
    from ..model import tokens_per_j
    from ..uncertainty import o_star_interval

    b = batch_size
    if not fit.energy_model.has_batch and b != fit.batch_size:
        raise FitError(f"{fit.model} was measured at batch size {fit.batch_size} only; energy at batch {b} needs "
                       "measurements at two or more batch sizes (the batch-aware model E(i, o, B)); "
                       f"use --batch-size {fit.batch_size}")
    i, o = np.meshgrid(np.asarray(input_lens, float), np.asarray(output_lens, float), indexing="ij")
    i, o = i.ravel(), o.ravel()
    bb = b if fit.energy_model.has_batch else None
    est, lo, hi = fit.predict_interval(i, o, DRAWS, batch_size=bb)
    sizes = fit.batch_sizes
    outside = ((i < fit.input_len.min()) | (i > fit.input_len.max()) | (o < fit.output_len.min())
               | (o > fit.output_len.max()) | (b < min(sizes)) | (b > max(sizes)))
    cells = [{"input_len": int(ii), "output_len": int(oo), "energy_j": float(e), "energy_j_low": float(el),
              "energy_j_high": float(eh), "energy_per_request_j": float(e / b), "energy_per_request_j_low": float(el / b),
              "energy_per_request_j_high": float(eh / b), "tokens_per_j": float(tokens_per_j(e, b, oo)),
              "extrapolated": bool(x)} for ii, oo, e, el, eh, x in zip(i, o, est, lo, hi, outside)]
    ins = sorted({int(v) for v in input_lens})
    ostar, ostar_lo, ostar_hi = o_star_interval(fit, np.asarray(ins, float), DRAWS, batch_size=bb)
    return {"model": fit.model, "kind": fit.kind, "batch_size": b, "measured_batch_sizes": sizes,
            "batch_extrapolated": bool(b not in sizes), "mape_pct": fit.mape_pct,
            "params": fit.params, "cells": cells,
            "o_star": {str(k): {"value": _finite(float(v)), "low": _finite(float(lo_)), "high": _finite(float(hi_))}
                       for k, v, lo_, hi_ in zip(ins, ostar, ostar_lo, ostar_hi)}}


def cmd_predict_data(args) -> int:
    """``energykit predict DATA``: measured models at any batch size from their fitted energy model.

    Without ``--model`` every model of the data is predicted (never silently the first one)."""
    from ..dataset import load, measured_cells, model_names
    from ..fit import pricing_fit

    ds = load(args.data)
    names = model_names(ds)
    models = args.model or names
    unknown = [m for m in models if m not in names]
    if unknown:
        raise FitError(f"model {unknown[0]!r} is not in {args.data}; available: {', '.join(names)}")
    results = []
    for model in models:
        fit = pricing_fit(ds, model, args.loss)
        cells = measured_cells(ds, model)
        b = args.batch_size or int(cells["batch_size"].min())
        ins = args.input_lens or sorted({int(v) for v in cells["input_len"]})
        outs = args.output_lens or sorted({int(v) for v in cells["output_len"]})
        results.append((fit, predict_json(fit, b, ins, outs)))
    if args.json:  # one model: its object (as before); several: {"models": {name: object}}
        print(strict_json(results[0][1] if len(results) == 1 else {"models": {r["model"]: r for _, r in results}}))
        return 0
    for k, (fit, out) in enumerate(results):
        print(("\n" if k else "") + predict_text(fit, out))
    return 0


def predict_text(fit, out: dict) -> str:
    """``predict DATA``'s text for one model: the fit, θ, o*(i) and a table whose energies say per what they are."""
    import pandas as pd

    from ..fit import THETA_UNITS

    b = out["batch_size"]
    kind = ("E(i, o, B) fitted on batch sizes " + ", ".join(map(str, out["measured_batch_sizes"]))
            if fit.energy_model.has_batch else f"E(i, o) fitted at batch {fit.batch_size}")
    lines = [f"{out['model']}: {kind} (MAPE {out['mape_pct']:.2f} %); predicted at batch {b}"
             + (" (not measured: extrapolated)" if out["batch_extrapolated"] else "")]
    lines.append("θ (per batch of the fit): " + ", ".join(f"{k} = {v:.4g} {THETA_UNITS.get(k, '')}".rstrip()
                                                       for k, v in out["params"].items()))
    def ostar(v):
        if v["value"] is None:
            return "n/a (θ4 not identified)"
        low = "n/a" if v["low"] is None else f"{v['low']:.0f}"
        high = "unbounded" if v["high"] is None else f"{v['high']:.0f}"
        return f"{v['value']:.0f} [{low}, {high}]"

    lines.append(f"o*(i, B={b}) [tokens], the output length of least energy per output token [95 %]: "
                 + "; ".join(f"i={i}: {ostar(v)}" for i, v in out["o_star"].items()))
    df = pd.DataFrame(out["cells"])
    table = pd.DataFrame({
        "input_len": df["input_len"], "output_len": df["output_len"],
        f"energy per batch of {b} [J] [95 %]": [f"{e:.4g} [{lo:.4g}, {hi:.4g}]" for e, lo, hi in
                                                zip(df["energy_j"], df["energy_j_low"], df["energy_j_high"])],
        "energy per request [J] [95 %]": [f"{e:.4g} [{lo:.4g}, {hi:.4g}]" for e, lo, hi in
                                          zip(df["energy_per_request_j"], df["energy_per_request_j_low"],
                                              df["energy_per_request_j_high"])],
        "output tokens per J": [f"{t:.4g}" for t in df["tokens_per_j"]],
        "extrapolated": df["extrapolated"]})
    lines.append(table.to_string(index=False))
    return "\n".join(lines)


def cmd_predict(args) -> int:
    import numpy as np
    import pandas as pd

    if args.calibrate and not args.geometry:
        raise ParamsError("--calibrate needs --geometry NAME (a preset, a directory with config.json, or a config.json)")
    if not args.calibrate:
        if not args.data:
            raise ParamsError("predict needs measured data: energykit predict DATA --model M --batch-size B, "
                              "or --calibrate DATA --geometry NAME for an unmeasured model")
        return cmd_predict_data(args)

    from ..dataset import load, to_frame
    from ..fit import o_star
    from ..intervals import estimate_interval
    from ..hardware import calibrate, each_draw, leave_one_model_out, prediction_table, transfer_error_pct, with_transfer_error
    from ..presets import resolve

    ds = load(args.calibrate)
    name, geom, _ = resolve(args.geometry)
    hw = calibrate(ds, args.model or None, args.loss)
    unidentified = hw.unidentified()
    if not hw.all_identified():
        print(f"energykit: warning: the calibration cells do not identify {len(unidentified)} of 6 hardware "
              f"coefficients ({', '.join(unidentified) or 'design rank ' + str(hw.rank)}; calibrated on "
              f"{', '.join(hw.calibrated_on)}); the prediction rests on an arbitrary split between "
              "them — calibrate on more models of different geometry", file=sys.stderr)
    frame = to_frame(ds)
    b = args.batch_size or int(frame["batch_size"].min())
    ins = args.input_lens or sorted({int(v) for v in frame["input_len"]})
    outs = args.output_lens or sorted({int(v) for v in frame["output_len"]})
    table = prediction_table(hw, geom, b, ins, outs)
    theta = hw.theta(geom, b)
    ostar_draws = np.array([o_star(hw.theta(geom, b, coef=c), np.asarray(ins, float)) for c in each_draw(hw.draws(100))])
    ostar = {}
    for k, i in enumerate(ins):
        est = float(o_star(theta, i))
        _, lo, hi = estimate_interval(est, ostar_draws[:, k])
        ostar[str(i)] = {"value": est, "low": float(lo), "high": float(hi)}
    lomo = leave_one_model_out(ds, args.loss, hw.calibrated_on) if len(hw.calibrated_on) > 1 else pd.DataFrame()
    transfer = transfer_error_pct(lomo)  # a held-out geometry's error: the cells' intervals cover it
    table = with_transfer_error(table, transfer)
    if args.json:
        out = {
            "geometry": name, "batch_size": b, "calibrated_on": hw.calibrated_on, "gpu": hw.gpu, "engine": hw.engine,
            "coefficients": hw.coef, "identified": hw.all_identified(), "unidentified_coefficients": unidentified,
            "design_rank": hw.rank, "theta": theta,
            "o_star": ostar,
            "leave_one_model_out_mape_pct": {r["model"]: r["mape_pct"] for _, r in lomo.iterrows()},
            "leave_one_model_out_max_ape_pct": {r["model"]: r["max_ape_pct"] for _, r in lomo.iterrows()},
            "transfer_error_pct": transfer if math.isfinite(transfer) else None,
            "cells_interval": "95 % over the calibration's bootstrap, widened by ±transfer_error_pct "
                              "(the worst leave-one-model-out MAPE; absent: transfer unchecked)",
            "cells": table.to_dict(orient="records"),
        }
        print(strict_json(out))
        return 0
    print(f"{name}: predicted from {', '.join(hw.calibrated_on)} ({hw.gpu}, {hw.engine}), batch {b}")
    print("intervals: 95 % over the calibration's bootstrap" + (f", widened by ±{transfer:.0f} % transfer error "
          "(worst leave-one-model-out MAPE)" if math.isfinite(transfer) else "; the transfer is unchecked (one model)"))
    print(table.round(3).to_string(index=False))
    if not lomo.empty:
        print("\nleave-one-model-out on the calibration set:")
        print(lomo.round(2).to_string(index=False))
    return 0


def add_parsers(sub) -> None:
    """The sub-commands ``design``, ``predict``."""
    d = sub.add_parser("design", help="choose K cells to measure (D-optimal): plan a sweep from its params file "
                       "before measuring, or check a design on measured data")
    d.add_argument("data", help="a sweep's params file (.yaml: plan its cells, write a params file to run), or "
                   "measured data (NetCDF, tidy CSV/JSONL: choose among its cells and check them)")
    d.add_argument("--budget", type=int, required=True, help="number of cells to measure (>= 6)")
    d.add_argument("--prior", help="with a params file: measured data of the same GPU and engine; its fit of a "
                   "model (or, for a model it lacks, the hardware model calibrated on it) weights the cells")
    d.add_argument("-o", help="with a params file: where to write the planned params (default PARAMS_designN.yaml)")
    d.add_argument("--loss", choices=["l1", "l2"], default="l1")
    d.add_argument("--json", action="store_true", help="one JSON object on stdout")
    d.set_defaults(func=cmd_design)

    q = sub.add_parser("predict", help="energy of a measured model at any batch size (DATA), or of an unmeasured "
                       "model from its geometry (--calibrate, --geometry)")
    q.add_argument("data", nargs="?", help="measured data: predict its --model from the fitted energy model "
                   "(E(i, o, B) when it holds several batch sizes)")
    q.add_argument("--calibrate", help="measured data (.nc/.csv/.jsonl) with geometry columns")
    q.add_argument("--geometry", help="preset name, directory with config.json, or config.json")
    q.add_argument("--model", action="append", help="calibrate on this measured model only (repeatable)")
    q.add_argument("--batch-size", type=positive_int, help="batch size (default: the data's first)")
    q.add_argument("--input-lens", type=positive_int, nargs="+", help="input lengths (default: the data's)")
    q.add_argument("--output-lens", type=positive_int, nargs="+", help="output lengths (default: the data's)")
    q.add_argument("--loss", choices=["l1", "l2"], default="l1")
    q.add_argument("--json", action="store_true", help="one JSON object on stdout")
    q.set_defaults(func=cmd_predict)
