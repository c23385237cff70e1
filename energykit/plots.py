"""Figures for the reports (matplotlib + seaborn). Each function draws on an axis and returns it."""

from __future__ import annotations

import matplotlib.pyplot as plt
from matplotlib import patheffects
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter
import numpy as np
import pandas as pd
import seaborn as sns
import xarray as xr

from .fit import FitSet, ModelFit
from .intervals import bounded_high
from .sweetspots import sweet_region
from .uncertainty import o_star_interval

__all__ = ["batch_curves", "log_range", "clip_band", "legend_outside", "plain_log_ticks", "efficiency_heatmap",
           "fit_curves", "parity", "residuals", "trace_density", "policy_bars",
           "region_probability_heatmap"]


def log_range(values, margin: float = 2.0) -> tuple[float, float]:
    """Axis limits of a log axis around the positive finite ``values``: their range widened by ``margin``."""
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v) & (v > 0)]
    return float(v.min() / margin), float(v.max() * margin)


def clip_band(low, high, y_range) -> tuple[np.ndarray, np.ndarray]:
    """An interval band clipped to the plotted range, so that a bound near 0 or infinity cannot stretch the axes.

    >>> clip_band([1e-12, 5.0], [20.0, float("inf")], (1.0, 100.0))
    (array([1., 5.]), array([ 20., 100.]))
    """
    lo, hi = y_range
    return np.clip(np.asarray(low, dtype=float), lo, hi), np.clip(np.asarray(high, dtype=float), lo, hi)


def legend_outside(ax, **kw):
    """The axis legend below the plot, outside the data (a legend inside hides points or cells).

    Seaborn's own legend is moved (``sns.move_legend``); otherwise one is drawn from the labelled artists.
    """
    fig = ax.figure
    height_px = ax.get_window_extent().height or 1.0
    below = -(50 * fig.dpi / 72) / height_px  # 50 pt under the axis: clear of tick labels and the axis label
    kw.setdefault("frameon", False)
    if ax.get_legend() is not None and not ax.get_legend_handles_labels()[0]:
        sns.move_legend(ax, "upper center", bbox_to_anchor=(0.5, below), **kw)
        return ax
    handles, labels = ax.get_legend_handles_labels()
    if handles:
        kw.setdefault("ncol", min(len(handles), 3))
        kw.setdefault("fontsize", 8)
        ax.legend(handles, labels, loc="upper center", bbox_to_anchor=(0.5, below), **kw)
    return ax


def plain_log_ticks(ax, axis: str = "both"):
    """Log axes labelled at their major ticks only, as plain numbers (minor labels overlap on short ranges)."""
    fmt = FuncFormatter(lambda v, _: f"{v:g}")
    for name in ("x", "y") if axis == "both" else (axis,):
        a = ax.xaxis if name == "x" else ax.yaxis
        if a.get_scale() != "log":
            continue
        lo, hi = sorted(ax.get_xlim() if name == "x" else ax.get_ylim())
        subs = (1.0,) if hi / lo > 30 else (1.0, 2.0, 5.0)  # a short range gets 1-2-5 labels, never 2-3-4-6-…
        a.set_major_locator(LogLocator(base=10, subs=subs))
        a.set_major_formatter(fmt)
        a.set_minor_formatter(NullFormatter())
    return ax


def _ax(ax):
    if ax is None:
        _, ax = plt.subplots(figsize=(6, 4.5))
    return ax


def efficiency_heatmap(
    tokens_per_j: xr.DataArray,
    fit: ModelFit | None = None,
    within_pct: float = 10.0,
    extrapolated: xr.DataArray | None = None,
    title: str = "",
    ax=None,
    low: xr.DataArray | None = None,
    high: xr.DataArray | None = None,
    batch_size: int | None = None,
):
    """Heatmap of tokens per joule over (input_len, output_len).

    The sweet-spot region (within ``within_pct`` % of the best) is outlined, ``o*(i)`` from ``fit``
    is drawn as a line with its 95 % interval, extrapolated cells are hatched, and with ``low`` and
    ``high`` (a predicted map's interval) each cell shows ``value [low, high]``. ``batch_size``:
    the batch of a batch-aware fit's ``o*(i, B)``.
    """
    ax = _ax(ax)
    da = tokens_per_j.transpose("output_len", "input_len")
    # lengths that this model was not measured at (other models of a combined dataset) are dropped
    frame = da.to_pandas().sort_index(ascending=False).dropna(how="all", axis=0).dropna(how="all", axis=1)
    da = da.sel(output_len=list(frame.index), input_len=list(frame.columns))
    annot = True
    if low is not None and high is not None:
        lo = low.transpose("output_len", "input_len").to_pandas().reindex_like(frame)
        hi = high.transpose("output_len", "input_len").to_pandas().reindex_like(frame)
        top = pd.DataFrame(bounded_high(frame, lo, hi), index=frame.index, columns=frame.columns)  # NaN: unbounded
        annot = (frame.map("{:.3g}".format) + "\n[" + lo.map("{:.3g}".format) + ", "
                 + top.map(lambda v: "unbounded" if np.isnan(v) else f"{v:.3g}") + "]")
    sns.heatmap(frame, annot=annot, fmt=".3g" if annot is True else "", cmap="viridis",
                annot_kws={"fontsize": 11} if annot is True else {"fontsize": 9},
                cbar_kws={"label": "output tokens per J"}, ax=ax)
    for t in ax.texts:  # the numbers sit in each cell's upper half, above the o*(i) line, with a dark outline
        t.set_y(t.get_position()[1] - 0.18)
        t.set_zorder(5)
        t.set_path_effects([patheffects.withStroke(linewidth=2.5, foreground="0.15")])
        t.set_color("white")
    outs = list(frame.index)
    ins = list(frame.columns)
    region = sweet_region(da, within_pct).to_pandas().reindex(index=outs, columns=ins)
    for r, o in enumerate(outs):
        for c, i in enumerate(ins):
            if bool(region.loc[o, i]):
                ax.add_patch(plt.Rectangle((c, r), 1, 1, fill=False, edgecolor="red", lw=2.5))
            if extrapolated is not None and bool(extrapolated.sel(input_len=i, output_len=o)):
                ax.add_patch(plt.Rectangle((c, r), 1, 1, fill=False, hatch="//", edgecolor="white", lw=0))
    note = ""
    if fit is not None and not fit.identified()["theta4"]:
        ax.text(0.02, 0.02, "o*(i): n/a (θ4 not identified by these cells)", transform=ax.transAxes, fontsize=8,
                color="white", bbox={"facecolor": "grey", "alpha": 0.8})
    elif fit is not None:
        xs = np.arange(len(ins)) + 0.5
        ostar, lo, hi = o_star_interval(fit, np.asarray(ins, dtype=float), batch_size=batch_size)
        # heatmap rows are categorical: place o* by interpolating log(o) over the row centres
        logo = np.log(np.asarray(outs, dtype=float))

        def row(o):
            return np.interp(-np.log(np.clip(o, outs[-1], outs[0])), -logo, np.arange(len(outs)) + 0.5)

        # the interval as two dotted edges, not a fill: a band over the cells would wash out their colours
        # white lines with a dark outline read on light cells and on the blank of unmeasured ones
        outline = [patheffects.withStroke(linewidth=3.5, foreground="0.2")]
        # o* beyond the rows is not drawn on the edge row (a marker there read as o* = that row's length): the line
        # stops, and a note says where o* leaves the plotted range
        ostar = np.asarray(ostar, dtype=float)
        inside = (ostar >= min(outs)) & (ostar <= max(outs))
        ax.plot(xs, np.where(inside, row(ostar), np.nan), "--", color="white", lw=2, zorder=3,
                label="o*(i) (fitted)", path_effects=outline)  # no markers: they covered the cells' numbers
        outside = [f"{i:g}" for i, ok in zip(ins, inside) if not ok]
        if outside:
            note = f"\no*(i) outside the plotted o range at i = {', '.join(outside)}"
        ax.plot(xs, row(lo), ":", color="white", lw=1.5, label="o*(i) 95 % interval (dotted edges)",
                path_effects=outline)
        ax.plot(xs, row(hi), ":", color="white", lw=1.5, path_effects=outline)
        legend_outside(ax, frameon=True, facecolor="0.55", edgecolor="0.55")  # white lines need a dark key
    ax.set_xlabel("input length i [tokens]")
    ax.set_ylabel("output length o [tokens]")
    ax.set_title((title or f"efficiency; red: within {within_pct:g} % of best") + note)
    return ax


def fit_curves(fit: ModelFit, raw: pd.DataFrame | None = None, ax=None):
    """Measured energy per cell (points; raw windows as small dots) and the fitted model (lines)."""
    ax = _ax(ax)
    palette = sns.color_palette("crest", n_colors=len(np.unique(fit.input_len)))
    o_line = np.geomspace(fit.output_len.min(), fit.output_len.max(), 100)
    y_range = log_range(fit.energy_j)

    for color, i in zip(palette, np.unique(fit.input_len)):
        sel = fit.input_len == i
        ax.plot(fit.output_len[sel], fit.energy_j[sel], "o", color=color, label=f"i={int(i)}")
        est, lo, hi = fit.predict_interval(np.full_like(o_line, float(i)), o_line)
        ax.plot(o_line, est, "-", color=color)
        ax.fill_between(o_line, *clip_band(lo, hi, y_range), color=color, alpha=0.25, lw=0)
        if raw is not None:
            r = raw[(raw["input_len"] == i)]
            ax.plot(r["output_len"], r["energy_j"], ".", color=color, alpha=0.5, ms=4)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_ylim(*y_range)
    ax.set_xlabel("output length o [tokens]")
    ax.set_ylabel("energy per batch E [J]")
    ax.set_title(f"{fit.model}\nmeasured (points) vs {fit.kind} fit (lines, 95 % band)", fontsize=10)
    plain_log_ticks(ax)
    legend_outside(ax, ncol=4)
    return ax


def parity(fits: FitSet, kind: str = "sweetspot", ax=None):
    """Predicted (with 95 % intervals) vs measured energy for every fitted model, with y = x."""

    ax = _ax(ax)
    measured = np.concatenate([fits.get(m, b, kind).energy_j for m, b in fits.keys])
    y_range = log_range(measured)
    for m, b in fits.keys:
        f = fits.get(m, b, kind)
        pred, p_lo, p_hi = f.predict_interval(f.input_len, f.output_len)
        p_lo, p_hi = clip_band(p_lo, p_hi, y_range)
        ax.errorbar(f.energy_j, pred, yerr=[np.maximum(pred - p_lo, 0), np.maximum(p_hi - pred, 0)], fmt="o",
                    alpha=0.8, capsize=2, label=f"{m} (MAPE {f.mape_pct:.1f} %)")
    ax.plot(y_range, y_range, "k--", lw=1)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlim(*y_range)
    ax.set_ylim(*y_range)
    ax.set_xlabel("measured E [J]")
    ax.set_ylabel("predicted E [J]")
    ax.set_title(f"parity, {kind} model")
    plain_log_ticks(ax)
    legend_outside(ax, ncol=1)
    return ax


def residuals(fits: FitSet, ax=None):
    """Relative residuals of the analytical model and the baseline against measured energy."""
    ax = _ax(ax)
    rows = []
    for (m, b, kind), f in fits.fits.items():
        rel = 100 * (f.predict(f.input_len, f.output_len) - f.energy_j) / f.energy_j
        rows += [{"model": m, "fit": {"sweetspot": "analytical"}.get(kind, kind), "energy_j": e, "residual_pct": r}
                 for e, r in zip(f.energy_j, rel)]
    df = pd.DataFrame(rows)
    sns.scatterplot(data=df, x="energy_j", y="residual_pct", hue="model", style="fit", ax=ax)
    ax.axhline(0, color="k", lw=1)
    ax.set_xscale("log")
    ax.set_xlabel("measured E [J]")
    ax.set_ylabel("(predicted − measured) / measured [%]")
    ax.set_title("relative residuals")
    plain_log_ticks(ax)
    legend_outside(ax, ncol=3)
    return ax


def trace_density(trace: pd.DataFrame, fit: ModelFit | None = None, title: str = "", ax=None):
    """Where a trace's requests lie in (input, output), with ``o*(i)`` and the measured range."""
    ax = _ax(ax)
    t = trace[(trace["input_len"] > 0) & (trace["output_len"] > 0)]
    sns.histplot(t, x="input_len", y="output_len", log_scale=(True, True), bins=40, cbar=True, ax=ax,
                 cbar_kws={"label": "requests"})
    if fit is not None:
        i = np.geomspace(max(t["input_len"].min(), 1), t["input_len"].max(), 100)
        est, lo, hi = o_star_interval(fit, i)  # NaN (nothing drawn) where θ4 is not identified
        ax.plot(i, est, "r-", lw=2, label="o*(i) (fitted)" if np.isfinite(est).any() else "o*(i): n/a (θ4 not identified)")
        y_range = (max(t["output_len"].min(), 1) / 2, t["output_len"].max() * 2)
        ax.plot(i, clip_band(lo, hi, y_range)[0], "r:", lw=1.5, label="o*(i) 95 % interval (dotted edges)")
        ax.plot(i, clip_band(lo, hi, y_range)[1], "r:", lw=1.5)
        ax.set_ylim(*y_range)
        ax.add_patch(
            plt.Rectangle(
                (fit.input_len.min(), fit.output_len.min()),
                fit.input_len.max() - fit.input_len.min(),
                fit.output_len.max() - fit.output_len.min(),
                fill=False, edgecolor="k", ls="--", label="measured range",
            )
        )
        legend_outside(ax)
    plain_log_ticks(ax)
    ax.set_xlabel("input length [tokens]")
    ax.set_ylabel("output length [tokens]")
    ax.set_title(title)
    return ax


def policy_bars(savings: pd.DataFrame, ax=None):
    """Energy saved per policy [%], per delivered output token (what the page ranks by) and in total, each with
    its 95 % interval as error bars. A cap can save total energy by delivering fewer tokens while costing more
    per token, so both are drawn and labelled."""
    ax = _ax(ax)
    y = np.arange(len(savings))
    h = 0.38
    colours = sns.color_palette()
    for k, (col, label) in enumerate((("per_token_saving_pct", "per delivered token (ranks the policies)"),
                                      ("saving_pct", "total energy"))):
        if col not in savings:
            continue
        err = [savings[col] - savings[f"{col}_low"], savings[f"{col}_high"] - savings[col]] \
            if f"{col}_low" in savings else None
        ax.barh(y + (k - 0.5) * h, savings[col], height=h, xerr=err, color=colours[k], capsize=3, label=label,
                hatch="" if k == 0 else "//", edgecolor="white")
    ax.axvline(0, color="k", lw=0.8)
    ax.set_yticks(y, savings["policy"])
    ax.invert_yaxis()
    ax.set_xlabel("energy saved [%] (95 % interval; positive: less energy)")
    legend_outside(ax, ncol=2)
    return ax


def region_probability_heatmap(share: xr.DataArray, title: str = "", ax=None):
    """Share of bootstrap draws in which each cell is in the sweet-spot region."""
    ax = _ax(ax)
    frame = share.transpose("output_len", "input_len").to_pandas().sort_index(ascending=False)
    sns.heatmap(frame, annot=True, fmt=".2f", cmap="rocket_r", vmin=0, vmax=1,
                cbar_kws={"label": "P(cell in sweet-spot region)"}, ax=ax)
    ax.set_xlabel("input length i [tokens]")
    ax.set_ylabel("output length o [tokens]")
    ax.set_title(title)
    return ax


def batch_curves(table: pd.DataFrame, axes=None):
    """Energy per request and per output token against the batch size (log-log), one line per
    (input_len, output_len) of :func:`energykit.sweetspots.batch_table`, with 95 % bands; measured
    batch sizes are filled points, predicted ones open."""
    if axes is None:
        _, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    palette = sns.color_palette("crest", n_colors=table.groupby(["input_len", "output_len"]).ngroups)
    for color, ((i, o), g) in zip(palette, table.groupby(["input_len", "output_len"])):
        for ax, col in zip(axes, ("energy_per_request_j", "energy_per_token_j")):
            ax.plot(g["batch_size"], g[col], "-", color=color, label=f"i={i}, o={o}")
            ax.fill_between(g["batch_size"], g[f"{col}_low"], g[f"{col}_high"], color=color, alpha=0.25, lw=0)
            m = g["measured"].to_numpy(bool)
            ax.plot(g["batch_size"][m], g[col][m], "o", color=color)
            ax.plot(g["batch_size"][~m], g[col][~m], "o", mfc="white", color=color)
    for ax, label in zip(axes, ("energy per request [J]", "energy per output token [J]")):
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("batch size B [requests]")
        ax.set_ylabel(label)
    axes[0].legend(fontsize=8)
    return axes


# ---- a replayed request stream (energykit.replay): predicted vs measured, occupancy, attribution

__all__ += ["replay_windows", "replay_timeline", "attribution_vs_lengths", "attribution_methods"]


def replay_windows(windows: pd.DataFrame, ax=None):
    """Measured energy of each window of a replay against the prediction and its 95 % interval [J]."""
    ax = _ax(ax)
    mid = (windows["start_s"] + windows["end_s"]) / 2
    width = (windows["end_s"] - windows["start_s"]) * 0.8
    ax.bar(mid, windows["measured_j"], width=width, color="0.75", label="measured")
    err = np.vstack([windows["predicted_j"] - windows["predicted_j_low"], windows["predicted_j_high"] - windows["predicted_j"]])
    ax.errorbar(mid, windows["predicted_j"], yerr=np.maximum(err, 0), fmt="o", color="C3", ms=4, capsize=3,
                label="predicted from E(i, o, B) [95 %]")
    ax.plot(mid, windows["idle_j"], "_", color="C0", ms=12, mew=2, label="of which idle over gaps (predicted)")
    ax.set(xlabel="time since the replay's start [s]", ylabel="energy per window [J]")
    legend_outside(ax)
    return ax


def replay_timeline(table: pd.DataFrame, ax=None):
    """Each request as a bar from sent to last token (prefill wait lighter), coloured by its attributed energy [J]."""
    ax = _ax(ax)
    t = table.sort_values("sent_s").reset_index(drop=True)
    cmap = plt.get_cmap("viridis")
    e = t["energy_j"].to_numpy()
    norm = plt.Normalize(float(np.min(e)), float(np.max(e)) if np.max(e) > np.min(e) else float(np.min(e)) + 1)
    for k, r in t.iterrows():
        ax.plot([r["sent_s"], r["first_token_s"]], [k, k], color="0.8", lw=3, solid_capstyle="butt")
        ax.plot([r["first_token_s"], r["last_token_s"]], [k, k], color=cmap(norm(r["energy_j"])), lw=3,
                solid_capstyle="butt")
    sm = plt.cm.ScalarMappable(norm=norm, cmap=cmap)
    ax.figure.colorbar(sm, ax=ax, label="attributed energy [J] (equal split)")
    ax.set(xlabel="time since the replay's start [s]", ylabel="request (by send time)")
    ax.invert_yaxis()
    return ax


def attribution_vs_lengths(table: pd.DataFrame, axes=None):
    """Attributed energy per request against its input length (colour: output length), and per delivered token
    against the output length (colour: input length)."""
    if axes is None:
        _, axes = plt.subplots(1, 2, figsize=(12, 4.2), layout="constrained")
    a, b = axes
    s = a.scatter(table["input_len"], table["energy_j"], c=table["output_len"], cmap="viridis", s=25)
    a.figure.colorbar(s, ax=a, label="output length [tokens]")
    a.set(xscale="log", xlabel="input length [tokens]", ylabel="energy per request [J]")
    s = b.scatter(table["output_len"], table["energy_per_token_j"], c=table["input_len"], cmap="magma", s=25,
                  norm=plt.matplotlib.colors.LogNorm())
    b.figure.colorbar(s, ax=b, label="input length [tokens]")
    b.set(xscale="log", yscale="log", xlabel="delivered output tokens", ylabel="energy per delivered token [J/token]")
    plain_log_ticks(a, "x")
    plain_log_ticks(b)
    return axes


def attribution_methods(table: pd.DataFrame, ax=None):
    """Shapley value against equal split per request [J], with the Shapley standard error where sampled."""
    ax = _ax(ax)
    ax.errorbar(table["energy_j"], table["energy_shapley_j"], yerr=table["shapley_stderr_j"], fmt="o", ms=4,
                capsize=2, color="C2")
    lo = float(min(table["energy_j"].min(), table["energy_shapley_j"].min()))
    hi = float(max(table["energy_j"].max(), table["energy_shapley_j"].max()))
    ax.plot([lo, hi], [lo, hi], "k--", lw=1, label="Shapley = equal split")
    ax.set(xlabel="equal split of each step [J]", ylabel="Shapley value [J]")
    ax.legend(loc="upper left")
    return ax
