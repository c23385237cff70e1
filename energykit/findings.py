"""The landing page's first table: each of the paper's findings (:mod:`energykit.paper`) beside the kit's, with
the data it came from and a verdict with its reason.

It reads only the key-result numbers the pages recorded (:func:`energykit.summary.show`), so that the table is
built from the executed notebooks without refitting anything.
"""

from __future__ import annotations

import numpy as np

from . import paper

__all__ = ["REPRODUCED_MAPE_PCT", "PAPER_GQA", "PAPER_WORKLOAD", "GRID_FINDING", "paper_findings"]

PAPER_MAPE_PCT = paper.MAPE_PCT
PAPER_BEST_WORST = paper.BEST_WORST
PAPER_GRID = paper.GRID
REPRODUCED_MAPE_PCT = 3.0
"""A mean MAPE up to this [%] counts as reproducing the paper's (:data:`energykit.paper.MAPE_PCT`; the kit's goal
on held-out cells)."""
PAPER_GQA = paper.GQA_FINDING
PAPER_WORKLOAD = paper.WORKLOAD_FINDING
GRID_FINDING = f"best/worst efficiency on the {PAPER_GRID[0]}–{PAPER_GRID[-1]} grid"


def _pct(x) -> str:
    return "n/a" if x is None or not np.isfinite(x) else f"{x:.2f} %"


def paper_findings(pages: dict[str, dict]) -> list[dict]:
    """The landing page's table: each of the paper's findings, its value, the kit's with its interval, the data,
    and a verdict with its reason.

    ``pages``: the key-result numbers of each rendered page by stem (``{"02_fit": {...}, "03_sweetspots": ...}``),
    as :func:`energykit.summary.fit_results`, :func:`~energykit.summary.sweetspot_results` and
    :func:`~energykit.summary.workload_results` return them. Each row is
    ``{"finding", "paper", "kit", "data", "verdict", "why", "page"}``; verdict is ``reproduced``, ``differs`` or
    ``not yet``; a page not rendered gives ``not yet`` and says so.

    >>> rows = paper_findings({"02_fit": {"mape_pct": 0.82, "cv_mape_pct": 1.74, "mape_min_pct": 0.59,
    ...     "mape_max_pct": 1.06, "repeat_spread_pct": 1.0, "source": "data/x.nc"}})
    >>> rows[0]["verdict"], rows[0]["kit"], rows[1]["verdict"]
    ('reproduced', '0.82 % (per model 0.59–1.06 %; cross-validated 1.74 %)', 'not yet')
    """
    fit, sweet, work = pages.get("02_fit") or {}, pages.get("03_sweetspots") or {}, pages.get("04_workloads") or {}
    rows = []
    if fit:
        mape, spread = fit.get("mape_pct", float("nan")), fit.get("repeat_spread_pct", float("nan"))
        ok = np.isfinite(mape) and mape <= REPRODUCED_MAPE_PCT
        why = (f"within {REPRODUCED_MAPE_PCT:g} % over {len(fit.get('models', [])) or 'the'} model(s)" if ok else
               f"repeats spread {spread:.1f} % (median over cells): the noise sets the floor" if np.isfinite(spread)
               and spread > REPRODUCED_MAPE_PCT / 2 else "the model misses the data's shape: see 02_fit's residuals")
        rows.append(dict(finding="mean MAPE of the analytical model", paper=f"{PAPER_MAPE_PCT} % ({paper.MODELS} models)",
                         kit=f"{_pct(mape)} (per model {fit.get('mape_min_pct', float('nan')):.2f}–"
                             f"{fit.get('mape_max_pct', float('nan')):.2f} %; cross-validated "
                             f"{_pct(fit.get('cv_mape_pct'))})",
                         data=fit.get("source", ""), verdict="reproduced" if ok else "differs", why=why, page="02_fit"))
    else:
        rows.append(dict(finding="mean MAPE of the analytical model", paper=f"{PAPER_MAPE_PCT} % ({paper.MODELS} models)", kit="–",
                         data="", verdict="not yet", why="02_fit was not rendered in this set", page="02_fit"))
    differ = str(sweet.get("paper_difference") or "")  # the engine's own reason (Engine.paper_difference)
    if sweet.get("best_worst") is not None and np.isfinite(sweet.get("best_worst", float("nan"))):
        top, lo, hi = sweet["best_worst"], sweet.get("best_worst_low", np.nan), sweet.get("best_worst_high", np.nan)
        extra, cells = sweet.get("best_worst_extrapolated_cells", 0), sweet.get("paper_grid_cells", len(PAPER_GRID) ** 2)
        inside = np.isfinite(lo) and np.isfinite(hi) and lo <= PAPER_BEST_WORST <= hi
        verdict = "reproduced" if inside else "differs" if differ or not extra else "not yet"
        why = "; ".join(x for x in [differ if differ and not inside else "",
                                    f"{extra} of {cells} grid cells extrapolated past the measured lengths" if extra else
                                    "every grid cell measured", f"largest for {sweet.get('best_worst_model', '?')}"] if x)
        rows.append(dict(finding=GRID_FINDING, paper=f"up to {PAPER_BEST_WORST}x",
                         kit=f"{top:.1f}x [{lo:.1f}, {hi:.1f}]", data=sweet.get("source", ""), verdict=verdict, why=why,
                         page="03_sweetspots"))
        gq = sweet.get("gqa_vs_mha") or {}
        v = gq.get("verdict", "")
        if v:
            eff = ", ".join(f"{m} ({gq.get('kinds', {}).get(m, '?')}) {t:.2f}" for m, t in gq.get("gmean", {}).items())
            why = ("as the paper" if v == "above" else differ if differ else
                   "the models differ in more than attention (layers, vocabulary, size)")
            rows.append(dict(finding="GQA vs MHA efficiency", paper=PAPER_GQA,
                             kit=f"GQA {v} MHA; tokens/J (geometric mean over {gq.get('cells', '?')} shared cells): {eff}",
                             data=sweet.get("source", ""), verdict="reproduced" if v == "above" else "differs", why=why,
                             page="03_sweetspots"))
        else:
            rows.append(dict(finding="GQA vs MHA efficiency", paper=PAPER_GQA, kit="–", data=sweet.get("source", ""),
                             verdict="not yet", why="needs a GQA and an MHA model measured with one engine",
                             page="03_sweetspots"))
    else:
        for finding, published in ((GRID_FINDING, f"up to {PAPER_BEST_WORST}x"),
                                   ("GQA vs MHA efficiency", PAPER_GQA)):
            rows.append(dict(finding=finding, paper=published, kit="–", data="", verdict="not yet",
                             why="03_sweetspots was not rendered in this set", page="03_sweetspots"))
    traces = {k: v for k, v in work.items() if isinstance(v, dict) and "per_token_saving_pct" in v}
    if traces:
        kit = "; ".join(f"{k}: {v['best_policy']} {v['per_token_saving_pct']:+.1f} % per token "
                        f"[{v.get('per_token_saving_pct_low', np.nan):+.1f}, {v.get('per_token_saving_pct_high', np.nan):+.1f}]"
                        f" ({v['saving_pct']:+.1f} % total)" for k, v in traces.items())
        far = max(v.get("extrapolated_pct", 0.0) for v in traces.values())
        rows.append(dict(finding="saving on a production workload", paper=PAPER_WORKLOAD, kit=kit,
                         data=work.get("source", "Azure LLM inference traces 2023"), verdict="kit only",
                         why=f"the paper gives no trace-level figure; up to {far:.0f} % of a policy's requests lie "
                             "outside the measured grid (extrapolated)", page="04_workloads"))
    else:
        rows.append(dict(finding="saving on a production workload", paper=PAPER_WORKLOAD, kit="–", data="",
                         verdict="not yet", why="04_workloads was not rendered in this set", page="04_workloads"))
    return rows
