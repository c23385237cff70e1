"""Key results of each report page, beside the paper's, as a short Markdown box and as numbers.

Every page opens with its answer (:func:`show`); the numbers also travel in the executed notebook
(display metadata ``energykit_key_results``), from which :mod:`energykit.report` builds the
landing page. The paper's figures (Pizzini Cavagna et al., arXiv:2602.05695) are TensorRT-LLM on
an H100 over 13 models: mean MAPE 1.79 %, best/worst efficiency up to 33.41x, GQA above MHA.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import xarray as xr
from IPython.display import Markdown, display

from .dataset import model_value
from .engines import caveat as engine_caveat
from .fitting import FitSet, ModelFit
from .intervals import fmt
from .intervals import format_interval as _with_interval
from .sweetspots import PAPER_GRID, attention_kind, fitted_map, ratio_table

__all__ = ["PAPER_MAPE_PCT", "PAPER_BEST_WORST", "fmt", "table", "show", "fit_results", "sweetspot_results", "workload_results",
           "planning_results", "dataset_line"]

PAPER_MAPE_PCT = 1.79
"""Mean MAPE of the analytical model over the paper's 13 models [%]."""
PAPER_BEST_WORST = 33.41
"""The paper's largest best/worst efficiency ratio on its 64–4096 grid."""



def table(df: pd.DataFrame, digits: int = 4, index: str | list | None = "model") -> pd.DataFrame:
    """A result table as a reader sees it: each interval in one column, rounded, as text.

    Columns ``x``, ``x_low``, ``x_high`` become one column ``x [95 %]`` reading ``est [low, high]``
    (:mod:`energykit.intervals`, the one column convention); numbers keep ``digits`` significant figures; NaN
    reads "n/a" (e.g. ``o*`` where θ4 is not identified); an infinite upper bound, or one more than
    :data:`energykit.fitting.UNBOUNDED_FACTOR` times the estimate (or the lower bound), reads "unbounded"; underscores become spaces
    so that headers wrap. ``index`` columns (present ones) become the row labels.

    >>> t = table(pd.DataFrame({"model": ["a"], "o_star": [130.8], "o_star_low": [110.3],
    ...                         "o_star_high": [float("inf")], "n": [3]}))
    >>> t.to_dict("records")
    [{'o star [95 %]': '130.8 [110.3, unbounded]', 'n': '3'}]
    >>> _with_interval(0.0, 0.0, 3.015, 4), _with_interval(4.2, 3.4, 1.02e15, 4)
    ('0 [0, 3.015]', '4.2 [3.4, unbounded]')
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
    display(Markdown(text), metadata={"energykit_key_results": numbers})


def dataset_line(ds: xr.Dataset) -> str:
    """One line on where the data come from: GPU, engine, batch sizes, source."""
    batch = sorted({int(b) for b in np.atleast_1d(ds["batch_size"].values)})
    return (f"{ds.attrs.get('gpu', 'unknown GPU')} · {ds.attrs.get('engine', 'unknown engine')} · batch "
            f"{', '.join(map(str, batch))} · {ds.attrs.get('source', '')}")


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
                  "paper_mape_pct": PAPER_MAPE_PCT}


def sweetspot_results(ds: xr.Dataset, fits: FitSet, sweet_pct: float = 10.0) -> tuple[str, dict]:
    """03_sweetspots: best/worst ratio on the paper's grid, where the sweet spot is, GQA vs MHA."""
    ratios = ratio_table(ds, fits)
    lines, numbers = [], {"paper_best_worst": PAPER_BEST_WORST, "models": {}}
    for r in ratios.itertuples():
        fm = fitted_map(fits.get(r.model, r.batch_size))
        t = fm["tokens_per_j"]
        best = t.where(t == t.max(), drop=True)
        lines.append(f"| {r.model} | {r.paper_grid_best_worst:.1f}x [{r.paper_grid_best_worst_low:.1f}, "
                     f"{r.paper_grid_best_worst_high:.1f}] | i={int(best.input_len[0])}, o={int(best.output_len[0])} | "
                     f"{r.measured_best_worst:.1f}x |")
        numbers["models"][r.model] = {"paper_grid_best_worst": r.paper_grid_best_worst,
                                      "measured_best_worst": r.measured_best_worst}
    verdict = _attention_verdict(ds, fits)
    top = max(ratios["paper_grid_best_worst"]) if len(ratios) else float("nan")
    numbers["best_worst"] = float(top)
    text = (f"### Key results\n\n{dataset_line(ds)}\n\n"
            f"Best/worst efficiency on the paper's {PAPER_GRID[0]}–{PAPER_GRID[-1]} grid: up to **{top:.1f}x** "
            f"(paper: **{PAPER_BEST_WORST}x**).\n\n| model | best/worst, paper grid [95 %] | best cell | "
            f"best/worst, measured cells |\n|---|---|---|---|\n" + "\n".join(lines) + f"\n\n{verdict}\n")
    return text, numbers


def _attention_verdict(ds: xr.Dataset, fits: FitSet) -> str:
    kinds = {}
    for m, b in fits.keys:
        nq, nkv = model_value(ds, m, "num_heads"), model_value(ds, m, "num_kv_heads")
        if nq is None or nkv is None or nq != nq or nkv != nkv:
            continue
        kinds[m] = attention_kind(int(nq), int(nkv))
    if len(set(kinds.values())) < 2:
        return "GQA vs MHA: the data hold only one attention kind, so no comparison here."
    caveat = engine_caveat(str(ds.attrs.get("engine", "")))
    th = {m: fits.get(m).params["theta2"] for m in kinds}
    gqa = [m for m, k in kinds.items() if k != "MHA"]
    mha = [m for m, k in kinds.items() if k == "MHA"]
    wins = all(th[g] <= th[h] for g in gqa for h in mha)
    return (f"GQA vs MHA: θ2 (KV reads per i·o) is {'lower' if wins else 'not lower'} for GQA "
            f"({', '.join(gqa)}) than for MHA ({', '.join(mha)}) — {'as' if wins else 'unlike'} the paper."
            + caveat)


def workload_results(fit: ModelFit, summaries: dict[str, dict], savings: dict[str, pd.DataFrame]) -> tuple[str, dict]:
    """04_workloads: energy per request and per token, share outside the measured grid, policy savings.

    ``summaries`` and ``savings`` are each trace's :func:`~energykit.workloads.trace_summary` and
    :func:`~energykit.workloads.policy_savings`, computed once by the page and shown again in its tables.
    """
    lines, numbers = [], {}
    for name, s in summaries.items():
        out = s["extrapolated_pct"]
        sav = savings[name]
        best = sav.loc[sav["energy_per_token_change_pct"].idxmin()]
        lines.append(f"| {name} | {s['mean_energy_per_request_j']:.1f} J | {1 / s['tokens_per_j']:.3f} J | "
                     f"{out:.0f} % | {best['policy']}: {best['saving_pct']:+.1f} % total, "
                     f"{-best['energy_per_token_change_pct']:+.1f} % per token |")
        numbers[name] = {"energy_per_request_j": s["mean_energy_per_request_j"], "outside_grid_pct": out,
                         "best_policy": best["policy"], "saving_pct": best["saving_pct"],
                         "per_token_saving_pct": -best["energy_per_token_change_pct"]}
    text = ("### Key results\n\nPriced with " + fit.model + f" at batch {fit.batch_size}.\n\n"
            "| trace | energy per request | per delivered token | outside the measured grid | best policy per "
            "delivered token (saving) |\n|---|---|---|---|---|\n" + "\n".join(lines) +
            "\n\nA saving in total energy is not a saving per delivered token: a cap saves energy by "
            "delivering fewer tokens. Requests outside the measured grid are extrapolated.\n")
    return text, numbers


def planning_results(lomo: pd.DataFrame) -> tuple[str, dict]:
    """05_planning: how far a prediction from geometry alone can be trusted."""
    if lomo.empty:
        return ("### Key results\n\nOnly one calibration model: the transfer to an unmeasured geometry cannot be "
                "checked; treat predictions as unvalidated.\n", {})
    worst = float(lomo["mape_pct"].max())
    words = ("trustworthy for planning (within 10 %)" if worst <= 10 else
             "a rough guide only (errors of tens of percent)" if worst <= 50 else "not to be trusted yet")
    rows = "\n".join(f"| {r.model} | {r.calibrated_on} | {r.mape_pct:.1f} % |" for r in lomo.itertuples())
    text = (f"### Key results\n\nPredicting a held-out model from its geometry misses by up to **{worst:.0f} %** "
            f"(leave-one-model-out MAPE): predictions are **{words}** with these calibration models.\n\n"
            f"| predicted | calibrated on | MAPE |\n|---|---|---|\n{rows}\n")
    return text, {"lomo_max_mape_pct": worst}
