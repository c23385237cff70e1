"""Efficiency maps and sweet spots of the SweetSpot model.

Efficiency is output tokens per joule, :math:`\\eta = B o / E(i, o)`, and its inverse is the energy
per output token :math:`e = E / (B o)`. For a fixed input length the energy per output token

.. math::

    \\frac{E}{B o} = \\frac{1}{B}\\left(\\frac{\\theta_1 i^2 + \\theta_3 i + \\theta_0}{o}
                    + \\theta_4 o + \\theta_2 i + \\theta_5\\right)

is minimised at :math:`o^*(i) = \\sqrt{(\\theta_1 i^2 + \\theta_3 i + \\theta_0) / \\theta_4}`: short
outputs cannot amortise the prefill and fixed cost, long outputs pay growing KV-cache reads.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import xarray as xr
from scipy.optimize import minimize_scalar

from .dataset import cell_means
from .errors import FitError
from .fit import FitSet, ModelFit, predict_energy
from .model import SWEETSPOT, energy_per_token_j, tokens_per_j
from .uncertainty import apply, o_star_interval, theta_table
from .paper import GRID

__all__ = ["PAPER_GRID", "tokens_per_j", "energy_per_token_j", "measured_map", "fitted_map", "extrapolated",
           "o_star_numeric", "batch_table", "saturation_table", "sweet_region", "best_worst_ratio", "best_cell",
           "worst_cell", "o_star_table", "ratio_table",
           "region_probability", "attention_kind", "attention_table"]

PAPER_GRID = GRID
"""Input and output lengths of the paper's grid [tokens] (:data:`energykit.paper.GRID`)."""


def measured_map(ds: xr.Dataset) -> xr.Dataset:
    """Measured efficiency over (model, batch_size, input_len, output_len) from repeat means.

    Returns ``tokens_per_j`` [tokens/J], ``energy_per_token_j`` [J/token] and ``energy_j`` [J].
    """
    means = cell_means(ds)
    E = means["energy_j"].where(means["energy_j"] > 0)
    out = xr.Dataset(
        {
            "energy_j": E,
            "tokens_per_j": tokens_per_j(E, E["batch_size"], E["output_len"]),
            "energy_per_token_j": energy_per_token_j(E, E["batch_size"], E["output_len"]),
        }
    )
    out["energy_j"].attrs["units"] = "J"
    out["tokens_per_j"].attrs["units"] = "tokens/J"
    out["energy_per_token_j"].attrs["units"] = "J/token"
    return out


def fitted_map(fit: ModelFit, input_lens=PAPER_GRID, output_lens=PAPER_GRID, n_draws: int = 200,
               batch_size: int | None = None) -> xr.Dataset:
    """Fitted efficiency on a grid of lengths, with 95 % intervals and an ``extrapolated`` flag.

    A cell is extrapolated when either length lies outside the range that the fit was measured on.
    ``tokens_per_j_low``/``_high`` come from the bootstrap of :mod:`energykit.uncertainty`.
    ``batch_size`` [requests]: the batch of a batch-aware fit's map (default: the fit's own).
    """
    b = fit.batch_size if batch_size is None else batch_size
    if b is None:
        raise FitError(f"the {fit.kind} fit of {fit.model} takes the batch size as a variable; give batch_size=B")
    vb = b if fit.energy_model.has_batch else None
    i = xr.DataArray(np.asarray(input_lens, dtype=int), dims="input_len", name="input_len")
    o = xr.DataArray(np.asarray(output_lens, dtype=int), dims="output_len", name="output_len")
    i = i.assign_coords(input_len=i.values)
    o = o.assign_coords(output_len=o.values)
    E = fit.predict(i, o, vb)
    ii, oo = xr.broadcast(i, o)
    _, lo, hi = fit.predict_interval(ii.values.ravel(), oo.values.ravel(), n_draws, batch_size=vb)
    e_lo = xr.DataArray(lo.reshape(ii.shape), coords=ii.coords, dims=ii.dims)
    e_hi = xr.DataArray(hi.reshape(ii.shape), coords=ii.coords, dims=ii.dims)
    out = xr.Dataset(
        {
            "energy_j": E,
            "energy_j_low": e_lo,
            "energy_j_high": e_hi,
            "tokens_per_j": tokens_per_j(E, b, o),
            "tokens_per_j_low": tokens_per_j(e_hi, b, o),
            "tokens_per_j_high": tokens_per_j(e_lo, b, o),
            "energy_per_token_j": energy_per_token_j(E, b, o),
            "extrapolated": extrapolated(fit, i, o) | (b < min(fit.batch_sizes)) | (b > max(fit.batch_sizes)),
        }
    )
    out["energy_j"].attrs["units"] = "J"
    out["tokens_per_j"].attrs["units"] = "tokens/J"
    out["energy_per_token_j"].attrs["units"] = "J/token"
    out.attrs.update(model=fit.model, batch_size=b)
    return out


def batch_table(fit: ModelFit, cells, batch_sizes, n_draws: int = 200) -> pd.DataFrame:
    """Energy per request and per output token against the batch size, with 95 % intervals.

    One row per (input_len, output_len) of ``cells`` and batch size; ``measured`` says whether the
    fit saw that batch size (the others are the model's prediction).
    """
    rows = []
    for i, o in cells:
        for b in batch_sizes:
            e, lo, hi = (float(x[0]) for x in fit.predict_interval([i], [o], n_draws, batch_size=b))
            rows.append({"input_len": int(i), "output_len": int(o), "batch_size": int(b),
                         "energy_per_request_j": e / b, "energy_per_request_j_low": lo / b,
                         "energy_per_request_j_high": hi / b,
                         "energy_per_token_j": energy_per_token_j(e, b, o),
                         "energy_per_token_j_low": energy_per_token_j(lo, b, o),
                         "energy_per_token_j_high": energy_per_token_j(hi, b, o),
                         "measured": int(b) in fit.batch_sizes})
    return pd.DataFrame(rows)


def saturation_table(fit: ModelFit, cells, drop_pct: float = 5.0, n_draws: int = 200) -> pd.DataFrame:
    """Per (input_len, output_len): the batch size beyond which doubling it saves less than
    ``drop_pct`` % of energy per token (:meth:`energykit.model.EnergyModel.saturation_batch`), with its
    95 % interval over the fit's bootstrap draws."""
    rows = []
    for i, o in cells:
        est, lo, hi = apply(fit, lambda p, i=i, o=o: float(fit.energy_model.saturation_batch(p, i, o, drop_pct=drop_pct)),
                            n_draws)
        rows.append({"input_len": int(i), "output_len": int(o), "saturation_batch": est, "saturation_batch_low": lo,
                     "saturation_batch_high": hi, "beyond_measured": bool(est > max(fit.batch_sizes))})
    return pd.DataFrame(rows)


def extrapolated(fit: ModelFit, input_len, output_len):
    """True where a length lies outside the measured range of ``fit``."""
    i_lo, i_hi = fit.input_len.min(), fit.input_len.max()
    o_lo, o_hi = fit.output_len.min(), fit.output_len.max()
    return (input_len < i_lo) | (input_len > i_hi) | (output_len < o_lo) | (output_len > o_hi)


def o_star_numeric(params: dict, input_len: float, o_max: float = 1e7) -> float:
    """Numeric minimiser of energy per output token over ``o`` in [1, o_max] (checks :func:`~energykit.fit.o_star`)."""

    def per_token(log_o):
        o = np.exp(log_o)
        return SWEETSPOT.energy(input_len, o, **params) / o

    res = minimize_scalar(per_token, bounds=(0.0, np.log(o_max)), method="bounded", options={"xatol": 1e-10})
    return float(np.exp(res.x))


def sweet_region(tokens_per_j: xr.DataArray, within_pct: float = 10.0) -> xr.DataArray:
    """Cells whose efficiency is within ``within_pct`` % of the best on the map."""
    best = tokens_per_j.max(["input_len", "output_len"])
    return tokens_per_j >= (1.0 - within_pct / 100.0) * best


def best_worst_ratio(tokens_per_j: xr.DataArray) -> float:
    """Ratio of the best to the worst efficiency on a map (the paper's "up to 33.41x")."""
    return float(tokens_per_j.max() / tokens_per_j.min())


def best_cell(tokens_per_j: xr.DataArray) -> tuple[int, int, float]:
    """(input_len, output_len, tokens_per_j) of the most efficient cell."""
    stacked = tokens_per_j.stack(cell=("input_len", "output_len")).dropna("cell")
    k = int(np.nanargmax(stacked.values))
    return int(stacked["input_len"][k]), int(stacked["output_len"][k]), float(stacked[k])


def worst_cell(tokens_per_j: xr.DataArray) -> tuple[int, int, float]:
    """(input_len, output_len, tokens_per_j) of the least efficient cell."""
    stacked = tokens_per_j.stack(cell=("input_len", "output_len")).dropna("cell")
    k = int(np.nanargmin(stacked.values))
    return int(stacked["input_len"][k]), int(stacked["output_len"][k]), float(stacked[k])


def o_star_table(fits: FitSet, input_lens=None, n_draws: int = 200) -> pd.DataFrame:
    """``o*(i)`` per model: closed form with its 95 % bootstrap interval, and the numeric optimum."""
    rows = []
    for m, b in fits.keys:
        f = fits.get(m, b)
        lens = sorted(set(f.input_len.tolist())) if input_lens is None else input_lens
        ests, lows, highs = o_star_interval(f, lens, n_draws)  # NaN where θ4 is not identified
        for i, est, lo, hi in zip(lens, ests, lows, highs):
            closed = float(est)
            rows.append(
                {
                    "model": m,
                    "batch_size": b,
                    "input_len": int(i),
                    "o_star": closed,
                    "o_star_low": float(lo),
                    "o_star_high": float(hi),
                    "o_star_numeric": o_star_numeric(f.params, i) if np.isfinite(closed) else closed,
                    "tokens_per_j_at_o_star": (
                        tokens_per_j(f.predict(i, closed), b, closed) if np.isfinite(closed) else np.nan
                    ),
                    # no o* (θ4 not identified) is not an extrapolated o*: NaN, which tables print as "n/a"
                    "o_star_extrapolated": (
                        bool(closed < f.output_len.min() or closed > f.output_len.max()) if np.isfinite(closed)
                        else np.nan
                    ),
                    "theta4_identified": bool(not np.isnan(closed)),
                }
            )
    return pd.DataFrame(rows)


def ratio_table(ds: xr.Dataset, fits: FitSet, grid=PAPER_GRID, n_draws: int = 200) -> pd.DataFrame:
    """Best/worst efficiency ratios per model: on the measured grid and on the paper's grid (fitted,
    with its 95 % bootstrap interval), each with its best and worst cell; a paper-grid cell says
    whether it was measured or extrapolated by the fit."""
    meas = measured_map(ds)
    rows = []
    for m, b in fits.keys:
        tpj = meas["tokens_per_j"].sel(model=m, batch_size=b)
        fm = fitted_map(fits.get(m, b), grid, grid)
        bi, bo, bt = best_cell(tpj)
        wi, wo, _ = worst_cell(tpj)
        fi, fo, ft = best_cell(fm["tokens_per_j"])
        gi, go, _ = worst_cell(fm["tokens_per_j"])

        fit = fits.get(m, b)
        cells = set(zip(fit.input_len.astype(int).tolist(), fit.output_len.astype(int).tolist()))

        def on_grid(i, o):  # how the fit knows a paper-grid cell
            if (i, o) in cells:
                return "measured"
            return ("extrapolated" if bool(fm["extrapolated"].sel(input_len=i, output_len=o))
                    else "fitted, inside the measured range")

        g = np.asarray(grid, dtype=float)
        ii, oo = np.meshgrid(g, g, indexing="ij")

        def paper_ratio(p, b=b):
            tpj = tokens_per_j(SWEETSPOT.energy(ii, oo, **p), b, oo)
            return float(tpj.max() / tpj.min())

        _, r_lo, r_hi = apply(fits.get(m, b), paper_ratio, n_draws)
        rows.append(
            {
                "model": m,
                "batch_size": b,
                "measured_best_worst": best_worst_ratio(tpj),
                "measured_best_cell": f"i={bi}, o={bo}",
                "measured_worst_cell": f"i={wi}, o={wo}",
                "measured_best_tokens_per_j": bt,
                "paper_grid_best_worst": best_worst_ratio(fm["tokens_per_j"]),
                "paper_grid_best_worst_low": r_lo,
                "paper_grid_best_worst_high": r_hi,
                "paper_grid_best_cell": f"i={fi}, o={fo} ({on_grid(fi, fo)})",
                "paper_grid_worst_cell": f"i={gi}, o={go} ({on_grid(gi, go)})",
                "paper_grid_extrapolated_cells": int(fm["extrapolated"].sum()),
            }
        )
    return pd.DataFrame(rows)


def region_probability(fit: ModelFit, input_lens=PAPER_GRID, output_lens=PAPER_GRID, within_pct: float = 10.0,
                       n_draws: int = 200) -> xr.DataArray:
    """Share of bootstrap draws in which each cell lies in the sweet-spot region (0–1).

    Cells near 1 are in the region whatever the fit's uncertainty; cells between are uncertain.
    """
    i = np.asarray(input_lens, dtype=float)
    o = np.asarray(output_lens, dtype=float)
    ii, oo = np.meshgrid(i, o, indexing="ij")
    d = {k: v[:, :, None] for k, v in fit.draws(n_draws).items()}  # (n, 1, 1)
    tpj = tokens_per_j(predict_energy(fit.kind, d, ii[None], oo[None]), fit.batch_size, oo[None])
    best = tpj.max(axis=(1, 2), keepdims=True)
    share = (tpj >= (1 - within_pct / 100.0) * best).mean(axis=0)
    return xr.DataArray(share, coords={"input_len": i.astype(int), "output_len": o.astype(int)},
                        dims=("input_len", "output_len"), name="region_probability")


def attention_kind(num_heads: int, num_kv_heads: int) -> str:
    """"MHA", "GQA" or "MQA" from the head counts."""
    if num_kv_heads == num_heads:
        return "MHA"
    return "MQA" if num_kv_heads == 1 else "GQA"


def attention_table(ds: xr.Dataset, fits: FitSet, bytes_per_element: int = 2) -> pd.DataFrame:
    """GQA vs MHA: KV-cache bytes per token, parameters, fitted KV terms and mean measured efficiency.

    Efficiency is averaged (geometric mean) over the cells that every listed model has measured, so
    the models are compared on the same grid.
    """
    need = ("num_layers", "num_heads", "num_kv_heads", "head_dim", "params")
    if not all(c in ds.coords for c in need):
        return pd.DataFrame()
    meas = measured_map(ds)["tokens_per_j"]
    models = [m for m, _ in fits.keys]
    common = meas.sel(model=models).notnull().all("model")
    rows = []
    for m, b in fits.keys:
        g = ds.sel(model=m)
        L, nq, nkv, dh = (int(g[c]) for c in ("num_layers", "num_heads", "num_kv_heads", "head_dim"))
        f = fits.get(m, b)
        tpj = meas.sel(model=m, batch_size=b).where(common.sel(batch_size=b))
        th = theta_table(f).set_index("param")
        rows.append(
            {
                "model": m,
                "engine": str(g["engine"].values) if "engine" in g.coords else "",
                "attention": attention_kind(nq, nkv),
                "params_b": int(g["params"]) / 1e9,
                "num_heads": nq,
                "num_kv_heads": nkv,
                "kv_bytes_per_token": 2 * L * nkv * dh * bytes_per_element,
                "theta2": f.params["theta2"],
                "theta2_low": th.loc["theta2", "value_low"],
                "theta2_high": th.loc["theta2", "value_high"],
                "theta4": f.params["theta4"],
                "theta4_low": th.loc["theta4", "value_low"],
                "theta4_high": th.loc["theta4", "value_high"],
                "geomean_tokens_per_j": float(np.exp(np.log(tpj).mean())),
            }
        )
    return pd.DataFrame(rows)
