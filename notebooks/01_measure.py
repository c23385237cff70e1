# ---
# jupyter:
#   energykit:
#     description: runs or resumes a measurement sweep from a params file (GPU with
#       NVML; CPU for a check)
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
# # Measuring energy per request
#
# Runs (or resumes) a sweep defined by a parameter file: the same code as
# `python -m energykit measure PARAMS.yaml` and `make measure PARAMS=...`. Every window is appended to
# `OUTPUT/windows.jsonl` as it completes, so an interrupted notebook loses at most one window: run the
# cell again and it resumes.
#
# **Protocol** (docs/measuring.md): synchronise the device, read the NVML energy counter, run the same
# batch of requests until the window lasts `min_window_s`, synchronise, read again, divide by the
# number of calls. Cells are shuffled, each model is warmed up, each cell is repeated, and an idle
# baseline is stored with the sweep.

# %% tags=["parameters"]
params_file = "params/measure_cpu_tiny.yaml"  # sweep definition (engine, models, lengths, meter, output)
output = ""  # override the params file's output directory (empty: keep it)

# %%
import matplotlib.pyplot as plt
import seaborn as sns

from energykit import dataset, params as params_schema, sweep

sns.set_theme(context="notebook", style="whitegrid")
# %matplotlib inline

# %%
params = params_schema.load_measure_params(params_file)
if output:
    params = params.model_copy(update={"output": output})
    params = params_schema.MeasureParams.model_validate(params.model_dump())
path = sweep.run(params, params_file)
ds = dataset.load(path)
ds

# %% [markdown]
# ## Windows and their spread over repeats

# %%
df = dataset.to_frame(ds)
cells = df.groupby(["model", "batch_size", "input_len", "output_len"]).agg(
    duration_s=("duration_s", "mean"), energy_j=("energy_j", "mean"), energy_std_j=("energy_j", "std"),
    iterations=("iterations", "mean"), repeats=("repeat", "count"))
cells["spread_pct"] = 100 * cells["energy_std_j"] / cells["energy_j"]
cells

# %%
g = sns.relplot(data=df.rename(columns={"input_len": "input length [tokens]"}), x="output_len", y="duration_s",
                hue="input length [tokens]", col="model", kind="line", marker="o", palette="crest", height=3.5)
g.set(xscale="log", yscale="log", xlabel="output length [tokens]", ylabel="time per call [s]");

# %%
{k: ds.attrs.get(k) for k in ("gpu", "gpu_uuid", "driver_version", "power_limit_w", "counter_period_s",
                               "idle_power_w", "engine_versions", "errors", "invalid_windows")}
