# ---
# jupyter:
#   energykit:
#     description: prices the Azure production traces with the fitted model and the
#       savings of truncation and output caps
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
# # What would a production workload save?
#
# The fitted model prices every request of a real production trace: the Azure LLM inference traces
# of 2023 (code completion and conversation). Then simple policies move requests toward the sweet
# spots: truncating (or summarising) long prompts, capping outputs.
#
# *Traces: Patel et al., "Splitwise: Efficient generative LLM inference using phase splitting",
# ISCA 2024; Azure Public Dataset, CC-BY 4.0.*

# %% tags=["parameters"]
data = ["data/h200_hf_energykit/measurements.nc"]  # measured files (.nc, .csv, .jsonl), relative to the repo root
loss = "l1"  # fit loss: "l1" (robust relative) or "l2"
cv_folds = 5  # folds of the cross-validation
fit_file = ""  # fits stored by `energykit fit --save` (make report passes one); empty: fit here
sweet_pct = 10.0  # "near the sweet spot": efficiency within this % of the best
workload_model = "llama3.2-1b"  # model whose fit prices the traces (empty: the first model in the data)
traces = {"code": "data/azure_llm_inference_trace_2023_code.csv", "conv": "data/azure_llm_inference_trace_2023_conv.csv"}  # name: file
truncate_inputs = [2048, 1024]  # policies: truncate inputs above each length
cap_outputs = [256, 128]  # policies: cap outputs at each length

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
from energykit import iotools, workloads

# %%
ds = dataset.load_many(data)
fits = (load_fits(fit_file, loss=loss, cv_folds=cv_folds, data=data) if fit_file
        else fit_dataset(ds, loss=loss, cv_folds=cv_folds))
name = workload_model or fits.keys[0][0]
fit = fits.get(name)
loaded = {k: iotools.read_trace(v)[0] for k, v in traces.items()}
print(f"pricing with {name} at batch size {fit.batch_size}; measured inputs {fit.input_len.min():.0f}–{fit.input_len.max():.0f}, "
      f"outputs {fit.output_len.min():.0f}–{fit.output_len.max():.0f} tokens")
from energykit import summary

policies = workloads.policies_from_params(truncate_inputs, cap_outputs)
# each trace is priced once (with its bootstrap intervals); the key results and the tables below share it
summaries = {k: workloads.trace_summary(fit, t, sweet_pct) for k, t in loaded.items()}
savings_by_trace = {k: workloads.policy_savings(fit, t, policies) for k, t in loaded.items()}
summary.show(*summary.workload_results(fit, summaries, savings_by_trace, ds))

# %% [markdown]
# **Assumptions.** Each request is served as it was measured: in a batch of $B$ concurrent sequences of
# the same lengths, so it costs $E(i,o)/B$. Energy is whole-board energy, idle included. Requests
# whose lengths fall outside the measured grid are priced by extrapolating the analytical model and
# are counted in `extrapolated_pct`.

# %%
fig, axes = plt.subplots(1, len(loaded), figsize=(7 * len(loaded), 5), squeeze=False)
for ax, (k, t) in zip(axes[0], loaded.items()):
    plots.trace_density(t, fit, title=f"{k}: {len(t)} requests", ax=ax)
plt.tight_layout()

# %% [markdown]
# Totals with their 95 % interval in brackets: θ's bootstrap uncertainty only (the extrapolated share
# in `extrapolated pct` is not in it).

# %%
summary.table(pd.DataFrame([{"trace": k, **s} for k, s in summaries.items()]), index="trace")

# %% [markdown]
# ## Energy per request
#
# Distribution of the modelled energy per request; the x axis is logarithmic.

# %%
per = pd.concat([workloads.trace_energy(fit, t, sweet_pct).assign(trace=k) for k, t in loaded.items()])
ax = sns.histplot(data=per, x="energy_j", hue="trace", log_scale=True, element="step", stat="density", common_norm=False)
for color, (k, s) in zip(sns.color_palette(), summaries.items()):
    ax.axvline(s["mean_energy_per_request_j"], color=color, ls="--")
    ax.axvspan(s["mean_energy_per_request_j_low"], s["mean_energy_per_request_j_high"], color=color, alpha=0.2)
ax.set(xlabel="energy per request [J]", title="dashed: mean per request, shaded: its 95 % interval")
plots.plain_log_ticks(ax)
plots.legend_outside(ax);

# %% [markdown]
# ## Policies
#
# `saving pct` compares total energy; `per token saving pct` compares joules per *delivered* output
# token (a cap saves energy partly by delivering fewer tokens, and `output tokens kept pct` says how
# many). Both are savings: positive means less energy. In brackets, the 95 % interval over θ's
# bootstrap (each draw prices the trace before and after with the same θ), widened so that every
# request outside the measured grid may be off by `extrapolation error pct` (the fit's worst
# cross-validated cell error); `extrapolated pct` is that share after the policy. The assumption of
# each policy stands next to its numbers.

# %%
savings = pd.concat([sav.assign(trace=k) for k, sav in savings_by_trace.items()])
summary.table(savings, index=["trace", "policy"])

# %%
fig, axes = plt.subplots(1, len(loaded), figsize=(8 * len(loaded), 4.5), squeeze=False)
for ax, (k, s) in zip(axes[0], savings.groupby("trace", sort=False)):
    plots.policy_bars(s.reset_index(drop=True), ax=ax)
    ax.set_title(k)
plt.tight_layout()
