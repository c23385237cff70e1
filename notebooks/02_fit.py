# ---
# jupyter:
#   energykit:
#     description: "fits the SweetSpot analytical model and the linear baseline to measured\
#       \ energy: \u03B8, MAPE, cross-validation, parity"
#   jupytext:
#     notebook_metadata_filter: energykit,kernelspec,-jupytext.text_representation.jupytext_version
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Fitting the SweetSpot energy model
#
# How much energy does one LLM request cost as a function of its input length $i$ and output length
# $o$? This notebook fits the analytical model of Pizzini Cavagna et al. (*Determining Energy
# Efficiency Sweet Spots in Production LLM Inference*, arXiv:2602.05695) to measured energy and
# compares it with the usual linear estimate.

# %% tags=["parameters"]
data = ["data/h200_hf_energykit/measurements.nc"]  # measured files (.nc, .csv, .jsonl), relative to the repo root
loss = "l1"  # "l1": robust relative loss (default); "l2": relative least squares
cv_folds = 5  # folds of the cross-validation over cells
fit_file = ""  # fits stored by `energykit fit --save` (make report passes one); empty: fit here

# %%
import matplotlib.pyplot as plt
import pandas as pd
import seaborn as sns

from energykit import dataset, notebook, plots, sweetspots
from energykit.fit import THETA_MEANING, THETA_UNITS

notebook.setup()  # the pages' display settings: seaborn theme, tables read in full, inline figures

# %%
from energykit import summary

ds, fits = notebook.data_and_fits(data, fit_file, loss, cv_folds)  # fits read from fit_file, or fitted here
summary.show(*summary.fit_results(ds, fits))

# %% [markdown]
# ## The measurements
#
# One *call* runs a batch of $B$ requests of identical lengths (input $i$, output $o$). One *window* is one
# reading of the NVML total-energy counter around the same call repeated until the window lasts at least
# `min_window_s` (2 s in the kit's sweeps, so a window holds from one call to a few dozen); `energy_j` and
# `duration_s` are the window's board energy (idle included) and time divided by its calls, so they are per
# call. Files measured outside the kit hold one call per window. The dataset is indexed by `model`,
# `batch_size`, `input_len`, `output_len` and `repeat` (one window each).

# %%
raw = dataset.to_frame(ds)
print(f"loaded {ds.attrs.get('loaded_from')} (measured into {ds.attrs.get('source')}) | {ds.attrs.get('gpu')} | "
      f"{ds.attrs.get('engine')}")
raw.groupby("model").agg(windows=("energy_j", "size"), cells=("input_len", lambda s: len(set(zip(s, raw.loc[s.index, "output_len"])))),
                         inputs=("input_len", lambda s: f"{s.min()}–{s.max()}"),
                         outputs=("output_len", lambda s: f"{s.min()}–{s.max()}"),
                         repeats=("repeat", "nunique"))

# %%
means = dataset.cell_means(ds)
spread = (100 * means["energy_j_std"] / means["energy_j"]).to_dataframe(name="repeat_spread_pct")
# the counter's step error depends on how long the *window* lasts, not one call: plot against the window
window = "window_duration_s" if "window_duration_s" in ds else "duration_s"  # files from outside: one call a window
spread = spread.join(ds[window].mean("repeat").to_dataframe(name="window_s")[["window_s"]]).dropna()
ax = sns.scatterplot(data=spread.reset_index(), x="window_s", y="repeat_spread_pct", hue="model")
ax.set(xscale="log", xlabel="meter window length [s] (mean over repeats)", ylabel="repeat spread (std/mean) [%]",
       title="repeat spread against window length (the counter steps every 100 ms)")
plots.plain_log_ticks(ax)
plots.legend_outside(ax);

# %% [markdown]
# ## Where the model comes from
#
# Notation: $B$ sequences, $L$ layers, hidden size $d$, $n_q$/$n_{kv}$ query/key-value heads of
# dimension $d_h$, $N$ non-embedding parameters, vocabulary $V$, $\beta$ bytes per element.
#
# **Prefill** of $i$ tokens is compute-bound:
# $\mathrm{FLOPs}_\mathrm{prefill} \approx B\,(2 N i + 2 L n_q d_h i^2)$ — the weight GEMMs and causal attention.
#
# **Decode** at context length $c$ is memory-bound at small batch:
# $\mathrm{FLOPs} \approx B\,(2N + 4 L n_q d_h c + 2 d V)$ and
# $\mathrm{bytes} \approx \beta (N + dV) + B \cdot 2 L n_{kv} d_h \beta c$ — every step reads the weights
# once and the KV cache of every sequence.
#
# Over $o$ decode steps the context runs from $i$ to $i+o-1$, so
# $\sum c = o\,i + o(o-1)/2$. Energy is dynamic energy per FLOP and per byte plus static power
# times time, and the phase times have the same polynomial shape. Collecting powers:
#
# $$E(i,o) = \theta_1 i^2 + \theta_2\, i o + \theta_3 i + \theta_4 o^2 + \theta_5 o + \theta_0,\qquad \theta_k \ge 0$$
#
# | term | origin |
# |---|---|
# | $\theta_1 i^2$ | prefill causal attention |
# | $\theta_3 i$ | prefill weight GEMMs |
# | $\theta_2 i o$, $\theta_4 o^2$ | decode attention and KV-cache reads ($\theta_4 \approx \theta_2/2$) |
# | $\theta_5 o$ | per-step weight reads and per-step overheads |
# | $\theta_0$ | fixed cost per request batch |
#
# The baseline is $E = a i + b o + c$. Both are fitted per model and batch size on the repeat means,
# weighted by $1/E$ so that the fit minimises relative error; with `loss="l1"` the weights are
# re-weighted iteratively so that the fit minimises the mean absolute relative error, which keeps
# counter-step outliers of short windows from dominating.

# %%
summary.table(fits.summary())

# %% [markdown]
# `mape_pct` is the in-sample mean absolute percentage error over cells, `cv_mape_pct` the same for
# cells predicted by a fit that did not see them ($k$-fold over cells), `baseline_*` the linear model.

# %% [markdown]
# θ with lmfit's standard error and a 95 % interval from a wild bootstrap of the fit (each draw
# perturbs every cell by its own residual with a random sign, on the log scale, and refits; see
# `energykit.uncertainty`). A θ on its bound (0) has no standard error; one fitted on its bound or
# on it in most draws is *not identified by these cells* (`identified: no`), and what derives from it reads "n/a".

# %%
from energykit import uncertainty

theta = pd.concat(
    [uncertainty.theta_table(fits.get(m, b)).assign(model=m, batch_size=b) for m, b in fits.keys]
).set_index(["model", "batch_size", "param"])
theta["units"] = [THETA_UNITS[p] for p in theta.index.get_level_values("param")]
summary.table(theta.reset_index(), index=["model", "batch_size", "param"])

# %%
pd.Series(THETA_MEANING, name="term").to_frame()

# %% [markdown]
# ## Measured points and fitted curves
#
# Points: repeat means; dots: single windows; lines: the analytical model, with its 95 % band.

# %% tags=["main-figure"]
for m, b in fits.keys:
    fig, axes = plt.subplots(1, 2, figsize=(13, 4.5))
    r = raw[(raw["model"] == m) & (raw["batch_size"] == b)]
    plots.fit_curves(fits.get(m, b, "sweetspot"), r, ax=axes[0])
    plots.fit_curves(fits.get(m, b, "linear"), r, ax=axes[1])
    plt.tight_layout()
    plt.show()

# %% [markdown]
# ## Parity and residuals

# %%
fig, axes = plt.subplots(1, 3, figsize=(18, 5))
plots.parity(fits, "sweetspot", ax=axes[0])
plots.parity(fits, "linear", ax=axes[1])
plots.residuals(fits, ax=axes[2])
plt.tight_layout()

# %% [markdown]
# ## Accuracy: analytical model vs linear baseline

# %%
metrics = {"mape_pct": "analytical, in-sample", "cv_mape_pct": "analytical, cross-validated",
           "baseline_mape_pct": "linear, in-sample", "baseline_cv_mape_pct": "linear, cross-validated"}
acc = fits.summary().melt(id_vars="model", value_vars=list(metrics), var_name="metric", value_name="percent")
acc["MAPE of"] = acc["metric"].map(metrics)
ax = sns.barplot(data=acc, x="percent", y="model", hue="MAPE of")
ax.set(xlabel="MAPE [%]", ylabel="", title="lower is better")
plots.legend_outside(ax, ncol=2);
