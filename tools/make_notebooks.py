"""Write the thin report notebooks (without outputs). Run: python tools/make_notebooks.py"""

from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

ROOT = Path(__file__).resolve().parent.parent


def nb(cells, description):
    out = []
    for kind, src in cells:
        src = src.strip("\n")
        if kind == "md":
            out.append(new_markdown_cell(src))
        elif kind == "params":
            out.append(new_code_cell(src, metadata={"tags": ["parameters"]}))
        else:
            out.append(new_code_cell(src))
    book = new_notebook(cells=out)
    book.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    book.metadata["language_info"] = {"name": "python"}
    book.metadata["energykit"] = {"description": description}
    return book


SETUP = """
import matplotlib.pyplot as plt
import pandas as pd
import seaborn as sns

from energykit import dataset, fitting, plots, sweetspots

sns.set_theme(context="notebook", style="whitegrid")
pd.set_option("display.precision", 4)
%matplotlib inline
"""

FIT = [
    ("md", """
# Fitting the SweetSpot energy model

How much energy does one LLM request cost as a function of its input length $i$ and output length
$o$? This notebook fits the analytical model of Pizzini Cavagna et al. (*Determining Energy
Efficiency Sweet Spots in Production LLM Inference*, arXiv:2602.05695) to measured energy and
compares it with the usual linear estimate.
"""),
    ("params", """
data = ["data/h200_hf_energykit/measurements.nc"]  # measured files (.nc, .csv, .jsonl), relative to the repo root
loss = "l1"  # "l1": robust relative loss (default); "l2": relative least squares
cv_folds = 5  # folds of the cross-validation over cells
"""),
    ("code", SETUP),
    ("md", """
## The measurements

One *window* is one `generate()` call on a batch of $B$ requests of identical lengths; `energy_j`
is the board energy of that call from the NVML total-energy counter (idle included). The dataset is
indexed by `model`, `batch_size`, `input_len`, `output_len` and `repeat`.
"""),
    ("code", """
ds = dataset.load_many(data)
raw = dataset.to_frame(ds)
print(ds.attrs.get("source"), "|", ds.attrs.get("gpu"), "|", ds.attrs.get("engine"))
ds
"""),
    ("code", """
means = dataset.cell_means(ds)
spread = (100 * means["energy_j_std"] / means["energy_j"]).to_dataframe(name="repeat_spread_pct")
spread = spread.join(means["duration_s"].to_dataframe()[["duration_s"]]).dropna()
ax = sns.scatterplot(data=spread.reset_index(), x="duration_s", y="repeat_spread_pct", hue="model")
ax.set(xscale="log", xlabel="window duration [s]", ylabel="repeat spread (std/mean) [%]",
       title="short windows carry NVML counter-step noise");
"""),
    ("md", r"""
## Where the model comes from

Notation: $B$ sequences, $L$ layers, hidden size $d$, $n_q$/$n_{kv}$ query/key-value heads of
dimension $d_h$, $N$ non-embedding parameters, vocabulary $V$, $\beta$ bytes per element.

**Prefill** of $i$ tokens is compute-bound:
$\mathrm{FLOPs}_\mathrm{prefill} \approx B\,(2 N i + 2 L n_q d_h i^2)$ — the weight GEMMs and causal attention.

**Decode** at context length $c$ is memory-bound at small batch:
$\mathrm{FLOPs} \approx B\,(2N + 4 L n_q d_h c + 2 d V)$ and
$\mathrm{bytes} \approx \beta (N + dV) + B \cdot 2 L n_{kv} d_h \beta c$ — every step reads the weights
once and the KV cache of every sequence.

Over $o$ decode steps the context runs from $i$ to $i+o-1$, so
$\sum c = o\,i + o(o-1)/2$. Energy is dynamic energy per FLOP and per byte plus static power
times time, and the phase times have the same polynomial shape. Collecting powers:

$$E(i,o) = \theta_1 i^2 + \theta_2\, i o + \theta_3 i + \theta_4 o^2 + \theta_5 o + \theta_0,\qquad \theta_k \ge 0$$

| term | origin |
|---|---|
| $\theta_1 i^2$ | prefill causal attention |
| $\theta_3 i$ | prefill weight GEMMs |
| $\theta_2 i o$, $\theta_4 o^2$ | decode attention and KV-cache reads ($\theta_4 \approx \theta_2/2$) |
| $\theta_5 o$ | per-step weight reads and per-step overheads |
| $\theta_0$ | fixed cost per request batch |

The baseline is $E = a i + b o + c$. Both are fitted per model and batch size on the repeat means,
weighted by $1/E$ so that the fit minimises relative error; with `loss="l1"` the weights are
re-weighted iteratively so that the fit minimises the mean absolute relative error, which keeps
counter-step outliers of short windows from dominating.
"""),
    ("code", """
fits = fitting.fit_dataset(ds, loss=loss, cv_folds=cv_folds)
summary = fits.summary()
summary
"""),
    ("md", """
`mape_pct` is the in-sample mean absolute percentage error over cells, `cv_mape_pct` the same for
cells predicted by a fit that did not see them ($k$-fold over cells), `baseline_*` the linear model.
"""),
    ("md", """
θ with lmfit's standard error and a 95 % interval from a wild bootstrap of the fit (each draw
perturbs every cell by its own relative residual with a random sign and refits; see
`energykit.uncertainty`). A θ on its bound (0) has no standard error.
"""),
    ("code", """
from energykit import uncertainty

theta = pd.concat(
    [uncertainty.theta_table(fits.get(m, b)).assign(model=m, batch_size=b) for m, b in fits.keys]
).set_index(["model", "batch_size", "param"])
theta["units"] = [fitting.THETA_UNITS[p] for p in theta.index.get_level_values("param")]
theta.style.format("{:.4g}", subset=["value", "stderr", "ci_low", "ci_high"])
"""),
    ("code", """
pd.Series(fitting.THETA_MEANING, name="term").to_frame()
"""),
    ("md", "## Measured points and fitted curves\n\nPoints: repeat means; dots: single windows; lines: the analytical model, with its 95 % band."),
    ("code", """
for m, b in fits.keys:
    fig, axes = plt.subplots(1, 2, figsize=(13, 4.5))
    r = raw[(raw["model"] == m) & (raw["batch_size"] == b)]
    plots.fit_curves(fits.get(m, b, "sweetspot"), r, ax=axes[0])
    plots.fit_curves(fits.get(m, b, "linear"), r, ax=axes[1])
    plt.tight_layout()
    plt.show()
"""),
    ("md", "## Parity and residuals"),
    ("code", """
fig, axes = plt.subplots(1, 3, figsize=(18, 5))
plots.parity(fits, "sweetspot", ax=axes[0])
plots.parity(fits, "linear", ax=axes[1])
plots.residuals(fits, ax=axes[2])
plt.tight_layout()
"""),
    ("md", "## Accuracy: analytical model vs linear baseline"),
    ("code", """
acc = summary.melt(id_vars="model", value_vars=["mape_pct", "cv_mape_pct", "baseline_mape_pct", "baseline_cv_mape_pct"],
                   var_name="metric", value_name="percent")
ax = sns.barplot(data=acc, x="percent", y="model", hue="metric")
ax.set(xlabel="MAPE [%]", ylabel="", title="lower is better");
"""),
]

SWEET = [
    ("md", r"""
# Sweet spots: where tokens per joule peak

Efficiency is output tokens per joule, $\eta = B o / E(i,o)$. For a fixed input the energy per
output token is minimised at

$$o^*(i) = \sqrt{\frac{\theta_1 i^2 + \theta_3 i + \theta_0}{\theta_4}}$$

Short outputs cannot amortise the prefill and the fixed cost; long outputs pay growing KV-cache
reads. The *sweet-spot region* is every cell within `sweet_pct` % of the best efficiency.
"""),
    ("params", """
data = ["data/h200_hf_energykit/measurements.nc"]  # measured files (.nc, .csv, .jsonl), relative to the repo root
loss = "l1"  # fit loss: "l1" (robust relative) or "l2"
cv_folds = 5  # folds of the cross-validation
sweet_pct = 10.0  # a cell is in the sweet-spot region when within this % of the best efficiency
"""),
    ("code", SETUP),
    ("code", """
ds = dataset.load_many(data)
fits = fitting.fit_dataset(ds, loss=loss, cv_folds=cv_folds)
measured = sweetspots.measured_map(ds)
"""),
    ("md", "## Measured efficiency, with the fitted $o^*(i)$\n\nRed boxes: the sweet-spot region; dashed line: $o^*(i)$ from the fit."),
    ("code", """
for m, b in fits.keys:
    fig, axes = plt.subplots(1, 2, figsize=(16, 6))
    plots.efficiency_heatmap(measured["tokens_per_j"].sel(model=m, batch_size=b), fits.get(m, b), sweet_pct,
                             title=f"{m}: measured tokens/J", ax=axes[0])
    fm = sweetspots.fitted_map(fits.get(m, b), sweetspots.PAPER_GRID, sweetspots.PAPER_GRID)
    plots.efficiency_heatmap(fm["tokens_per_j"], fits.get(m, b), sweet_pct, extrapolated=fm["extrapolated"],
                             low=fm["tokens_per_j_low"], high=fm["tokens_per_j_high"],
                             title=f"{m}: fitted on the paper's grid [95 % interval] (hatched: extrapolated)", ax=axes[1])
    plt.tight_layout()
    plt.show()
"""),
    ("md", """
## How sure is the sweet-spot region?

Share of bootstrap draws of the fit in which each cell of the paper's grid lies within `sweet_pct` %
of the best efficiency: 1 means in the region whatever the fit's uncertainty.
"""),
    ("code", """
fig, axes = plt.subplots(1, len(fits.keys), figsize=(7 * len(fits.keys), 5), squeeze=False)
for ax, (m, b) in zip(axes[0], fits.keys):
    share = sweetspots.region_probability(fits.get(m, b), within_pct=sweet_pct)
    plots.region_probability_heatmap(share, title=m, ax=ax)
plt.tight_layout()
"""),
    ("md", "## Energy per output token\n\nThe same maps as joules per output token (lower is better)."),
    ("code", """
jpt = measured["energy_per_token_j"].to_dataframe().reset_index().dropna()
g = sns.relplot(data=jpt, x="output_len", y="energy_per_token_j", hue="input_len", col="model", kind="line",
                marker="o", palette="crest", col_wrap=3, height=3.5)
g.set(xscale="log", yscale="log", xlabel="output length [tokens]", ylabel="J per output token");
"""),
    ("md", "## $o^*(i)$: closed form vs numeric optimum\n\nBoth must agree; `o_star_low`/`o_star_high` is the 95 % bootstrap interval; `o_star_extrapolated` marks optima outside the measured outputs."),
    ("code", """
ostar = sweetspots.o_star_table(fits)
ostar["rel_diff"] = (ostar["o_star"] - ostar["o_star_numeric"]).abs() / ostar["o_star"]
assert (ostar["rel_diff"].dropna() < 1e-4).all(), "closed-form o* disagrees with the numeric optimum"
ostar
"""),
    ("md", """
## Best vs worst

The paper reports up to 33.41x between the best and worst cells of its 64–4096 grid on an H100 with
TensorRT-LLM. Below: the ratio on the measured grid (measured values) and on the paper's grid
(fitted, with its 95 % interval; cells outside the measured range are extrapolated and counted).
"""),
    ("code", "sweetspots.ratio_table(ds, fits)"),
    ("md", """
## GQA vs MHA

Grouped-query attention shares each key/value head among several query heads, so the KV cache that
every decode step reads is smaller: $2 L n_{kv} d_h \\beta$ bytes per token. Models of similar size
measured with the same engine are compared on the cells they share (geometric mean of tokens/J).
"""),
    ("code", """
att = sweetspots.attention_table(ds, fits)
att
"""),
    ("code", """
if not att.empty:
    fig, axes = plt.subplots(1, 2, figsize=(13, 4))
    sns.barplot(data=att, y="model", x="kv_bytes_per_token", hue="attention", ax=axes[0])
    sns.barplot(data=att, y="model", x="geomean_tokens_per_j", hue="attention", ax=axes[1])
    axes[0].set(xlabel="KV-cache bytes per token", ylabel="")
    axes[1].set(xlabel="geometric-mean tokens/J on shared cells", ylabel="")
    plt.tight_layout()
"""),
]

WORK = [
    ("md", """
# What would a production workload save?

The fitted model prices every request of a real production trace: the Azure LLM inference traces
of 2023 (code completion and conversation). Then simple policies move requests toward the sweet
spots: truncating (or summarising) long prompts, capping outputs.

*Traces: Patel et al., "Splitwise: Efficient generative LLM inference using phase splitting",
ISCA 2024; Azure Public Dataset, CC-BY 4.0.*
"""),
    ("params", """
data = ["data/h200_hf_energykit/measurements.nc"]  # measured files (.nc, .csv, .jsonl), relative to the repo root
loss = "l1"  # fit loss: "l1" (robust relative) or "l2"
cv_folds = 5  # folds of the cross-validation
sweet_pct = 10.0  # "near the sweet spot": efficiency within this % of the best
workload_model = ""  # model whose fit prices the traces (empty: the first model in the data)
traces = {"code": "data/azure_llm_inference_trace_2023_code.csv", "conv": "data/azure_llm_inference_trace_2023_conv.csv"}  # name: file
truncate_inputs = [2048, 1024]  # policies: truncate inputs above each length
cap_outputs = [256, 128]  # policies: cap outputs at each length
"""),
    ("code", SETUP + "from energykit import iotools, workloads\n"),
    ("code", """
ds = dataset.load_many(data)
fits = fitting.fit_dataset(ds, loss=loss, cv_folds=cv_folds)
name = workload_model or fits.keys[0][0]
fit = fits.get(name)
loaded = {k: iotools.read_trace(v)[0] for k, v in traces.items()}
print(f"pricing with {name} at batch size {fit.batch_size}; measured inputs {fit.input_len.min()}–{fit.input_len.max()}, "
      f"outputs {fit.output_len.min()}–{fit.output_len.max()} tokens")
"""),
    ("md", """
**Assumptions.** Each request is served as it was measured: in a batch of $B$ concurrent sequences of
the same lengths, so it costs $E(i,o)/B$. Energy is whole-board energy, idle included. Requests
whose lengths fall outside the measured grid are priced by extrapolating the analytical model and
are counted in `extrapolated_pct`.
"""),
    ("code", """
fig, axes = plt.subplots(1, len(loaded), figsize=(7 * len(loaded), 5), squeeze=False)
for ax, (k, t) in zip(axes[0], loaded.items()):
    plots.trace_density(t, fit, title=f"{k}: {len(t)} requests", ax=ax)
plt.tight_layout()
"""),
    ("md", "Totals carry their 95 % bootstrap interval (`_low`, `_high`)."),
    ("code", """
pd.DataFrame([{"trace": k, **workloads.trace_summary(fit, t, sweet_pct)} for k, t in loaded.items()])
"""),
    ("md", """
## Energy per request

Distribution of the modelled energy per request; the x axis is logarithmic.
"""),
    ("code", """
per = pd.concat([workloads.trace_energy(fit, t, sweet_pct).assign(trace=k) for k, t in loaded.items()])
ax = sns.histplot(data=per, x="energy_j", hue="trace", log_scale=True, element="step", stat="density", common_norm=False)
for color, (k, t) in zip(sns.color_palette(), loaded.items()):
    s = workloads.trace_summary(fit, t, sweet_pct)
    ax.axvline(s["mean_energy_per_request_j"], color=color, ls="--")
    ax.axvspan(s["mean_energy_per_request_j_low"], s["mean_energy_per_request_j_high"], color=color, alpha=0.2)
ax.set(xlabel="energy per request [J]", title="dashed: mean per request, shaded: its 95 % interval");
"""),
    ("md", """
## Policies

`saving_pct` compares total energy (`saving_pct_low`/`_high`: 95 % bootstrap interval, each draw
prices the trace before and after with the same θ); `energy_per_token_change_pct` compares joules per *delivered*
output token (a cap saves energy partly by delivering fewer tokens, and `output_tokens_kept_pct`
says how many). The assumption of each policy stands next to its numbers.
"""),
    ("code", """
policies = workloads.policies_from_params(truncate_inputs, cap_outputs)
savings = pd.concat([workloads.policy_savings(fit, t, policies).assign(trace=k) for k, t in loaded.items()])
savings.set_index(["trace", "policy"])
"""),
    ("code", """
fig, axes = plt.subplots(1, len(loaded), figsize=(8 * len(loaded), 4.5), squeeze=False)
for ax, (k, s) in zip(axes[0], savings.groupby("trace", sort=False)):
    plots.policy_bars(s.reset_index(drop=True), ax=ax)
    ax.set_title(k)
plt.tight_layout()
"""),
]

MEASURE = [
    ("md", """
# Measuring energy per request

Runs (or resumes) a sweep defined by a parameter file: the same code as
`python -m energykit measure PARAMS.yaml` and `make measure PARAMS=...`. Every window is appended to
`OUTPUT/windows.jsonl` as it completes, so an interrupted notebook loses at most one window: run the
cell again and it resumes.

**Protocol** (README, "Measuring on your GPU"): synchronise the device, read the NVML energy counter, run the same
batch of requests until the window lasts `min_window_s`, synchronise, read again, divide by the
number of calls. Cells are shuffled, each model is warmed up, each cell is repeated, and an idle
baseline is stored with the sweep.
"""),
    ("params", """
params_file = "params/measure_cpu_tiny.yaml"  # sweep definition (engine, models, lengths, meter, output)
output = ""  # override the params file's output directory (empty: keep it)
"""),
    ("code", """
import matplotlib.pyplot as plt
import seaborn as sns

from energykit import dataset, params as params_schema, sweep

sns.set_theme(context="notebook", style="whitegrid")
%matplotlib inline
"""),
    ("code", """
params = params_schema.load_measure_params(params_file)
if output:
    params = params.model_copy(update={"output": output})
    params = params_schema.MeasureParams.model_validate(params.model_dump())
path = sweep.run(params, params_file)
ds = dataset.load(path)
ds
"""),
    ("md", "## Windows and their spread over repeats"),
    ("code", """
df = dataset.to_frame(ds)
cells = df.groupby(["model", "batch_size", "input_len", "output_len"]).agg(
    duration_s=("duration_s", "mean"), energy_j=("energy_j", "mean"), energy_std_j=("energy_j", "std"),
    iterations=("iterations", "mean"), repeats=("repeat", "count"))
cells["spread_pct"] = 100 * cells["energy_std_j"] / cells["energy_j"]
cells
"""),
    ("code", """
g = sns.relplot(data=df, x="output_len", y="duration_s", hue="input_len", col="model", kind="line", marker="o",
                palette="crest", height=3.5)
g.set(xscale="log", yscale="log", xlabel="output length [tokens]", ylabel="time per generate() [s]");
"""),
    ("code", """
{k: ds.attrs.get(k) for k in ("gpu", "gpu_uuid", "driver_version", "power_limit_w", "counter_period_s",
                               "idle_power_w", "engine_versions", "errors", "invalid_windows")}
"""),
]

PLAN = [
    ("md", """
# Planning: answers before GPU hours

Three questions a user asks before measuring: *what will this model cost on my GPU*, *which few
cells must I measure*, and *how sure are the savings*. Every predicted number carries its 95 %
interval.
"""),
    ("params", """
data = ["data/h200_hf_energykit/measurements.nc"]  # measured files for the design study (.nc, .csv, .jsonl)
calibrate_data = "data/h200_hf_energykit/measurements.nc"  # one GPU and engine: calibrates the hardware model
predict_geometries = ["qwen2-1.5b", "llama3.2-3b"]  # presets (or config.json paths) to predict
design_budgets = [6, 8, 10, 12]  # budgets k for the designed sparse grids
loss = "l1"  # fit loss: "l1" (robust relative) or "l2"
sweet_pct = 10.0  # sweet-spot region: within this % of the best tokens/J
traces = {"code": "data/azure_llm_inference_trace_2023_code.csv", "conv": "data/azure_llm_inference_trace_2023_conv.csv"}  # name: file
truncate_inputs = [2048, 1024]  # policies: truncate inputs above each length
cap_outputs = [256, 128]  # policies: cap outputs at each length
"""),
    ("code", SETUP + "from energykit import design, hardware, iotools, presets, uncertainty, workloads\n"),
    ("md", r"""
## 1. What will this model cost on my GPU?

Each θ is an architecture count times a hardware coefficient, so the energy of a request batch is

$$E = c_\mathrm{pf} F_\mathrm{prefill} + c_\mathrm{df} F_\mathrm{decode} + c_\mathrm{w}\,\mathrm{Bytes}_\mathrm{weights}
      + c_\mathrm{kv}\,\mathrm{Bytes}_\mathrm{KV} + c_\mathrm{step} L o + c_0$$

with FLOPs and bytes computed from the geometry (`energykit.physics`). The coefficients are
calibrated on the measured models of one GPU and engine; a new geometry then gives its whole grid,
its θ and its sweet spots. The leave-one-model-out table says how well that transfers.
"""),
    ("code", """
cal = dataset.load(calibrate_data)
hw = hardware.calibrate(cal, loss=loss)
print(f"calibrated on {hw.calibrated_on} ({hw.gpu}, {hw.engine})")
hardware.coefficient_table(hw)
"""),
    ("code", """
lomo = hardware.leave_one_model_out(cal, loss)
lomo
"""),
    ("code", """
B = int(cal["batch_size"].values[0])
ins = [int(v) for v in cal["input_len"].values]
outs = [int(v) for v in cal["output_len"].values]
for name in predict_geometries:
    gname, geom, _ = presets.resolve(name)
    table = hardware.prediction_table(hw, geom, B, ins, outs)
    display(hardware.theta_interval_table(hw, geom, B).style.set_caption(f"{gname}: predicted θ [95 % interval]")
            .format("{:.4g}"))
    grid = table.set_index(["output_len", "input_len"])
    fig, ax = plt.subplots(figsize=(7, 4.5))
    annot = grid.apply(lambda r: f"{r.tokens_per_j:.2f}\\n[{r.tokens_per_j_low:.2f}, {r.tokens_per_j_high:.2f}]", axis=1)
    sns.heatmap(grid["tokens_per_j"].unstack().sort_index(ascending=False),
                annot=annot.unstack().sort_index(ascending=False), fmt="", cmap="viridis", ax=ax,
                cbar_kws={"label": "predicted tokens/J"})
    ax.set(title=f"{gname}: predicted tokens/J with 95 % interval", xlabel="input length i", ylabel="output length o")
    plt.show()
"""),
    ("md", r"""
## 2. Which k cells should I measure?

For a budget of $k$ cells the kit picks a D-optimal design for the analytical model (corners
first, then the cells that most increase $\log\det X^\top W X$), fits on those cells only and
predicts the rest. The held-out MAPE against $k$ shows how many cells a model needs.
"""),
    ("code", """
ds = dataset.load_many(data)
# held-out MAPE compares predictions with measured cells the fit never saw: it is itself the check
curve = pd.concat([design.evaluate_design(ds, k, loss).assign(budget=k) for k in design_budgets])
ax = sns.lineplot(data=curve, x="budget", y="heldout_mape_pct", hue="model", marker="o")
ax.set(xlabel="cells measured (k)", ylabel="MAPE on the cells not measured [%]");
"""),
    ("code", """
k = 8 if 8 in design_budgets else design_budgets[0]
curve.query("budget == @k")[["model", "heldout_cells", "heldout_mape_pct", "cells"]]
"""),
    ("md", """
Put the chosen pairs in a sweep's params as `cells: [[i, o], ...]` and `energykit measure`
measures only those.

## 3. Savings on the Azure traces, with their uncertainty

The savings of each policy for every predicted model: each bootstrap draw of the calibration prices
the trace before and after the policy with the same θ. Assumptions as in `04_workloads`: a request
costs $E(i,o)/B$ in a batch of $B$ identical requests; policies change lengths only.
*Traces: Patel et al., "Splitwise", ISCA 2024 (CC-BY 4.0).*
"""),
    ("code", """
policies = workloads.policies_from_params(truncate_inputs, cap_outputs)
rows = []
for name in predict_geometries:
    gname, geom, _ = presets.resolve(name)
    for tname, path in traces.items():
        t = iotools.read_trace(path)[0]
        rows.append(workloads.predicted_policy_savings(hw, geom, B, t, policies).assign(model=gname, trace=tname))
saved = pd.concat(rows)
saved.set_index(["model", "trace", "policy"])
"""),
    ("code", """
g = sns.FacetGrid(saved, col="trace", row="model", height=3.2, aspect=2, sharey=False)
g.map_dataframe(lambda data, **kw: plots.policy_bars(data.reset_index(drop=True), ax=plt.gca()))
plt.tight_layout()
"""),
]

if __name__ == "__main__":
    books = {
        "01_measure.ipynb": (MEASURE, "runs or resumes a measurement sweep from a params file (GPU with NVML; CPU for a check)"),
        "02_fit.ipynb": (FIT, "fits the SweetSpot analytical model and the linear baseline to measured energy: θ, MAPE, cross-validation, parity"),
        "03_sweetspots.ipynb": (SWEET, "efficiency maps (tokens/J), the sweet-spot region, o*(i), best/worst ratios and GQA vs MHA"),
        "05_planning.ipynb": (PLAN, "predicts unmeasured models from their geometry, designs sparse grids (held-out MAPE vs k), and trace savings with intervals"),
        "04_workloads.ipynb": (WORK, "prices the Azure production traces with the fitted model and the savings of truncation and output caps"),
    }
    for name, (cells, desc) in books.items():
        nbformat.write(nb(cells, desc), ROOT / "notebooks" / name)
        print("wrote", name)
