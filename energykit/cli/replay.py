"""``energykit replay`` and ``energykit attribute``: a request trace against a server, and its energy per request."""

from __future__ import annotations

import math
import sys

from ..errors import ParamsError
from .common import strict_json

__all__ = ["cmd_replay", "cmd_attribute", "add_parsers"]


def cmd_replay(args) -> int:
    from ..params import load_replay_params
    from ..replay_run import run_replay

    params = load_replay_params(args.params)  # validated before anything is sent or written
    out = run_replay(params, progress=not args.no_progress)
    print(f"replay written to {out}")
    return 0


def cmd_attribute(args) -> int:
    """``energykit attribute REPLAY --fit FIT``: predicted vs measured energy of a replay, and each request's share."""
    from pathlib import Path

    from ..iotools import resolve
    from ..replay import attribute, predict, read_replay, server_fit, summary_numbers
    from ..state import atomic_write_text, check_output

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


def add_parsers(sub) -> None:
    """The sub-commands ``replay``, ``attribute``."""
    rp = sub.add_parser("replay", help="replay a request trace against a server at its arrival times, metered "
                                       "in windows (requests.jsonl, energy.jsonl, replay.json)")
    rp.add_argument("params", help="YAML file: trace, serve (url, model, dialect, gpus), model, time_scale or "
                                   "rate_rps, max_requests, window_s, meter, output")
    rp.add_argument("--no-progress", action="store_true", help="no progress bar")
    rp.set_defaults(func=cmd_replay)

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
