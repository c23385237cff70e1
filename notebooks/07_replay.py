# ---
# jupyter:
#   energykit:
#     description: a request stream replayed against a server, predicted vs measured
#       energy, and each request's share of it; SIMULATED until a replay is measured
#       on a GPU
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
# # Replaying a production stream: does the model hold, and who used the energy?
#
# The batch-aware model $E(i, o, B)$ is fitted on isolated batches. A server sees a stream: requests
# arrive at their own times, join and leave a continuous batch, and share each decode step's weight
# reads. Two questions: does the fitted model predict the energy of the stream, and what is each
# request's share of it?
#
# **The stream model.** Each request pays its *own* terms — its prefill $\theta_1 i^2 + \theta_3 i$
# at its first token and $\theta_2 i + \theta_4 (2k+1) + \theta_5'$ at its $k$-th token, which add up to
# $\theta_2 i o + \theta_4 o^2 + \theta_5' o$ — and the requests in a step *share* its $\theta_w$ (weight
# reads, step overheads) and, when the step admits new requests, $\theta_0$. An isolated batch gives
# back $E(i, o, B)$ exactly. Which requests are in each step is reconstructed from the recorded
# first- and last-token times; between requests the board draws its idle power.
#
# **Attribution.** (a) *equal split*: own terms plus an equal share of every step the request was in;
# (b) *Shapley*: own terms plus the Shapley value of the shared energy in the game "serve only these
# requests of the busy period at their arrival times" (Fair-CO2, SIGMETRICS 2025, uses Shapley values
# for fair carbon accounting). Both are scaled to what the meter measured, so they sum to the measured
# busy energy; the residual against the model is stated beside them.

# %% tags=["parameters"]
data = ["data/h200_hf_energykit/measurements.nc"]  # measured files (.nc, .csv, .jsonl), relative to the repo root
loss = "l1"  # fit loss: "l1" (robust relative) or "l2"
cv_folds = 5  # folds of the cross-validation
calibrate_data = "data/h200_hf_energykit/measurements.nc"  # the simulated server's GPU and engine (hardware model)
traces = {"code": "data/azure_llm_inference_trace_2023_code.csv", "conv": "data/azure_llm_inference_trace_2023_conv.csv"}  # name: file
replay_dir = ""  # a folder written by `energykit replay`; empty: a replay SIMULATED from calibrate_data
replay_fit = ""  # fits (`energykit fit --save`) or data at several batch sizes of the replayed server; empty: data
replay_trace = "data/azure_llm_inference_trace_2023_conv.csv"  # the simulated replay's trace (empty: the first of traces)
replay_requests = 30  # requests of the simulated replay: the first of the trace, at their arrival times
replay_time_scale = 1.0  # the simulated replay's arrivals sped up by this factor
replay_window_s = 10.0  # predicted vs measured per window of this many seconds

# %%
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from IPython.display import Markdown, display

from energykit import dataset, notebook, plots, replay, summary

notebook.setup()  # the pages' display settings: seaborn theme, tables read in full, inline figures

SIM_WINDOW_S = 1.0  # meter window of the simulated replay [s]
SIM_NOISE_PCT = 2.0  # multiplicative noise of each simulated meter window [%]

# %%
simulated = not replay_dir
truth, recovery, reconstruction = None, None, None
if simulated:
    cal = dataset.load(calibrate_data or data[0])
    fit, step, prefill_s, idle_w, server = replay.simulated_server(cal)
    trace_path = replay_trace or next(iter(traces.values()))
    stream = replay.trace_stream(trace_path, replay_requests, replay_time_scale)
    rep, truth = replay.simulate(stream["arrival_s"], stream["input_len"], stream["output_len"], fit.params, idle_w,
                                 step, prefill_s, window_s=SIM_WINDOW_S, noise_pct=SIM_NOISE_PCT, seed=0)
    source = (f"The first {replay_requests} requests of `{trace_path}` at their arrival times (×{replay_time_scale:g}); "
              f"server: {server}; meter windows of {SIM_WINDOW_S:g} s with {SIM_NOISE_PCT:g} % noise")
    display(Markdown("# ⚠ SIMULATED REPLAY\n\n**Nothing on this page was measured**: the request stream, the "
                     "server and its meter are simulated (what, exactly: the key results below)."))
else:
    rep = replay.read_replay(replay_dir)
    fit = replay.server_fit(replay_fit or data, loss=loss, cv_folds=cv_folds, prefer=rep.meta.get("model"))
    source = (f"`{replay_dir}` ({rep.meta.get('trace', 'trace not named')}, meter {rep.meta.get('meter', '?')}, "
              f"started {rep.meta.get('started_at', '?')}); fit of {fit.model} E(i, o, B) on batch sizes "
              f"{', '.join(map(str, fit.batch_sizes))}")
windows, whole = replay.predict(rep, fit, window_s=replay_window_s)
table, totals = replay.attribute(rep, fit)
if truth is not None:
    by_id = table.set_index("request_id")
    recovery = float(np.max(np.abs(by_id["energy_j"] / truth - 1)) * 100)
    reconstruction = float(np.max(np.abs(by_id["model_j"] / truth - 1)) * 100)
summary.show(*summary.replay_results(whole, totals, simulated, source, recovery, replay_window_s, reconstruction))

# %% [markdown]
# ## Does the model fitted on isolated batches predict the stream?
#
# Measured energy of each window against the prediction: each request's own terms, the shared step
# terms over the steps reconstructed from the token times, idle power over the gaps. The interval is
# the fit's 95 % bootstrap interval (it covers the model's coefficients, not the meter's noise).

# %%
fig, ax = plt.subplots(figsize=(10, 4))
plots.replay_windows(windows, ax=ax)
ax.set_title(("SIMULATED — " if simulated else "") + f"energy per {replay_window_s:g} s window")
plt.show()
summary.table(windows[["start_s", "end_s", "measured_j", "predicted_j", "predicted_j_low", "predicted_j_high",
                       "idle_j", "error_pct"]], index="start_s").rename_axis("window from [s]").rename(columns={
    "end s": "to [s]", "measured j": "measured [J]", "predicted j [95 %]": "predicted [J] [95 %]",
    "idle j": "of which idle over gaps [J]", "error pct": "prediction error [%]"})

# %% [markdown]
# ## Who was in the batch, and when?
#
# Each request from sent to first token (grey: queueing and prefill) and from first to last token,
# coloured by the energy attributed to it. Requests that overlap share decode steps.

# %%
fig, ax = plt.subplots(figsize=(10, 0.18 * len(table) + 2))
plots.replay_timeline(table, ax=ax)
ax.set_title(("SIMULATED — " if simulated else "") + "requests over time")
plt.show()

# %% [markdown]
# ## What does a request cost, by its lengths?
#
# Energy attributed to each request against its input length, and per delivered token against its
# output length: long prompts cost prefill, short outputs cannot amortise it, and a request that
# decodes alone pays every step's weight reads by itself.

# %%
axes = plots.attribution_vs_lengths(table)
axes[0].figure.suptitle(("SIMULATED — " if simulated else "") + "attributed energy (equal split)")
plt.show()

# %% [markdown]
# ## Equal split or Shapley?
#
# The equal split divides the steps that happened; the Shapley value asks what each request adds to the
# shared energy given every subset of the others, rescheduled at their arrival times. Where a request's
# presence does not change who shares the steps, the two agree; they part where a request keeps others
# company (or is kept company) only because of the timing.

# %%
fig, ax = plt.subplots(figsize=(5.5, 5))
plots.attribution_methods(table, ax=ax)
ax.set_title(("SIMULATED — " if simulated else "") + "per request")
plt.show()
cols = ["request_id", "input_len", "output_len", "own_j", "shared_j", "energy_j", "energy_shapley_j",
        "shapley_stderr_j", "shapley_diff_pct", "energy_per_token_j", "busy_period", "shapley_method"]
if truth is not None:
    table["true_energy_j"] = truth.reindex(table["request_id"]).to_numpy()
    cols.append("true_energy_j")
summary.table(table[cols], index="request_id").rename(columns={
    "input len": "input [tokens]", "output len": "output [tokens]", "own j": "own terms [J]",
    "shared j": "share of steps [J]", "energy j": "equal split [J]", "energy shapley j": "Shapley [J]",
    "shapley stderr j": "Shapley std. error [J]", "shapley diff pct": "Shapley vs equal split [%]",
    "energy per token j": "per delivered token [J]", "busy period": "busy period", "shapley method": "Shapley by",
    "true energy j": "simulator's true energy [J]"})

# %% [markdown]
# ## What was measured, what was modelled, what was simulated
#
# - *Measured* (on a measured replay): each meter window's energy, every request's send, first- and
#   last-token times, the idle power before the replay. On this page's default, all of these are
#   **simulated**.
# - *Modelled*: the prediction (from the fit), which requests shared each step (from the token times,
#   assuming a request's tokens evenly spaced between its first and last), and the Shapley game's
#   counterfactual schedules (step time against batch size fitted on the replay).
# - *Attributed*: the measured busy energy, shared in proportion to each request's modelled energy
#   within each run of meter windows linked by requests; the residual against the model is in the
#   key results, never folded away.
