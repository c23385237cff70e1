# ---
# jupyter:
#   energykit:
#     description: efficiency maps (tokens/J), the sweet-spot region, o*(i), best/worst
#       ratios and GQA vs MHA
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
# # Sweet spots: where tokens per joule peak
#
# Efficiency is output tokens per joule, $\eta = B o / E(i,o)$. For a fixed input the energy per
# output token is minimised at
#
# $$o^*(i) = \sqrt{\frac{\theta_1 i^2 + \theta_3 i + \theta_0}{\theta_4}}$$
#
# Short outputs cannot amortise the prefill and the fixed cost; long outputs pay growing KV-cache
# reads. The *sweet-spot region* is every cell within `sweet_pct` % of the best efficiency.

# %% tags=["parameters"]
data = ["data/h200_hf_energykit/measurements.nc"]  # measured files (.nc, .csv, .jsonl), relative to the repo root
loss = "l1"  # fit loss: "l1" (robust relative) or "l2"
cv_folds = 5  # folds of the cross-validation
fit_file = ""  # fits stored by `energykit fit --save` (make report passes one); empty: fit here
sweet_pct = 10.0  # a cell is in the sweet-spot region when within this % of the best efficiency

# %%
import matplotlib.pyplot as plt
import pandas as pd
import seaborn as sns

from energykit import dataset, plots, sweetspots
from energykit.fit import fit_dataset, load_fits

sns.set_theme(context="notebook", style="whitegrid")
pd.set_option("display.precision", 4)
pd.set_option("display.max_colwidth", None)  # table cells are read in full (they wrap), never cut with "..."
# %matplotlib inline

# %%
ds = dataset.load_many(data)
fits = (load_fits(fit_file, loss=loss, cv_folds=cv_folds, data=data) if fit_file
        else fit_dataset(ds, loss=loss, cv_folds=cv_folds))
measured = sweetspots.measured_map(ds)

from energykit import summary

summary.show(*summary.sweetspot_results(ds, fits, sweet_pct))
print(f"sweet-spot region on this page: every cell within {sweet_pct:g} % of the best tokens/J (sweet_pct = {sweet_pct:g})")

# %% [markdown]
# ## Measured efficiency, with the fitted $o^*(i)$
#
# Each cell: output tokens per joule. Red boxes: the sweet-spot region (within `sweet_pct` % of the best
# cell, the value printed above); dashed line: $o^*(i)$ from the fit, dotted: its 95 % interval. First the
# measured cells, then the fit over the paper's 64–4096 grid.

# %%
for m, b in fits.keys:
    fig, ax = plt.subplots(figsize=(10, 6.5))
    plots.efficiency_heatmap(measured["tokens_per_j"].sel(model=m, batch_size=b), fits.get(m, b), sweet_pct,
                             title=f"{m}: measured tokens/J (red: within {sweet_pct:g} % of the best)", ax=ax)
    plt.tight_layout()
    plt.show()
    fig, ax = plt.subplots(figsize=(10, 8))
    fm = sweetspots.fitted_map(fits.get(m, b), sweetspots.PAPER_GRID, sweetspots.PAPER_GRID)
    plots.efficiency_heatmap(fm["tokens_per_j"], fits.get(m, b), sweet_pct, extrapolated=fm["extrapolated"],
                             low=fm["tokens_per_j_low"], high=fm["tokens_per_j_high"],
                             title=f"{m}: fitted on the paper's grid, tokens/J [95 % interval]\n"
                                   f"(hatched: extrapolated; red: within {sweet_pct:g} % of the best)", ax=ax)
    plt.tight_layout()
    plt.show()

# %% [markdown]
# ## How sure is the sweet-spot region?
#
# Share of bootstrap draws of the fit in which each cell of the paper's grid lies within `sweet_pct` %
# of the best efficiency: 1 means in the region whatever the fit's uncertainty.

# %%
fig, axes = plt.subplots(1, len(fits.keys), figsize=(7 * len(fits.keys), 5), squeeze=False)
for ax, (m, b) in zip(axes[0], fits.keys):
    share = sweetspots.region_probability(fits.get(m, b), within_pct=sweet_pct)
    plots.region_probability_heatmap(share, title=m, ax=ax)
plt.tight_layout()

# %% [markdown]
# ## Energy per output token
#
# Joules per output token against the output length, one line per measured input length (lower is
# better): the minimum of each line is that input's $o^*(i)$.

# %%
jpt = measured["energy_per_token_j"].to_dataframe().reset_index().dropna()
# input lengths as categories: the legend lists the measured lengths only, not a numeric scale's ticks
jpt["input length"] = pd.Categorical(jpt["input_len"].astype(str), [str(v) for v in sorted(jpt["input_len"].unique())])
g = sns.relplot(data=jpt, x="output_len", y="energy_per_token_j", hue="input length", col="model", kind="line",
                marker="o", palette="crest", col_wrap=3, height=3.5, facet_kws={"sharey": False})
g.set(xscale="log", yscale="log", xlabel="output length [tokens]", ylabel="J per output token")
for ax in g.axes.flat:
    plots.plain_log_ticks(ax)

# %% [markdown]
# ## $o^*(i)$: closed form vs numeric optimum
#
# Both must agree; in brackets the 95 % bootstrap interval ("unbounded" where θ4 is zero in more than
# 2.5 % of the draws); "n/a" where the cells do not identify θ4; `o star extrapolated` marks optima
# outside the measured outputs.

# %%
ostar = sweetspots.o_star_table(fits)
ostar["rel_diff"] = (ostar["o_star"] - ostar["o_star_numeric"]).abs() / ostar["o_star"]
assert (ostar["rel_diff"].dropna() < 1e-4).all(), "closed-form o* disagrees with the numeric optimum"
summary.table(ostar.drop(columns=["rel_diff", "batch_size"]), index=["model", "input_len"])

# %% [markdown]
# ## Best vs worst
#
# The paper reports up to 33.41x between the best and worst cells of its 64–4096 grid on an H100 with
# TensorRT-LLM. Below: the ratio on the measured grid (measured values) and on the paper's grid
# (fitted, with its 95 % interval; cells outside the measured range are extrapolated and counted).

# %%
summary.table(sweetspots.ratio_table(ds, fits).drop(columns=["batch_size"]))

# %% [markdown]
# ## GQA vs MHA
#
# Grouped-query attention shares each key/value head among several query heads, so the KV cache that
# every decode step reads is smaller: $2 L n_{kv} d_h \beta$ bytes per token. Models of similar size
# measured with the same engine are compared on the cells they share (geometric mean of tokens/J),
# and θ2, the energy of those KV reads per input token and decode step, is plotted against the KV bytes
# per token: with an engine whose decode reads the context's KV (flex attention, paged KV) it should
# rise with them. With sdpa over a static cache it need not (see the key results' caveat).

# %%
att = sweetspots.attention_table(ds, fits)
summary.table(att)

# %%
if not att.empty:
    fig, axes = plt.subplots(1, 2, figsize=(13, 4.5))
    # θ2 prices reading the prompt's KV cache at every decode step: it should rise with KV bytes per token
    axes[0].errorbar(att["kv_bytes_per_token"], att["theta2"],
                     yerr=[att["theta2"] - att["theta2_low"], att["theta2_high"] - att["theta2"]], fmt="none",
                     ecolor="grey", capsize=3)
    sns.scatterplot(data=att, x="kv_bytes_per_token", y="theta2", hue="attention", style="attention", s=90,
                    ax=axes[0])
    for r in att.itertuples():
        axes[0].annotate(r.model, (r.kv_bytes_per_token, r.theta2), textcoords="offset points", xytext=(6, 4),
                         fontsize=8)
    axes[0].set(xscale="log", yscale="log", xlabel="KV-cache bytes per token",
                ylabel="θ2 [J/token²] (95 % interval)", title="θ2 against KV bytes per token")
    plots.plain_log_ticks(axes[0])
    plots.legend_outside(axes[0])
    sns.barplot(data=att, y="model", x="geomean_tokens_per_j", hue="attention", ax=axes[1])
    axes[1].set(xlabel="geometric-mean tokens/J on shared cells", ylabel="", title="efficiency on shared cells")
    plots.legend_outside(axes[1])
    plt.tight_layout()
