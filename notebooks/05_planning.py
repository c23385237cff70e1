# ---
# jupyter:
#   energykit:
#     description: predicts unmeasured models from their geometry, designs sparse grids
#       (held-out MAPE vs k), and trace savings with intervals
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
# # Planning: answers before GPU hours
#
# Three questions a user asks before measuring: *what will this model cost on my GPU*, *which few
# cells must I measure*, and *how sure are the savings*. Every predicted number carries its 95 %
# interval.

# %% tags=["parameters"]
data = ["data/h200_hf_energykit/measurements.nc"]  # measured files for the design study (.nc, .csv, .jsonl)
calibrate_data = "data/h200_hf_energykit/measurements.nc"  # one GPU and engine: calibrates the hardware model
predict_geometries = ["qwen2-1.5b", "llama3.2-3b"]  # presets (or config.json paths) to predict
design_budgets = [6, 8, 10, 12]  # budgets k for the designed sparse grids
loss = "l1"  # fit loss: "l1" (robust relative) or "l2"
sweet_pct = 10.0  # sweet-spot region: within this % of the best tokens/J
traces = {"code": "data/azure_llm_inference_trace_2023_code.csv", "conv": "data/azure_llm_inference_trace_2023_conv.csv"}  # name: file
truncate_inputs = [2048, 1024]  # policies: truncate inputs above each length
cap_outputs = [256, 128]  # policies: cap outputs at each length

# %%
import matplotlib.pyplot as plt
import pandas as pd
import seaborn as sns

from energykit import dataset, plots, sweetspots

sns.set_theme(context="notebook", style="whitegrid")
pd.set_option("display.precision", 4)
pd.set_option("display.max_colwidth", None)  # table cells are read in full (they wrap), never cut with "..."
# %matplotlib inline
from energykit import design, hardware, iotools, presets, uncertainty, workloads

# %%
from IPython.display import Markdown, display

from energykit import summary

cal = dataset.load(calibrate_data)
lomo = hardware.leave_one_model_out(cal, loss)
summary.show(*summary.planning_results(lomo, cal))

# %% [markdown]
# ## 1. What will this model cost on my GPU?
#
# Each θ is an architecture count times a hardware coefficient, so the energy of a request batch is
#
# $$E = c_\mathrm{pf} F_\mathrm{prefill} + c_\mathrm{df} F_\mathrm{decode} + c_\mathrm{w}\,\mathrm{Bytes}_\mathrm{weights}
#       + c_\mathrm{kv}\,\mathrm{Bytes}_\mathrm{KV} + c_\mathrm{step} L o + c_0$$
#
# with FLOPs and bytes computed from the geometry (`energykit.physics`). The coefficients are
# calibrated on the measured models of one GPU and engine; a new geometry then gives its whole grid,
# its θ and its sweet spots. The leave-one-model-out table says how well that transfers.

# %%
hw = hardware.calibrate(cal, loss=loss)
display(Markdown(iotools.escape_markdown(f"Calibrated on {', '.join(hw.calibrated_on)} from `{calibrate_data}` "
                                         f"({hw.gpu}, {hw.engine}).")))
coef = hardware.coefficient_table(hw)
unknown = hw.unidentified()  # the same rule as the table's `identified` column and `energykit predict --json`
if not hw.all_identified():
    display(Markdown(f"**These calibration models do not identify {len(unknown)} of the 6 hardware coefficients** "
                     f"({', '.join(unknown)}; design rank {hw.rank} of 6). Each sits on its bound (0) in the fit or "
                     "in most bootstrap draws, so the predictions below are a rough guide, with skewed intervals. "
                     "Measuring more geometries (other layer counts, KV heads and sizes) identifies them."))
summary.table(coef.reset_index(), index="coefficient")

# %%
summary.table(lomo)

# %%
B = int(cal["batch_size"].values[0])
ins = [int(v) for v in cal["input_len"].values]
outs = [int(v) for v in cal["output_len"].values]
# θ's bootstrap says how noisy the calibration is; how far an unseen geometry may be off is the
# leave-one-model-out error above, so each predicted cell's interval covers that too
transfer = hardware.transfer_error_pct(lomo)
for name in predict_geometries:
    gname, geom, _ = presets.resolve(name)
    table = hardware.with_transfer_error(hardware.prediction_table(hw, geom, B, ins, outs), transfer)
    display(Markdown(f"**{gname}: predicted θ [95 % interval: θ's bootstrap only, not the transfer error]**"))
    display(summary.table(hardware.theta_interval_table(hw, geom, B).reset_index(), index="param"))
    grid = table.set_index(["output_len", "input_len"])
    fig, ax = plt.subplots(figsize=(max(7, 1.4 * len(ins)), max(4.5, 1.0 * len(outs))))
    annot = grid.apply(lambda r: f"{summary.fmt(r.tokens_per_j, 3)}\n[{summary.fmt(r.tokens_per_j_low, 3)}, "
                                 f"{summary.fmt(r.tokens_per_j_high, 3)}]", axis=1)
    sns.heatmap(grid["tokens_per_j"].unstack().sort_index(ascending=False),
                annot=annot.unstack().sort_index(ascending=False), fmt="", cmap="viridis", ax=ax,
                annot_kws={"fontsize": 8},
                cbar_kws={"label": "predicted tokens/J"})
    caveat = "" if hw.all_identified() else f"\n{len(unknown)} of 6 hardware coefficients not identified: a rough guide"
    covers = (f"interval: θ's 95 % bootstrap widened by ±{transfer:.0f} % transfer error (leave-one-model-out MAPE)"
              if transfer == transfer else "interval: θ's 95 % bootstrap only; the transfer is unchecked (one calibration model)")
    ax.set(title=f"{gname}: predicted tokens/J [{covers}]{caveat}", xlabel="input length i [tokens]",
           ylabel="output length o [tokens]")
    plt.show()

# %% [markdown]
# ## 2. Which k cells should I measure?
#
# For a budget of $k$ cells the kit picks a D-optimal design for the analytical model (corners
# first, then the cells that most increase $\log\det X^\top W X$), fits on those cells only and
# predicts the rest. The held-out MAPE against $k$ shows how many cells a model needs.

# %%
ds = dataset.load_many(data)
# held-out MAPE compares predictions with measured cells the fit never saw: it is itself the check
curve = pd.concat([design.evaluate_design(ds, k, loss).assign(budget=k) for k in design_budgets])
ax = sns.lineplot(data=curve, x="budget", y="heldout_mape_pct", hue="model", marker="o")
ax.set(xlabel="cells measured (k)", ylabel="MAPE on the cells not measured [%]")
plots.legend_outside(ax);

# %%
k = 8 if 8 in design_budgets else design_budgets[0]
summary.table(curve.query("budget == @k")[["model", "heldout_cells", "heldout_mape_pct", "cells"]])

# %% [markdown]
# Put the chosen pairs in a sweep's params as `cells: [[i, o], ...]` and `energykit measure`
# measures only those.
#
# ## 3. Savings on the Azure traces, with their uncertainty
#
# The savings of each policy for every predicted model (positive: less energy). In brackets, the 95 %
# interval over the calibration's bootstrap (each draw prices the trace before and after the policy
# with the same θ), widened so that every request outside the calibration's measured lengths
# (`extrapolated pct`, after the policy) may be off by the transfer error (`extrapolation error pct`,
# the leave-one-model-out MAPE). Assumptions as in `04_workloads`: a request
# costs $E(i,o)/B$ in a batch of $B$ identical requests; policies change lengths only.
# *Traces: Patel et al., "Splitwise", ISCA 2024 (CC-BY 4.0).*

# %%
policies = workloads.policies_from_params(truncate_inputs, cap_outputs)
rows = []
for name in predict_geometries:
    gname, geom, _ = presets.resolve(name)
    for tname, path in traces.items():
        t = iotools.read_trace(path)[0]
        rows.append(workloads.predicted_policy_savings(hw, geom, B, t, policies, measured_range=(
            min(ins), max(ins), min(outs), max(outs)), error_pct=transfer).assign(model=gname, trace=tname))
saved = pd.concat(rows)
summary.table(saved, index=["model", "trace", "policy"])

# %%
g = sns.FacetGrid(saved, col="trace", row="model", height=3.2, aspect=2, sharey=False)
g.map_dataframe(lambda data, **kw: plots.policy_bars(data.reset_index(drop=True), ax=plt.gca()))
plt.tight_layout()
