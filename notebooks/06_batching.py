# ---
# jupyter:
#   energykit:
#     description: energy per request and per token across batch sizes, E(i, o, B);
#       SIMULATED ONLY until GPU data at several batch sizes exist
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
# # Batching: energy across batch sizes, $E(i, o, B)$
#
# For one batch of $B$ requests, prefill compute and KV-cache reads scale with $B$, but a decode step
# reads the weights once for the whole batch and pays its launch overhead once:
#
# $$E(i, o, B) = B\,(\theta_1 i^2 + \theta_2 i o + \theta_3 i + \theta_4 o^2 + \theta_5' o) + \theta_w o + \theta_0$$
#
# At one $B$ this is the paper's model with $\theta_5 = B\theta_5' + \theta_w$ (docs/model.md, "Across batch
# sizes"). Energy per request is $E/B$; per output token $E/(Bo)$, which falls with $B$ towards the
# per-request part alone. Doubling $B$ saves less than 5 % per token once
# $B > 9\,(\theta_w o + \theta_0) / (\theta_1 i^2 + \theta_2 i o + \theta_3 i + \theta_4 o^2 + \theta_5' o)$.

# %% tags=["parameters"]
data = ["data/h200_hf_energykit/measurements.nc"]  # measured files (.nc, .csv, .jsonl), relative to the repo root
loss = "l1"  # fit loss: "l1" (robust relative) or "l2"
cv_folds = 5  # folds of the cross-validation
sweet_pct = 10.0  # a cell is in the sweet-spot region when within this % of the best efficiency
calibrate_data = "data/h200_hf_energykit/measurements.nc"  # hardware coefficients of the simulation (one GPU + engine)

# %%
import matplotlib.pyplot as plt
import pandas as pd
from IPython.display import Markdown, display

from energykit import dataset, hardware, notebook, plots, summary, sweetspots
from energykit.fit import fit_dataset

notebook.setup()  # the pages' display settings: seaborn theme, tables read in full, inline figures

SIM_BATCHES = (1, 4, 16, 64)  # batch sizes of the simulated sweep [requests]
SIM_NOISE_PCT = 3.0  # multiplicative noise of each simulated window [%]
REFERENCE = [(128, 128), (512, 512), (1024, 256), (4096, 1024)]  # (i, o) cells of the paper's grid [tokens]
SHOW_BATCHES = (1, 2, 4, 8, 16, 32, 64, 128, 256)  # batch sizes on the curves [requests]
DROP_PCT = 5.0  # "energy per token stops falling": doubling B saves less than this [%]

# %%
ds = dataset.load_many(data)
several = {m: dataset.batch_sizes(ds, m) for m in dataset.model_names(ds) if len(dataset.batch_sizes(ds, m)) > 1}
simulated = not several
if simulated:
    cal = dataset.load(calibrate_data)
    hw = hardware.calibrate(cal)
    name = hw.calibrated_on[0]
    windows = hardware.simulate(dataset.geometry(cal, name), hw.coef, SIM_BATCHES, (64, 256, 1024, 4096),
                                (16, 64, 256, 1024), noise_pct=SIM_NOISE_PCT, seed=0, name=f"{name} (SIMULATED)")
    batched = dataset.from_frame(windows)
    display(Markdown(
        f"> **Simulated only.** No measured data at several batch sizes exist yet ({summary.dataset_line(ds)}). "
        f"Every number and figure on this page comes from windows **simulated** from the per-step physics "
        f"(`energykit.hardware.simulate`) with the hardware coefficients calibrated on {', '.join(hw.calibrated_on)} "
        f"(`{calibrate_data}`, "
        f"{hw.gpu}, {hw.engine}) at batch {', '.join(map(str, sorted(set(cal['batch_size'].values.ravel().tolist()))))}, "
        f"at B ∈ {{{', '.join(map(str, SIM_BATCHES))}}} with {SIM_NOISE_PCT:g} % noise. They show what the analysis "
        "will report, not what a GPU does: a calibration at one batch size separates per-request from per-batch "
        "work only through the models' different geometries, so the batch at which savings stop is illustrative. "
        "The GPU validation comes with the paper-families measurement."))
else:
    batched = ds
    display(Markdown(f"Measured at several batch sizes: {', '.join(f'{m} ({sizes})' for m, sizes in several.items())}."))
fits = fit_dataset(batched, loss=loss, cv_folds=cv_folds)
rows = pd.DataFrame([{"model": m, "batch_size": b, "mape_pct": v, "leave_this_batch_out_mape_pct": fits.batch_cv[m][b]}
                     for m, f in fits.batched.items() for b, v in f.batch_mape_pct().items()])
sat = pd.concat([sweetspots.saturation_table(f, REFERENCE, DROP_PCT).assign(model=m) for m, f in fits.batched.items()])
summary.show(*summary.batching_results(ds, rows, sat, simulated, DROP_PCT, calibrate_data if simulated else ""))

# %% [markdown]
# ## How well one model explains every batch size
#
# MAPE of the batch-aware fit at each batch size, and the MAPE at a batch size when the fit never saw
# it (leave one batch size out: the others predict it).

# %%
summary.table(rows, index=["model", "batch_size"])

# %%
for m, f in fits.batched.items():
    th = pd.concat([f.energy_model.param_table(), pd.Series(f.params, name="value")], axis=1)
    display(Markdown(f"**{m}**: {f.energy_model.formula}"))
    display(th[["term", "value", "unit", "meaning"]])

# %% [markdown]
# ## Energy per request and per output token against the batch size
#
# At reference cells of the paper's grid, with 95 % bootstrap bands; filled points are batch sizes
# in the fit's data, open ones the model's prediction.

# %%
for m, f in fits.batched.items():
    bt = sweetspots.batch_table(f, REFERENCE, SHOW_BATCHES)
    axes = plots.batch_curves(bt)
    axes[0].figure.suptitle(m)  # a simulated model's name says SIMULATED
    plt.tight_layout()
    plt.show()

# %% [markdown]
# ## The batch beyond which energy per token stops falling
#
# Smallest batch at which doubling it saves less than 5 % of the energy per output token, with its 95 %
# interval over the fit's bootstrap draws; `beyond measured` marks a batch larger than any in the data.

# %%
summary.table(sat, index=["model", "input_len", "output_len"])

# %% [markdown]
# ## The sweet-spot region at each batch size
#
# Fitted tokens per joule on the paper's grid at each batch size of the data (red: within `sweet_pct` %
# of that batch's best; dashed: $o^*(i, B)$; hatched: lengths outside the fitted range).

# %%
for m, f in fits.batched.items():
    sizes = f.batch_sizes
    rows_ = (len(sizes) + 1) // 2
    fig, axes = plt.subplots(rows_, 2, figsize=(16, 6.5 * rows_), squeeze=False)
    for ax in axes.ravel()[len(sizes):]:
        ax.set_visible(False)
    for ax, b in zip(axes.ravel(), sizes):
        fm = sweetspots.fitted_map(f, sweetspots.PAPER_GRID, sweetspots.PAPER_GRID, batch_size=b)
        plots.efficiency_heatmap(fm["tokens_per_j"], f, sweet_pct, extrapolated=fm["extrapolated"], batch_size=b,
                                 title=f"{m}, B = {b}", ax=ax)
    plt.tight_layout()
    plt.show()
