"""Key results of each report page, beside the paper's, as a short Markdown box and as numbers.

Every page opens with its answer (:func:`show`); the numbers also travel in the executed notebook
(display metadata ``energykit_key_results``), from which :mod:`energykit.report` builds the
landing page. The paper's figures (mean MAPE, best/worst efficiency, GQA vs MHA) live in
:mod:`energykit.paper`.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import xarray as xr
from IPython.display import Markdown, display

from .dataset import cell_means, model_names, model_value
from . import paper
from .engines import ENGINES, label_owner
from .engines import caveat as engine_caveat
from .fit import FitSet, ModelFit
from .findings import REPRODUCED_MAPE_PCT, paper_findings
from .intervals import bounded_high, fmt, format_interval
from .paper import GRID as PAPER_GRID
from .sweetspots import attention_kind, measured_map, ratio_table
from .iotools import escape_markdown

__all__ = ["PAPER_MAPE_PCT", "PAPER_BEST_WORST", "REPRODUCED_MAPE_PCT", "fmt", "table", "show", "fit_results", "sweetspot_results", "workload_results",
           "planning_results", "batching_results", "dataset_line", "source_line", "paper_findings", "replay_results"]

PAPER_MAPE_PCT = paper.MAPE_PCT
"""Mean MAPE of the analytical model over the paper's 13 models [%] (:data:`energykit.paper.MAPE_PCT`)."""
PAPER_BEST_WORST = paper.BEST_WORST
"""The paper's largest best/worst efficiency ratio on its 64–4096 grid (:data:`energykit.paper.BEST_WORST`)."""



EDGE_NOTE = "(at its edge: one-sided draws)"
"""Beside an estimate that sits on the edge of its own interval: the bootstrap draws fell on one side of it,
as they do where a θ ≥ 0 coefficient sits on (or near) its bound."""


def _with_interval(est, low, high, digits: int = 4) -> str:
    """:func:`energykit.intervals.format_interval`, saying so when the estimate sits on its interval's edge.

    >>> _with_interval(2.3, 2.29, 4.98, 3), _with_interval(4.2, 3.4, 1.02e15, 4), _with_interval(1.0, 0.5, 1.5)
    ('2.3 [2.29, 4.98] (at its edge: one-sided draws)', '4.2 [3.4, unbounded]', '1 [0.5, 1.5]')
    """
    text = format_interval(est, low, high, digits)
    if not np.isfinite(est):
        return text
    top = float(bounded_high(est, low, high))  # NaN where the bound is absurd (unbounded)
    # within 2 % of the interval's width of an edge (unbounded above: of the estimate, from the lower edge)
    width = top - float(low) if np.isfinite(top) else abs(float(est))
    if width > 0 and min(est - low, top - est if np.isfinite(top) else np.inf) <= 0.02 * width:
        text += " " + EDGE_NOTE  # an estimate on its interval's edge is said, not left for the reader to wonder
    return text


def table(df: pd.DataFrame, digits: int = 4, index: str | list | None = "model") -> pd.DataFrame:
    """A result table as a reader sees it: each interval in one column, rounded, as text.

    Columns ``x``, ``x_low``, ``x_high`` become one column ``x [95 %]`` reading ``est [low, high]``
    (:mod:`energykit.intervals`, the one column convention); numbers keep ``digits`` significant figures; NaN
    reads "n/a" (e.g. ``o*`` where θ4 is not identified); an infinite upper bound, or one more than
    :data:`energykit.fit.UNBOUNDED_FACTOR` times the estimate (or the lower bound), reads "unbounded"; underscores become spaces
    so that headers wrap. ``index`` columns (present ones) become the row labels.

    >>> t = table(pd.DataFrame({"model": ["a"], "o_star": [130.8], "o_star_low": [110.3],
    ...                         "o_star_high": [float("inf")], "n": [3]}))
    >>> t.to_dict("records")
    [{'o star [95 %]': '130.8 [110.3, unbounded]', 'n': '3'}]
    >>> _with_interval(0.0, 0.0, 3.015, 4), _with_interval(4.2, 3.4, 1.02e15, 4), _with_interval(2.3, 2.29, 4.98, 3)
    ('0 [0, 3.015] (at its edge: one-sided draws)', '4.2 [3.4, unbounded]', '2.3 [2.29, 4.98] (at its edge: one-sided draws)')
    """
    out = pd.DataFrame(index=df.index)
    pairs = {c: (f"{c}_low", f"{c}_high") for c in df.columns if f"{c}_low" in df and f"{c}_high" in df}
    bounds = {b for lo_hi in pairs.values() for b in lo_hi}
    for c in df.columns:
        if c in bounds:
            continue
        if c in pairs:
            lo, hi = pairs[c]
            out[f"{c} [95 %]"] = [_with_interval(e, a, b, digits) for e, a, b in zip(df[c], df[lo], df[hi])]
        else:
            out[c] = [fmt(v, digits) for v in df[c]]
    keys = [k for k in ([index] if isinstance(index, str) else (index or [])) if k in out.columns]
    if keys:
        out = out.set_index(keys)
    out.columns = [c.replace("_", " ") for c in out.columns]
    return out


def show(text: str, numbers: dict) -> None:
    """Display the key-results box in a notebook, with its numbers attached for the landing page."""
    # model and file names are data: no HTML of theirs reaches a page
    display(Markdown(escape_markdown(text)), metadata={"energykit_key_results": numbers})


def _engines(ds: xr.Dataset) -> list[tuple[type, dict]]:
    """The engine class (from the registry) and the versions it recorded, for each model's data; for data that
    recorded none, the engine its params name, else the engine that claims its label (a CSV's)."""
    versions = ds.attrs.get("engine_versions")
    found = [(ENGINES[v["engine"]], v) for v in (versions.values() if isinstance(versions, dict) else [])
             if isinstance(v, dict) and v.get("engine") in ENGINES]
    params = ds.attrs.get("params") if isinstance(ds.attrs.get("params"), dict) else {}
    if not found and params.get("engine") in ENGINES:
        found = [(ENGINES[params["engine"]], {"engine": params["engine"]})]
    owner = label_owner(str(ds.attrs.get("engine", ""))) if not found else None
    return found or ([owner] if owner else [])


def _attention(ds: xr.Dataset) -> str:
    """The attention kernel(s) the data ran, as their engines say (recorded, else the params', else the engine's
    default)."""
    params = ds.attrs.get("params") if isinstance(ds.attrs.get("params"), dict) else {}
    given = {"attention": params["attention"]} if params.get("attention") else {}
    found = sorted({cls.attention({**versions, **given} if not versions.get("attention") else versions)
                    for cls, versions in _engines(ds)})
    return ", ".join(found) if found else str(given.get("attention", "not recorded"))


def _paper_difference(ds: xr.Dataset) -> str:
    """Why the data's engines may differ from the paper, as they say it ("" if none)."""
    labels = dict.fromkeys(str(model_value(ds, m, "engine", ds.attrs.get("engine", ""))) for m in model_names(ds))
    reasons = [owner[0].paper_difference(label) for label in labels if (owner := label_owner(label))]
    return "; ".join(dict.fromkeys(r for r in reasons if r))


def _weights(ds: xr.Dataset) -> str:
    params = ds.attrs.get("params")
    if not isinstance(params, dict) or "models" not in params:
        return "not recorded"
    ckpt = [m for m in params["models"] if isinstance(m, dict) and m.get("checkpoint")]
    return "checkpoint" if ckpt else "random (energy depends on the geometry, not on weight values)"


def dataset_line(ds: xr.Dataset) -> str:
    """Where the data come from, in one line: file loaded, GPU, engine, attention, dtype, batch, weights.

    >>> ds = xr.Dataset(coords={"batch_size": [16]}, attrs={"gpu": "NVIDIA H200", "engine": "hf transformers-5.17.0 "
    ...                 "compiled", "dtype": "bfloat16", "loaded_from": "data/x.nc", "params": {"models": ["opt-1.3b"]}})
    >>> dataset_line(ds)  # doctest: +NORMALIZE_WHITESPACE
    "data `data/x.nc` · NVIDIA H200 · hf transformers-5.17.0 compiled · attention not recorded (transformers' default:
    sdpa) · bfloat16 · batch 16 · weights random (energy depends on the geometry, not on weight values)"
    """
    batch = sorted({int(b) for b in np.atleast_1d(ds["batch_size"].values)})
    loaded = ds.attrs.get("loaded_from") or ds.attrs.get("source", "")
    files = ", ".join(f"`{f.strip()}`" for f in str(loaded).split(",") if f.strip())
    return (f"data {files} · {ds.attrs.get('gpu', 'unknown GPU')} · {ds.attrs.get('engine', 'unknown engine')} · "
            f"attention {_attention(ds)} · {ds.attrs.get('dtype', 'dtype not recorded')} · batch "
            f"{', '.join(map(str, batch))} · weights {_weights(ds)}")


def fit_results(ds: xr.Dataset, fits: FitSet) -> tuple[str, dict]:
    """02_fit: MAPE and cross-validated MAPE of the analytical model and of the linear baseline."""
    s = fits.summary()
    mean_mape, mean_cv, mean_lin = s["mape_pct"].mean(), s["cv_mape_pct"].mean(), s["baseline_mape_pct"].mean()
    rows = "\n".join(f"| {r.model} | {r.mape_pct:.2f} % | {r.cv_mape_pct:.2f} % | {r.baseline_mape_pct:.2f} % |"
                     for r in s.itertuples())
    text = (f"### Key results\n\n{dataset_line(ds)}\n\n"
            f"The analytical model fits with a mean MAPE of **{mean_mape:.2f} %** (cross-validated "
            f"**{mean_cv:.2f} %**) against the paper's **{PAPER_MAPE_PCT} %**; the linear baseline "
            f"gives {mean_lin:.2f} %.\n\n| model | MAPE | CV MAPE | linear MAPE |\n|---|---|---|---|\n{rows}\n")
    return text, {"mape_pct": mean_mape, "cv_mape_pct": mean_cv, "baseline_mape_pct": mean_lin,
                  "paper_mape_pct": PAPER_MAPE_PCT, "mape_min_pct": float(s["mape_pct"].min()),
                  "mape_max_pct": float(s["mape_pct"].max()), "repeat_spread_pct": _median_spread_pct(ds),
                  "models": [str(m) for m in s["model"]], "source": source_line(ds)}


def _median_spread_pct(ds: xr.Dataset) -> float:
    """Median over cells of the repeats' spread of energy (std/mean) [%]; NaN with one repeat per cell."""
    try:
        means = cell_means(ds)
    except Exception:  # a long-tail (stacked) dataset has no grid of repeats to compare
        return float("nan")
    spread = (100 * means["energy_j_std"] / means["energy_j"]).values.ravel()
    spread = spread[np.isfinite(spread) & (spread > 0)]
    return float(np.median(spread)) if spread.size else float("nan")


def source_line(ds: xr.Dataset) -> str:
    """The data in a few words for the landing table: file(s), GPU, attention, batch.

    >>> source_line(xr.Dataset(coords={"batch_size": [16]}, attrs={"gpu": "NVIDIA H200", "loaded_from": "data/x.nc"}))
    'data/x.nc · NVIDIA H200 · attention not recorded · batch 16'
    """
    batch = sorted({int(b) for b in np.atleast_1d(ds["batch_size"].values)})
    loaded = ds.attrs.get("loaded_from") or ds.attrs.get("source", "")
    return (f"{', '.join(f.strip() for f in str(loaded).split(',') if f.strip())} · {ds.attrs.get('gpu', 'unknown GPU')}"
            f" · attention {_attention(ds)} · batch {', '.join(map(str, batch))}")


def sweetspot_results(ds: xr.Dataset, fits: FitSet, sweet_pct: float = 10.0) -> tuple[str, dict]:
    """03_sweetspots: best/worst ratio on the paper's grid (its cells named, measured or not), GQA vs MHA."""
    ratios = ratio_table(ds, fits)
    lines, numbers = [], {"paper_grid_best_worst": PAPER_BEST_WORST, "models": {}}
    cells = len(PAPER_GRID) ** 2
    for r in ratios.itertuples():
        lines.append(f"| {r.model} | {r.paper_grid_best_worst:.1f}x [{r.paper_grid_best_worst_low:.1f}, "
                     f"{r.paper_grid_best_worst_high:.1f}] | {r.paper_grid_best_cell} | {r.paper_grid_worst_cell} | "
                     f"{r.paper_grid_extrapolated_cells} of {cells} | {r.measured_best_worst:.1f}x "
                     f"({r.measured_best_cell} / {r.measured_worst_cell}) |")
        numbers["models"][r.model] = {"paper_grid_best_worst": r.paper_grid_best_worst,
                                      "measured_best_worst": r.measured_best_worst}
    verdict = _attention_verdict(ds, fits)
    top = max(ratios["paper_grid_best_worst"]) if len(ratios) else float("nan")
    numbers["best_worst"] = float(top)
    if len(ratios):
        row = ratios.loc[ratios["paper_grid_best_worst"].idxmax()]
        numbers.update(best_worst_low=float(row["paper_grid_best_worst_low"]),
                       best_worst_high=float(row["paper_grid_best_worst_high"]), best_worst_model=str(row["model"]),
                       best_worst_extrapolated_cells=int(row["paper_grid_extrapolated_cells"]), paper_grid_cells=cells)
    numbers["gqa_vs_mha"] = _attention_numbers(ds, fits)
    numbers["paper_difference"] = _paper_difference(ds)
    numbers["source"] = source_line(ds)
    outs = sorted({int(v) for m, b in fits.keys for v in fits.get(m, b).output_len})
    ins = sorted({int(v) for m, b in fits.keys for v in fits.get(m, b).input_len})
    off_grid = sorted({x for x in outs + ins if x < PAPER_GRID[0] or x > PAPER_GRID[-1]})
    note = (f" The measured cells include lengths outside the paper's grid ({', '.join(map(str, off_grid))}), so "
            "their ratio is not comparable with the paper's." if off_grid else "")
    text = (f"### Key results\n\n{dataset_line(ds)}\n\n"
            f"Best/worst efficiency on the paper's {PAPER_GRID[0]}–{PAPER_GRID[-1]} grid ({cells} cells, fitted): up to "
            f"**{top:.1f}x** (paper: **{PAPER_BEST_WORST}x**). Brackets: 95 % interval over θ's bootstrap only; "
            f"cells outside the measured range are extrapolated.{note}\n\n"
            "| model | best/worst, paper grid [95 %] | best cell | worst cell | cells extrapolated | "
            "best/worst, measured cells (best / worst) |\n|---|---|---|---|---|---|\n" + "\n".join(lines)
            + f"\n\n{verdict}\n")
    return text, numbers


def _attention_groups(ds: xr.Dataset, fits: FitSet) -> list[tuple[str, str, dict]]:
    """Per engine that measured both GQA and MHA: (its verdict text, "above"/"below"/"mixed against"/"", gmeans)."""
    kinds, engines = {}, {}
    for m, b in fits.keys:
        nq, nkv = model_value(ds, m, "num_heads"), model_value(ds, m, "num_kv_heads")
        if nq is None or nkv is None or nq != nq or nkv != nkv:
            continue
        kinds[m] = attention_kind(int(nq), int(nkv))
        engines[m] = str(model_value(ds, m, "engine", ds.attrs.get("engine", "")))
    groups = {e: [m for m in kinds if engines[m] == e] for e in dict.fromkeys(engines.values())}
    groups = {e: ms for e, ms in groups.items() if len({kinds[m] for m in ms}) == 2}
    return [_attention_group(ds, fits, {m: kinds[m] for m in ms}, e, len(groups) > 1) for e, ms in groups.items()]


def _attention_verdict(ds: xr.Dataset, fits: FitSet) -> str:
    """GQA vs MHA, per engine: efficiency at matched measured cells first, θ2 as the mechanism, other differences named."""
    groups = _attention_groups(ds, fits)
    if not groups:
        return ("GQA vs MHA: no engine here measured both attention kinds, so no comparison (models measured "
                "with different engines are not compared).")
    return "\n\n".join(text for text, _, _ in groups)


def _attention_numbers(ds: xr.Dataset, fits: FitSet) -> dict:
    """GQA vs MHA for the landing table, from the first engine that measured both kinds: ``{"verdict": "above" |
    "below" | "mixed against" | "" (no comparison), "gmean": {model: geometric-mean tokens/J}, "kinds": {model: kind}}``."""
    groups = _attention_groups(ds, fits)
    if not groups:
        return {"verdict": "", "gmean": {}, "kinds": {}}
    _, verdict, numbers = groups[0]
    return {"verdict": verdict, **numbers}


def _attention_group(ds: xr.Dataset, fits: FitSet, kinds: dict, engine: str, name_engine: bool) -> tuple[str, str, dict]:
    gqa = [m for m, k in kinds.items() if k != "MHA"]
    mha = [m for m, k in kinds.items() if k == "MHA"]
    where = f" ({engine})" if name_engine else ""
    # efficiency at the cells measured for every compared model (geometric mean of tokens/J)
    tpj = measured_map(ds)["tokens_per_j"].sel(model=gqa + mha)
    tpj = tpj.isel(batch_size=0) if "batch_size" in tpj.dims else tpj
    common = tpj.notnull().all("model")
    n_common = int(common.sum())
    if n_common == 0:
        return (f"GQA vs MHA{where}: no cell was measured for every model, so efficiency cannot be compared at matched "
                "lengths.", "", {"gmean": {}, "kinds": kinds})
    gmean = {m: float(np.exp(np.log(tpj.sel(model=m).where(common)).mean())) for m in gqa + mha}
    ahead = all(gmean[g] > gmean[h] for g in gqa for h in mha)
    behind = all(gmean[g] < gmean[h] for g in gqa for h in mha)
    verdict = "above" if ahead else "below" if behind else "mixed against"
    paper = "as in the paper" if ahead else "unlike the paper (GQA above MHA)"
    eff = ", ".join(f"{m} {gmean[m]:.2f}" for m in gqa + mha)
    th = {m: fits.get(m).params["theta2"] for m in kinds}
    lower = all(th[g] <= th[h] for g in gqa for h in mha)
    others = "; ".join(
        f"{m}: {model_value(ds, m, 'num_layers')} layers, vocabulary {model_value(ds, m, 'vocab_size')}, "
        f"{float(model_value(ds, m, 'params') or float('nan')) / 1e9:.2f} B parameters" for m in gqa + mha)
    caveat = engine_caveat(engine)
    return (f"GQA vs MHA{where}: at the {n_common} cells (i, o) measured for every model, GQA ({', '.join(gqa)}) is "
            f"**{verdict}** MHA ({', '.join(mha)}) in efficiency — {paper} (geometric mean tokens/J: {eff}). "
            f"Mechanism: θ2 (KV reads per i·o) is {'lower' if lower else 'not lower'} for GQA. The models differ in "
            f"more than attention ({others}), so the gap is not attention's alone." + caveat,
            verdict, {"gmean": gmean, "kinds": kinds, "cells": n_common})


def workload_results(fit: ModelFit, summaries: dict[str, dict], savings: dict[str, pd.DataFrame],
                     ds: xr.Dataset | None = None) -> tuple[str, dict]:
    """04_workloads: energy per request and per token, share outside the measured grid, policy savings.

    ``summaries`` and ``savings`` are each trace's :func:`~energykit.workloads.trace_summary` and
    :func:`~energykit.workloads.policy_savings`, computed once by the page and shown again in its tables.
    """
    lines, numbers = [], {}
    for name, s in summaries.items():
        out = s["extrapolated_pct"]
        sav = savings[name]
        best = sav.loc[sav["per_token_saving_pct"].idxmax()]
        lines.append(f"| {name} | {s['mean_energy_per_request_j']:.1f} J | {1 / s['tokens_per_j']:.3f} J | "
                     f"{out:.0f} % | {best['policy']}: {best['saving_pct']:+.1f} % total, "
                     f"{best['per_token_saving_pct']:+.1f} % per token [{best['per_token_saving_pct_low']:+.1f}, "
                     f"{best['per_token_saving_pct_high']:+.1f}] ({best['extrapolated_pct']:.0f} % of requests "
                     "extrapolated) |")
        numbers[name] = {"energy_per_request_j": s["mean_energy_per_request_j"], "outside_grid_pct": out,
                         "best_policy": best["policy"], "saving_pct": best["saving_pct"],
                         "per_token_saving_pct": best["per_token_saving_pct"],
                         "per_token_saving_pct_low": float(best["per_token_saving_pct_low"]),
                         "per_token_saving_pct_high": float(best["per_token_saving_pct_high"]),
                         "extrapolated_pct": float(best["extrapolated_pct"])}
    err = next(iter(savings.values()))["extrapolation_error_pct"].iloc[0] if savings else float("nan")
    numbers["source"] = (f"{fit.model} (batch {fit.batch_size}) pricing the Azure 2023 traces {', '.join(summaries)}"
                         + (f" · {source_line(ds)}" if ds is not None else ""))
    text = ("### Key results\n\n" + (f"{dataset_line(ds)}\n\n" if ds is not None else "") +
            "Priced with " + fit.model + f" at batch {fit.batch_size}.\n\n"
            "| trace | energy per request | per delivered token | outside the measured grid | best policy per "
            "delivered token (saving) |\n|---|---|---|---|---|\n" + "\n".join(lines) +
            "\n\nA saving in total energy is not a saving per delivered token: a cap saves energy by "
            "delivering fewer tokens. Savings are positive when energy falls, here and in the page's tables. "
            "Brackets: 95 % interval over θ's bootstrap, widened so that every request outside the measured grid "
            f"(extrapolated) may cost ±{err:.0f} % more or less (the fit's worst cross-validated cell error).\n")
    return text, numbers


def planning_results(lomo: pd.DataFrame, ds: xr.Dataset | None = None) -> tuple[str, dict]:
    """05_planning: how far a prediction from geometry alone can be trusted (``ds``: the calibration data)."""
    head = "### Key results\n\n" + (f"{dataset_line(ds)}\n\n" if ds is not None else "")
    if lomo.empty:
        return (head + "Only one calibration model: the transfer to an unmeasured geometry cannot be "
                "checked; treat predictions as unvalidated.\n", {})
    worst = float(lomo["mape_pct"].max())
    worst_cell = float(lomo["max_ape_pct"].max()) if "max_ape_pct" in lomo else float("nan")
    words = ("trustworthy for planning (within 10 %)" if worst <= 10 else
             "a rough guide only (errors of tens of percent)" if worst <= 50 else "not to be trusted yet")
    has_max = "max_ape_pct" in lomo
    rows = "\n".join(f"| {r.model} | {r.calibrated_on} | {r.mape_pct:.1f} % |"
                     + (f" {r.max_ape_pct:.1f} % |" if has_max else "") for r in lomo.itertuples())
    text = (head + f"Predicting a held-out model from its geometry misses by a mean of up to **{worst:.0f} %** per "
            f"model (leave-one-model-out MAPE)" + (f", and by up to **{worst_cell:.0f} %** in its worst cell" if has_max
                                                    else "") +
            f": predictions are **{words}** with these calibration models. Each predicted interval of "
            f"05_planning is widened by ±{worst:.0f} % for this transfer error.\n\n"
            f"| predicted | calibrated on | mean error (MAPE) |" + (" max error |" if has_max else "") + "\n|---|---|---|"
            + ("---|" if has_max else "") + f"\n{rows}\n")
    return text, {"lomo_max_mape_pct": worst, "lomo_max_cell_ape_pct": worst_cell}


def batching_results(ds: xr.Dataset, rows: pd.DataFrame, sat: pd.DataFrame, simulated: bool,
                     drop_pct: float = 5.0, calibrated_from: str = "") -> tuple[str, dict]:
    """06_batching: how well E(i, o, B) explains each batch size, and where energy per token stops falling.

    ``rows``: one row per (model, batch_size) with ``mape_pct`` and ``leave_this_batch_out_mape_pct``;
    ``sat``: :func:`energykit.sweetspots.saturation_table` rows with a ``model`` column; ``calibrated_from``:
    the data file whose hardware coefficients drove the simulation (it may differ from ``ds``'s files).
    """
    head = "### Key results\n\n" + f"{dataset_line(ds)}\n\n"
    if rows.empty:
        return head + "No model was measured at more than one batch size.\n", {}
    if simulated:
        source = f" with the hardware coefficients calibrated on `{calibrated_from}`" if calibrated_from else ""
        head += ("**Simulated only**: no measured data at several batch sizes exist yet; every number here comes "
                 f"from windows simulated from the per-step physics{source}, to show what the analysis will "
                 "report.\n\n")
    mape, lobo = float(rows["mape_pct"].max()), float(rows["leave_this_batch_out_mape_pct"].max())
    lo, hi = float(sat["saturation_batch"].min()), float(sat["saturation_batch"].max())
    text = (head + f"The batch-aware model fits every batch size within a max MAPE of **{mape:.1f} %**; predicting a "
            f"batch size it never saw (leave one batch size out) misses by at most **{lobo:.1f} %** (MAPE). "
            f"Energy per output token stops falling by more than {drop_pct:g} % per doubling of the batch beyond "
            f"B ≈ **{lo:.0f}–{hi:.0f}** at the reference cells (estimates; their 95 % intervals over θ's bootstrap "
            "are in 06_batching's saturation table).\n")
    return text, {"batch_max_mape_pct": mape, "batch_max_lobo_mape_pct": lobo,
                  "saturation_batch_min": lo, "saturation_batch_max": hi, "simulated": simulated}




def replay_results(whole: dict, totals: dict, simulated: bool, source: str, recovery_pct: float | None = None,
                   window_s: float = 10.0, reconstruction_pct: float | None = None) -> tuple[str, dict]:
    """07_replay: predicted vs measured energy of a replayed stream, and what each request was attributed.

    ``whole``, ``totals``: :func:`energykit.replay.predict`'s totals and :func:`energykit.replay.attribute`'s;
    ``source``: one line on where the replay and its fit come from; ``recovery_pct``: on a simulated
    replay, the largest error of the attribution against the simulator's known per-request energies;
    ``reconstruction_pct``: the same for the model's energy of each request before scaling to the
    (noisy) meter, i.e. the error of the occupancy reconstruction alone.
    """
    head = "### Key results\n\n"
    if simulated:
        head += ("## SIMULATED REPLAY — not a measurement\n\nNo replay has been measured on a GPU yet: every number "
                 f"below comes from a stream simulated by a continuous-batching simulator. {source}.\n\n")
    else:
        head += f"Measured replay: {source}.\n\n"
    band = _with_interval(whole["predicted_j"], whole["predicted_j_low"], whole["predicted_j_high"])
    text = (head + f"**{totals['requests']} requests** in {totals['busy_periods']} busy period(s) over "
            f"{whole['duration_s']:.0f} s: measured **{whole['measured_j']:.0f} J**, predicted from E(i, o, B) "
            f"**{band} J** ({whole['error_pct']:+.1f} %; per {window_s:g} s window in the figure below). "
            f"Busy energy {totals['measured_busy_j']:.0f} J is attributed to the requests (the attributions sum to it); "
            f"its residual against the model is {totals['residual_j']:+.0f} J ({totals['residual_pct']:+.1f} %), "
            f"idle over gaps {totals['idle_gap_j'] + totals['idle_empty_windows_j']:.0f} J, and "
            f"{totals['unattributed_j']:.0f} J above idle fell in windows with no request.")
    if totals.get("invalid_windows"):
        text += (f" **{totals['invalid_windows']} meter window(s) could not be measured**: the totals leave them out "
                 f"and the attribution uses the model's {totals['modelled_invalid_j']:.0f} J for them.")
    numbers = {"replay_measured_j": whole["measured_j"], "replay_predicted_j": whole["predicted_j"],
               "replay_error_pct": whole["error_pct"], "replay_residual_pct": totals["residual_pct"],
               "replay_requests": totals["requests"], "simulated": simulated}
    if "mean_abs_shapley_diff_pct" in totals:
        text += (f" Shapley values differ from the equal split by {totals['mean_abs_shapley_diff_pct']:.1f} % on average "
                 f"(at most {totals['max_abs_shapley_diff_pct']:.1f} %; {', '.join(totals['shapley_methods'])}).")
        numbers["shapley_mean_abs_diff_pct"] = totals["mean_abs_shapley_diff_pct"]
    if recovery_pct is not None:
        text += (f" The simulator knows each request's true energy: the attribution recovers it within "
                 f"**{recovery_pct:.2f} %** (largest error).")
        numbers["recovery_max_error_pct"] = recovery_pct
        if reconstruction_pct is not None:
            text += (f" Before scaling to the simulated meter's noisy windows, the model's energy per request from the "
                     f"reconstructed occupancy is within **{reconstruction_pct:.2f} %**: the rest is meter noise, "
                     "which weighs most on short busy periods between idle windows.")
            numbers["reconstruction_max_error_pct"] = reconstruction_pct
    return text + "\n", numbers
