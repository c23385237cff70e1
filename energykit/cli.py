"""Command line: ``python -m energykit {fit,report,measure,plan,submit,status,merge,design,predict,export,attribute}``.

The one thin layer over the package: every sub-command lives here and imports its module only when
it runs, so ``energykit --help`` starts without numpy, xarray or lmfit. User mistakes (bad files,
bad params, missing extras) print one line on stderr and exit with code 2, without a traceback.
"""

from __future__ import annotations

import argparse
import json
import math
import signal
import sys
import threading
import warnings

from .errors import EnergykitError, FitError, ParamsError

__all__ = ["main", "build_parser"]


def _finite(x: float):
    return x if math.isfinite(x) else None


def strict_json(obj, indent: int = 2) -> str:
    """``obj`` as strict JSON (RFC 8259): NaN and infinities become null, numpy scalars plain numbers.

    >>> json.loads(strict_json({"a": float("nan"), "b": [1.5, float("inf")]}))
    {'a': None, 'b': [1.5, None]}
    """
    def clean(v):
        if isinstance(v, dict):
            return {str(k): clean(x) for k, x in v.items()}
        if isinstance(v, (list, tuple)):
            return [clean(x) for x in v]
        if hasattr(v, "item") and not isinstance(v, (str, bytes)):
            v = v.item()
        if isinstance(v, float) and not math.isfinite(v):
            return None
        return v

    return json.dumps(clean(obj), indent=indent, allow_nan=False, default=str)


MAX_COUNT = 10**7
"""Largest length, batch size or count a command takes (the readers' ``iotools.MAX_INT``)."""


def positive_int(text: str) -> int:
    """argparse type: a positive integer, else argparse's one-line usage error (exit 2)."""
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer; use values such as 16, 64, 256") from None
    if v <= 0:
        raise argparse.ArgumentTypeError(f"{v} is not positive; use values such as 16, 64, 256")
    if v > MAX_COUNT:
        raise argparse.ArgumentTypeError(f"{text[:20]}… is over {MAX_COUNT:.0e}; use values such as 16, 64, 256"
                                         if len(text) > 20 else f"{v} is over {MAX_COUNT:.0e}; use values such as 16, 64, 256")
    return v


def _cell(text: str) -> tuple[int, int]:
    """``INPUT:OUTPUT`` of a command-line cell."""
    try:
        i, o = (int(x) for x in text.split(":"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"cell {text[:40]!r} is not INPUT:OUTPUT, e.g. 256:32") from None
    if not (0 < i <= MAX_COUNT and 0 < o <= MAX_COUNT):
        raise argparse.ArgumentTypeError(f"cell {text!r} needs positive lengths, e.g. 256:32")
    return i, o


def fit_json(fits) -> dict:
    """The ``fit --json`` object: per model its accuracy, θ, standard errors and ``o*`` per input length."""
    from .fit import o_star

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
    result = {"loss": fits.loss, "cv_folds": fits.cv_folds, "models": out}
    if fits.batched:
        result["batch_models"] = batch_json(fits)
    return result


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

    from .dataset import load, outlier_windows
    from .fit import DRAWS, fit_dataset, validation_table
    import os
    from pathlib import Path

    from .errors import ParamsError
    from .iotools import resolve
    from .state import check_output

    if args.save:  # before any work: the output is neither the data nor a file the kit did not write
        check_output(args.save, [args.data, resolve(args.data)], "fits", "--save")  # the data as the reader finds it
        folder = Path(args.save).parent
        if not folder.is_dir() or not os.access(folder, os.W_OK):
            raise ParamsError(f"--save {args.save}: the folder {folder} does not exist or is not writable; "
                              "create it or choose another path")
    ds = load(args.data)
    fits = fit_dataset(ds, models=args.model or None, loss=args.loss, cv_folds=args.cv_folds)
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
        if validation is not None:
            print("\nvalidation cells (left out of the fit):")
            print(validation.round(3).to_string(index=False))
    return 0


def cmd_report(args) -> int:
    import shlex
    import time
    from pathlib import Path

    from .iotools import REPO_ROOT
    from .params import DEFAULT_PARAMS, default_out, stale_reasons

    params = args.params or DEFAULT_PARAMS
    root = Path.cwd() if (Path.cwd() / "notebooks").is_dir() else REPO_ROOT  # as report.repo_root finds it
    # a relative --out is the working directory's; the default reports/<params-stem> is the repository's
    out = Path(args.out).absolute() if args.out else root / default_out(params)
    if args.check_stale:  # make report asks this (no science stack loaded): exit 1 when the pages are stale
        reasons = stale_reasons(Path(params).absolute(), out, root)
        print(f"{args.out or default_out(params)}: " + ("; ".join(reasons) if reasons else
              "up to date (the params and every file they name are unchanged since the last build)"))
        return 1 if reasons else 0
    from .report import build, write_catalog
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


def cmd_measure(args) -> int:
    from .params import load_measure_params
    from .sweep import SweepFailures, run

    from .shards import shard_from_env

    params = load_measure_params(args.params)  # validated before anything is loaded or written
    shard = shard_from_env(args.shard)
    try:
        path = run(params, args.params, progress=not args.no_progress, shard=shard)
    except SweepFailures as e:
        if e.dataset is not None:
            print(f"dataset written to {e.dataset}", flush=True)
        print(f"energykit: error: {_one_line(str(e))}", file=sys.stderr)
        return 1
    print(f"dataset written to {path}")
    return 0


def cmd_replay(args) -> int:
    from .params import load_replay_params
    from .replay_run import run_replay

    params = load_replay_params(args.params)  # validated before anything is sent or written
    out = run_replay(params, progress=not args.no_progress)
    print(f"replay written to {out}")
    return 0


def cmd_plan(args) -> int:
    from .params import load_measure_params
    from .shards import plan_shards

    params = load_measure_params(args.params)
    shards = plan_shards(params, args.shards)
    if args.json:
        print(strict_json({"shards": [{"index": s.index, "models": s.models, "windows": len(s.windows),
                                       "cost": s.cost, "cells": [list(w) for w in s.windows]} for s in shards]}))
        return 0
    total = sum(s.cost for s in shards) or 1.0
    for s in shards:
        print(f"shard {s.index}/{s.count}: {len(s.windows)} windows, {100 * s.cost / total:.1f} % of the cost, "
              f"models {', '.join(s.models)}")
    return 0


def cmd_status(args) -> int:
    from .merge import status

    print(status(args.outputs).to_string(index=False))
    return 0


def cmd_merge(args) -> int:
    from .merge import merge
    from .params import load_measure_params

    params = load_measure_params(args.params) if args.params else None
    path, report = merge(args.outputs, args.o, params)
    print(f"merged {report['windows']} windows from {report['folders']} folder(s) into {path} "
          f"({report['retried']} retried window(s) kept at their last good attempt"
          + (f"; {report['missing']} of {report['planned']} planned windows missing" if params else "") + ")")
    if report.get("missing"):
        print(f"energykit: error: {report['missing']} planned windows are missing; run the missing shards "
              "(energykit status lists them)", file=sys.stderr)
        return 1
    return 0


def cmd_submit(args) -> int:
    from .submit import submit

    jobs = submit(args.params, args.shards, partition=args.partition, time_min=args.time,
                  gpus_per_task=args.gpus_per_task, cpus_per_task=args.cpus_per_task, folder=args.folder,
                  wait=args.wait, retry=args.retry, progress=not args.no_progress,
                  container_image=args.container_image, apptainer=args.apptainer,
                  container_python=args.container_python)
    if not jobs:
        print("nothing to submit: every shard is complete")
        return 0
    print(f"submitted {len(jobs)} shard(s) as Slurm array job {jobs[0].job_id.split('_')[0]}"
          + (" — all finished" if args.wait else "; follow with: energykit status OUTPUT"))
    if args.container_image is not None or args.apptainer is not None:
        array = jobs[0].job_id.split("_")[0]
        script = jobs[0].paths.folder.parent / array / f"{array}_submission.sh"  # submitit: one script per array
        print(f"each shard runs in {args.container_image or args.apptainer}; script: {script}")
    return 0


def cmd_design_plan(args) -> int:
    """``energykit design PARAMS.yaml --budget N``: the cells of a sweep, chosen before measuring, as a params file."""
    from pathlib import Path

    import numpy as np
    import yaml

    from .design import plan_design
    from .params import load_measure_params, read_yaml
    from .state import atomic_write_text, check_output

    params = load_measure_params(args.data)
    candidates = [(i, o) for i in params.input_lens for o in params.output_lens]  # the grid, whatever cells it had
    batch = min(params.batch_sizes)
    priors, source = {}, "no prior: energy taken as proportional to i + 8·o (decode costs more per token than prefill)"
    if args.prior:
        from .dataset import load, model_names
        from .fit import pricing_fit
        from .hardware import calibrate

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
    from .dataset import load
    from .design import evaluate_design

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

    from .fit import DRAWS
    from .model import tokens_per_j
    from .uncertainty import o_star_interval

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
    from .dataset import load, measured_cells, model_names
    from .fit import pricing_fit

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

    from .fit import THETA_UNITS

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


def cmd_export(args) -> int:
    from pathlib import Path

    from .dataset import load
    from .fit import price_card

    from .state import atomic_write_text, check_output

    path = check_output(args.o, [args.data], "json", "-o")  # before the fit: never the data, never a foreign file
    card = price_card(load(args.data), args.model or None, args.loss, source=[args.data])
    atomic_write_text(path, strict_json(card, indent=1) + "\n")
    print(f"price card of {len(card['models'])} model(s) written to {path} (read it with energykit/price.py)")
    return 0


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

    from .dataset import load, to_frame
    from .fit import o_star
    from .intervals import estimate_interval
    from .hardware import calibrate, each_draw, leave_one_model_out, prediction_table, transfer_error_pct, with_transfer_error
    from .presets import resolve

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


def cmd_attribute(args) -> int:
    """``energykit attribute REPLAY --fit FIT``: predicted vs measured energy of a replay, and each request's share."""
    from pathlib import Path

    from .iotools import resolve
    from .replay import attribute, predict, read_replay, server_fit, summary_numbers
    from .state import atomic_write_text, check_output

    folder = resolve(args.replay)
    out = Path(args.o) if args.o else folder / "attribution.csv"
    check_output(out, [args.fit, resolve(args.fit), folder], "", "-o")  # before any work
    if args.window_s is not None and not (args.window_s > 0 and math.isfinite(args.window_s)):
        raise ParamsError(f"--window-s {args.window_s} must be a positive number of seconds, e.g. 10")
    if args.idle_power_w is not None and not (0 <= args.idle_power_w < 1e5):
        raise ParamsError(f"--idle-power-w {args.idle_power_w} must be a power in watts, e.g. 84")
    rep = read_replay(folder, idle_power_w=args.idle_power_w)
    fit = server_fit(args.fit, args.model, args.loss, prefer=rep.meta.get("model"))
    windows, whole = predict(rep, fit, window_s=args.window_s)
    table, totals = attribute(rep, fit, with_shapley=not args.no_shapley, progress=sys.stderr.isatty())
    atomic_write_text(out, table.to_csv(index=False))
    numbers = summary_numbers(whole, totals)
    if args.json:
        print(strict_json({"model": fit.model, "table": str(out), "totals": numbers,
                           "windows": windows.to_dict("records")}))
        return 0
    print(f"{folder}: {totals['requests']} requests ({totals['failed_requests']} failed, not attributed), "
          f"{totals['busy_periods']} busy period(s), fit of {fit.model} E(i, o, B)"
          + (" — SIMULATED replay" if rep.meta.get("simulated") else ""))
    print(f"measured {whole['measured_j']:.1f} J; predicted {whole['predicted_j']:.1f} J "
          f"[{whole['predicted_j_low']:.1f}, {whole['predicted_j_high']:.1f}] ({whole['error_pct']:+.2f} %)")
    print(f"busy energy measured {totals['measured_busy_j']:.1f} J, model {totals['model_busy_j']:.1f} J, residual "
          f"{totals['residual_j']:+.1f} J ({totals['residual_pct']:+.2f} %); unattributed (request-free windows above "
          f"idle) {totals['unattributed_j']:.1f} J"
          + (f"; {totals['invalid_windows']} window(s) the meter could not measure: their model energy "
             f"{totals['modelled_invalid_j']:.1f} J stands in" if totals["invalid_windows"] else "")
          + (f"; {totals['flagged_windows']} window(s) flagged not valid by the meter kept as measured"
             if totals["flagged_windows"] else ""))
    if not args.no_shapley:
        print(f"Shapley vs equal split: mean |diff| {totals['mean_abs_shapley_diff_pct']:.2f} %, max "
              f"{totals['max_abs_shapley_diff_pct']:.2f} % ({', '.join(totals['shapley_methods'])})")
    print(f"per-request table: {out}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    p = argparse.ArgumentParser(prog="energykit", description="Energy-efficiency sweet spots of LLM inference.")
    p.add_argument("--version", action="version", version=f"energykit {__version__}")
    sub = p.add_subparsers(dest="command", required=True)

    f = sub.add_parser("fit", help="fit the analytical model and the linear baseline to measured data")
    f.add_argument("data", help="NetCDF dataset (.nc) or tidy CSV/JSONL file of measured windows")
    f.add_argument("--model", action="append", help="fit only this model (repeatable)")
    f.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    f.add_argument("--loss", choices=["l1", "l2"], default="l1", help="robust (l1, default) or squared relative loss")
    f.add_argument("--cv-folds", type=int, default=5, help="folds of the cross-validation (default 5)")
    f.add_argument("--validate", nargs="+", type=_cell, metavar="I:O",
                   help="validation cells (input:output) left out of a second fit and predicted, e.g. 256:32 512:128")
    f.add_argument("--save", metavar="PATH", help="store the fits, bootstrap draws included, as a NetCDF file "
                   "(read it with energykit.load_fits, or give it to the reports as fit_file)")
    f.set_defaults(func=cmd_fit)

    r = sub.add_parser("report", help="execute the analysis notebooks and render HTML into reports/")
    r.add_argument("--params", help="parameter file (default params/report.yaml, energykit.params.DEFAULT_PARAMS)")
    r.add_argument("--out", help="output directory (default reports/<params-stem>, listed in reports/index.html)")
    r.add_argument("--rendered-by", help="the command to name as the pages' origin (default: this command line)")
    r.add_argument("--only", action="append", help="render only this notebook (repeatable), e.g. 02_fit")
    r.add_argument("--check-stale", action="store_true", help="build nothing: exit 0 when the pages in --out were "
                   "built from the params file and every file it names as they are now (SHA-256), else print why and exit 1")
    r.set_defaults(func=cmd_report)

    m = sub.add_parser("measure", help="run (or resume) a measurement sweep from a params file")
    m.add_argument("params", help="YAML file: engine, models, dtype, batch_sizes, input_lens, output_lens, ...")
    m.add_argument("--no-progress", action="store_true", help="no progress bar")
    m.add_argument("--shard", help="measure shard K of N (K/N, 0-based); default from SLURM_ARRAY_TASK_ID/COUNT "
                                   "or JOB_COMPLETION_INDEX with ENERGYKIT_SHARDS")
    m.set_defaults(func=cmd_measure)

    rp = sub.add_parser("replay", help="replay a request trace against a server at its arrival times, metered "
                                       "in windows (requests.jsonl, energy.jsonl, replay.json)")
    rp.add_argument("params", help="YAML file: trace, serve (url, model, dialect, gpus), model, time_scale or "
                                   "rate_rps, max_requests, window_s, meter, output")
    rp.add_argument("--no-progress", action="store_true", help="no progress bar")
    rp.set_defaults(func=cmd_replay)

    pl = sub.add_parser("plan", help="split a sweep into N shards (disjoint, covering, grouped by model, balanced)")
    pl.add_argument("params", help="the sweep's YAML file")
    pl.add_argument("--shards", type=positive_int, required=True, help="number of shards (GPUs)")
    pl.add_argument("--json", action="store_true", help="one JSON object on stdout")
    pl.set_defaults(func=cmd_plan)

    sb = sub.add_parser("submit", help="submit the shards as one Slurm array job (submitit), one GPU each")
    sb.add_argument("params", help="the sweep's YAML file")
    sb.add_argument("--shards", type=positive_int, required=True, help="number of shards (array tasks)")
    sb.add_argument("--partition", help="Slurm partition")
    sb.add_argument("--time", type=positive_int, default=60, help="time limit per shard [min] (default 60)")
    sb.add_argument("--gpus-per-task", type=positive_int, default=1, help="GPUs per shard (default 1)")
    sb.add_argument("--cpus-per-task", type=positive_int, help="CPUs per shard")
    sb.add_argument("--folder", help="submitit's log folder (default OUTPUT/slurm)")
    sb.add_argument("--wait", action="store_true", help="wait for every shard, with a progress bar")
    sb.add_argument("--retry", action="store_true", help="resubmit only shards with missing or failed windows")
    sb.add_argument("--no-progress", action="store_true", help="no progress bar")
    sb.add_argument("--container-image", help="run every shard in this image through pyxis (srun --container-image), "
                    "e.g. a build of containers/Dockerfile.trtllm FROM nvcr.io/nvidia/tensorrt-llm/release:TAG")
    sb.add_argument("--apptainer", metavar="SIF", help="run every shard in this Apptainer image "
                    "(apptainer exec --nv SIF), e.g. built from containers/energykit-trtllm.def")
    sb.add_argument("--container-python", default="python3",
                    help="the Python inside the image that has energykit (default python3)")
    sb.set_defaults(func=cmd_submit)

    st = sub.add_parser("status", help="done, failed and missing windows per shard folder")
    st.add_argument("outputs", nargs="+", help="sweep output folders (or shard folders)")
    st.set_defaults(func=cmd_status)

    mg = sub.add_parser("merge", help="merge shard folders into one dataset (one record per cell and repeat)")
    mg.add_argument("outputs", nargs="+", help="sweep output folders (or shard folders)")
    mg.add_argument("-o", required=True, help="the merged NetCDF file")
    mg.add_argument("--params", help="the sweep's YAML file, to report missing windows")
    mg.set_defaults(func=cmd_merge)

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

    x = sub.add_parser("export", help="write a price card: per model/GPU/engine the fitted energy model with its "
                       "bootstrap draws and measured ranges (read by energykit/price.py, standard library only)")
    x.add_argument("data", help="measured data (.nc/.csv/.jsonl)")
    x.add_argument("-o", required=True, help="the card's JSON file, e.g. card.json")
    x.add_argument("--model", action="append", help="export only this model (repeatable)")
    x.add_argument("--loss", choices=["l1", "l2"], default="l1")
    x.set_defaults(func=cmd_export)

    at = sub.add_parser("attribute", help="a replayed request stream: predicted vs measured energy (whole and per "
                        "window, with the fit's interval) and each request's energy (equal split and Shapley)")
    at.add_argument("replay", help="the folder energykit replay wrote (requests.jsonl, energy.jsonl, replay.json)")
    at.add_argument("--fit", required=True, help="fits of the same server (energykit fit --save) or its measured "
                    "data at several batch sizes")
    at.add_argument("--model", help="the model in the fit (default: the replay's model, or the fit's only one)")
    at.add_argument("--window-s", type=float, help="compare per window of about this many seconds (default: the "
                    "meter's windows)")
    at.add_argument("-o", help="per-request table (CSV); default REPLAY/attribution.csv")
    at.add_argument("--idle-power-w", type=float, help="idle board power [W], when the replay measured none "
                    "(replay.json's idle_power_w is null) or to override it")
    at.add_argument("--no-shapley", action="store_true", help="equal split only (skip the Shapley values)")
    at.add_argument("--loss", choices=["l1", "l2"], default="l1")
    at.add_argument("--json", action="store_true", help="one JSON object on stdout")
    at.set_defaults(func=cmd_attribute)
    return p


def _one_line_warning(message, category, filename, lineno, file=None, line=None):
    return f"energykit: warning: {_one_line(str(message))}\n"


def _one_line(text: str, limit: int = 2000) -> str:
    """A message as one printable line (values from files may hold newlines), at most ``limit`` characters."""
    text = " ".join(str(text).split())
    text = "".join(c if c.isprintable() else f"\\u{ord(c):04x}" for c in text)  # no bidi override reorders it
    return text if len(text) <= limit else text[:limit] + "…"


class Interrupted(KeyboardInterrupt):
    """SIGINT or SIGTERM: raised where the command is, so that its ``finally`` blocks remove what is half-written."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum


_SIGNALLED: list[int] = []
"""The signal that stopped the command: a library may turn the exception into its own (nbclient: a dead kernel)."""


def _on_signal(signum, frame):
    for s in (signal.SIGINT, signal.SIGTERM):  # a second Ctrl-C must not break the cleanup under way
        signal.signal(s, signal.SIG_IGN)
    _SIGNALLED.append(signum)
    raise Interrupted(signum)


def main(argv=None) -> int:
    warnings.formatwarning = _one_line_warning
    parser = build_parser()
    args = parser.parse_args(argv)
    handlers = {}
    _SIGNALLED.clear()
    if threading.current_thread() is threading.main_thread():
        handlers = {s: signal.signal(s, _on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        return _run(args)
    finally:
        for s, h in handlers.items():
            signal.signal(s, h)


def _run(args) -> int:
    try:
        return _errors_as_lines(args)
    except BaseException as e:  # Ctrl-C may surface as another error (asyncio's CancelledError, a dead kernel)
        if not (_SIGNALLED or isinstance(e, KeyboardInterrupt) or type(e).__name__ == "CancelledError"):
            raise
        signum = _SIGNALLED[0] if _SIGNALLED else getattr(e, "signum", None)
        name = f" ({signal.Signals(signum).name})" if signum else ""
        print(f"energykit: interrupted{name}; nothing half-written was left — run the same command again to finish",
              file=sys.stderr)
        return 128 + int(signum or signal.SIGINT)


def _errors_as_lines(args) -> int:
    try:
        return args.func(args)
    except EnergykitError as e:
        if _SIGNALLED:
            raise
        print(f"energykit: error: {_one_line(str(e))}", file=sys.stderr)
        return 2
    except OSError as e:  # a path the system refuses (missing folder, read-only, name too long): one line
        where = f"{e.filename}: " if e.filename else ""
        print(f"energykit: error: {_one_line(where)}{e.strerror or e}; check the path, its folder and permissions",
              file=sys.stderr)
        return 2
    except RecursionError:
        print("energykit: error: an input is nested too deeply to read; check the files given", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
