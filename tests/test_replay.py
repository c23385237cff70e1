"""The replay analysis: folder reader, occupancy, prediction, attribution (equal split, Shapley), simulator.

The simulator (:func:`energykit.replay.simulate`) is a step-by-step continuous-batching server whose
energy is a known E(i, o, B); it knows every request's true energy (own terms plus an equal share of
each step it was in). The analysis sees only what the runner writes (the folder) and must recover it.
"""

import json

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import ROOT
from test_serve import real_server  # noqa: F401  (the module-scoped real server fixture, for the slow Done-when)

from energykit import replay as R
from energykit.errors import DataError, FitError
from energykit.fit import ModelFit, fit_cells
from energykit.model import BATCHED

THETA = dict(theta1=2e-6, theta2=1e-5, theta3=0.01, theta4=5e-6, theta5p=0.05, thetaw=0.6, theta0=3.0)
"""Coefficients of the simulated server (J, J/token, J/token²): the order of magnitude of a 1B model on an H200."""
STEP = R.StepTime(0.02, 0.0005)


def exact_fit(theta=THETA, noise_pct=0.0, seed=0):
    """A batched ModelFit on isolated-batch cells of a known E(i, o, B) (what `energykit fit` would store)."""
    rng = np.random.default_rng(seed)
    i, o, b = (a.ravel() for a in np.meshgrid([64, 256, 1024, 2048], [16, 64, 256, 512], [1, 4, 16, 64]))
    E = BATCHED.energy(i, o, b, **theta) * (1 + rng.normal(0, noise_pct / 100, i.shape))
    res = fit_cells(E, i, o, kind="batched", batch_size=b)
    return ModelFit("sim", "batched", res, {"input_len": i, "output_len": o, "batch_size": b}, E, np.full(len(E), np.nan))


def stream(n=30, seed=1, span_s=20.0):
    rng = np.random.default_rng(seed)
    return np.sort(rng.uniform(0, span_s, n)), rng.integers(32, 2048, n), rng.integers(8, 400, n)


@pytest.fixture(scope="module")
def fit():
    return exact_fit()


def through_folder(rep, tmp_path):
    return R.read_replay(R.write_replay(rep, tmp_path / "replay"))


@pytest.mark.parametrize("seed,max_batch,prefill", [(1, None, 2e-5), (2, 8, 2e-5), (3, 4, 0.0)])
def test_attribution_recovers_known_energies_within_2pct(fit, tmp_path, seed, max_batch, prefill):
    """Done when: a simulated stream with known per-request energies, attributed from its folder alone."""
    arr, i, o = stream(seed=seed)
    rep, truth = R.simulate(arr, i, o, THETA, idle_power_w=80.0, step=STEP, prefill_s_per_token=prefill,
                            window_s=1.0, max_batch=max_batch, seed=seed)
    table, totals = R.attribute(through_folder(rep, tmp_path), fit, with_shapley=False)
    err = (table.set_index("request_id")["energy_j"] / truth - 1) * 100
    assert err.abs().max() < 2.0, err.abs().describe()
    assert table["energy_j"].sum() == pytest.approx(totals["measured_busy_j"], rel=1e-12)
    assert abs(totals["residual_pct"]) < 1.0  # a fit of the simulator's own E(i, o, B): the model explains the total


def test_old_scaling_per_window_would_fail(fit):
    """The per-request table is not the model's guess: a wrong occupancy (every request alone) misses the truth."""
    arr, i, o = stream(seed=1)
    rep, truth = R.simulate(arr, i, o, THETA, 80.0, STEP, 2e-5)
    alone = BATCHED.energy(i, o, 1, **THETA)  # each request priced as its own batch of one
    assert np.max(np.abs(alone / truth.to_numpy() - 1)) > 0.2


def test_isolated_batch_is_the_batched_model(fit):
    """B requests arriving together with one length give back E(i, o, B) exactly, each E/B."""
    b, i, o = 8, 512, 100
    rep, truth = R.simulate(np.zeros(b), np.full(b, i), np.full(b, o), THETA, 80.0, STEP, window_s=0.5)
    e = BATCHED.energy(i, o, b, **THETA)
    assert truth.sum() == pytest.approx(e, rel=1e-12)
    table, totals = R.attribute(rep, fit)
    assert table["model_j"].to_numpy() == pytest.approx(np.full(b, e / b), rel=1e-4)
    # everyone shares every step: Shapley and the equal split agree (exact enumeration of 2^8 coalitions)
    assert set(table["shapley_method"]) == {"exact"}
    assert table["energy_shapley_j"].to_numpy() == pytest.approx(table["energy_j"].to_numpy(), rel=1e-9)
    _, whole = R.predict(rep, fit)
    assert whole["predicted_j"] == pytest.approx(whole["measured_j"], rel=1e-3)


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(n=st.integers(1, 12), seed=st.integers(0, 10_000), noise=st.floats(0, 10), window=st.sampled_from([0.25, 1.0, 3.0]),
       cap=st.sampled_from([None, 1, 3]))
def test_attributions_sum_to_measured_busy_energy(n, seed, noise, window, cap):
    """Whatever the stream, the noise and the windows: attributions add up to the measured busy energy."""
    arr, i, o = stream(n=n, seed=seed, span_s=5.0)
    rep, _ = R.simulate(arr, i, o, THETA, 80.0, STEP, 1e-5, window_s=window, max_batch=cap, noise_pct=noise, seed=seed)
    table, totals = R.attribute(rep, exact_fit(), n_permutations=20, exact_max=6)
    busy = totals["measured_busy_j"]
    assert table["energy_j"].sum() == pytest.approx(busy, rel=1e-12, abs=1e-9)
    assert table["energy_shapley_j"].sum() == pytest.approx(busy, rel=1e-12, abs=1e-9)
    parts = totals["measured_busy_j"] + totals["idle_gap_j"] + totals["unattributed_j"] + totals["idle_empty_windows_j"]
    assert parts == pytest.approx(totals["measured_j"], rel=1e-12)  # nothing measured is left out of the account
    assert totals["residual_j"] == pytest.approx(totals["measured_busy_j"] - totals["model_busy_j"])


def test_prediction_per_window_with_interval(tmp_path):
    arr, i, o = stream(seed=4)
    rep, _ = R.simulate(arr, i, o, THETA, 80.0, STEP, 2e-5, window_s=1.0, noise_pct=2.0, seed=4)
    fit = exact_fit(noise_pct=3.0)
    table, whole = R.predict(through_folder(rep, tmp_path), fit, window_s=5.0)
    assert len(table) == pytest.approx(np.ceil(rep.windows["end_s"].iloc[-1] / 5.0), abs=1)
    assert (table["predicted_j_low"] <= table["predicted_j"]).all() and (table["predicted_j"] <= table["predicted_j_high"]).all()
    assert whole["predicted_j_high"] > whole["predicted_j_low"]  # a fit on noisy cells has an interval
    assert whole["measured_j"] == pytest.approx(rep.windows["energy_j"].sum())
    assert abs(whole["error_pct"]) < 3.0
    assert table["measured_j"].sum() == pytest.approx(whole["measured_j"])


def test_shapley_exact_and_sampled_agree():
    arr = np.array([0.0, 0.05, 0.3, 0.31, 2.0, 2.1])
    out = np.array([50, 10, 80, 5, 30, 30])
    exact, se0, how = R.shapley(arr, out, 0.6, 3.0, STEP)
    assert how == "exact" and not se0.any()
    steps, admits = R.schedule(arr, out, STEP)
    assert exact.sum() == pytest.approx(0.6 * steps + 3.0 * admits)  # efficiency: the values share v(N)
    sampled, se, how = R.shapley(arr, out, 0.6, 3.0, STEP, n_permutations=400, exact_max=3)
    assert how.startswith("sampled")
    assert np.all(np.abs(sampled - exact) <= 5 * se + 1e-9)


def test_schedule_counts_steps_and_admissions():
    # two requests far apart: each alone; together at once: one admission, steps of the longer
    assert R.schedule([0.0, 100.0], [10, 20], STEP) == (30, 2)
    assert R.schedule([0.0, 0.0], [10, 20], STEP) == (20, 1)
    assert R.schedule([0.0, 0.0], [10, 20], STEP, max_batch=1) == (30, 2)


def test_failed_requests_are_kept_but_not_attributed(fit, tmp_path):
    arr, i, o = stream(n=6, seed=5)
    rep, _ = R.simulate(arr, i, o, THETA, 80.0, STEP)
    req = rep.requests.copy()
    req = pd.concat([req, pd.DataFrame([{"request_id": 99, "arrival_s": 1.0, "sent_s": 1.0, "first_token_s": None,
                                         "last_token_s": None, "input_len": 10, "output_len": 10, "prompt_tokens": None,
                                         "completion_tokens": None, "ok": False, "error": "HTTP 500"}])], ignore_index=True)
    rep = through_folder(R.Replay(req, rep.windows, rep.meta), tmp_path)
    table, totals = R.attribute(rep, fit, with_shapley=False)
    assert 99 not in set(table["request_id"]) and totals["failed_requests"] == 1


def write(folder, requests, windows, meta=None):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "requests.jsonl").write_text("".join(json.dumps(r) + "\n" for r in requests))
    (folder / "energy.jsonl").write_text("".join(json.dumps(w) + "\n" for w in windows))
    (folder / "replay.json").write_text(json.dumps(meta if meta is not None else {"idle_power_w": 80.0}))
    return folder


REQ = {"request_id": 0, "arrival_s": 0.5, "sent_s": 0.5, "first_token_s": 0.6, "last_token_s": 1.5, "input_len": 100,
       "output_len": 10, "prompt_tokens": 100, "completion_tokens": 10, "ok": True, "error": None}
WIN = {"start_s": 0.0, "end_s": 2.0, "energy_j": 300.0, "method": "counter"}


@pytest.mark.parametrize("req,win,meta,match", [
    ({**REQ, "first_token_s": "soon"}, WIN, None, r"line 1: first_token_s 'soon' is not a finite number"),
    ({k: v for k, v in REQ.items() if k != "sent_s"}, WIN, None, r"line 1: lacks sent_s"),
    ({**REQ, "last_token_s": 0.55}, WIN, None, r"times out of order"),
    ({**REQ, "completion_tokens": 2.5}, WIN, None, r"completion_tokens 2.5 is not a non-negative integer"),
    ({**REQ, "ok": "yes"}, WIN, None, r"ok 'yes' is not true or false"),
    (REQ, {**WIN, "energy_j": -1.0}, None, r"energy_j -1.0 is negative"),
    (REQ, {**WIN, "end_s": 0.0}, None, r"end_s 0.0 is not after start_s"),
    (REQ, WIN, {"trace": "x"}, r"idle_power_w is null .* --idle-power-w"),
    (REQ, WIN, {"idle_power_w": "84 W"}, r"idle_power_w '84 W' is not a power in watts"),
    ({**REQ, "first_token_s": None}, WIN, None, r"first_token_s is null for a request served with 10 tokens"),
    (REQ, {**WIN, "valid": "yes"}, None, r"valid 'yes' is not true or false"),
    (REQ, {**WIN, "energy_j": None, "valid": False}, None, r"no window measured an energy"),
    (REQ, {**WIN, "end_s": 1.0}, None, r"request 0 ran outside the metered span"),
])
def test_reader_rejects_bad_values_in_one_line(tmp_path, req, win, meta, match):
    with pytest.raises(DataError, match=match) as e:
        R.read_replay(write(tmp_path / "r", [req], [win], meta))
    assert "\n" not in str(e.value)


def test_reader_rejects_duplicates_overlaps_and_missing(tmp_path):
    with pytest.raises(DataError, match="request_id 0 already on line 1"):
        R.read_replay(write(tmp_path / "a", [REQ, REQ], [WIN]))
    with pytest.raises(DataError, match="before the previous one ends"):
        R.read_replay(write(tmp_path / "b", [REQ], [WIN, {**WIN, "start_s": 1.0, "end_s": 3.0}]))
    with pytest.raises(DataError, match="not a replay folder"):
        R.read_replay(tmp_path / "nowhere")
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "replay.json").write_text('{"idle_power_w": 80}')
    with pytest.raises(DataError, match="requests.jsonl: no such file"):
        R.read_replay(tmp_path / "c")
    rep = R.read_replay(write(tmp_path / "d", [REQ], [WIN]))
    assert rep.idle_power_w == 80.0 and len(rep.served) == 1


def test_needs_a_batch_aware_fit(fit):
    from energykit.fit import FitSet
    i, o = np.meshgrid([64, 256, 1024], [16, 64, 256])
    E = BATCHED.energy(i.ravel(), o.ravel(), 16, **THETA)
    res = fit_cells(E, i.ravel(), o.ravel())
    single = ModelFit("m", "sweetspot", res, {"input_len": i.ravel(), "output_len": o.ravel()}, E, np.full(9, np.nan),
                      fixed={"batch_size": 16})
    with pytest.raises(FitError, match="has no batch size"):
        R.batched_fit(single)
    with pytest.raises(FitError, match="no batch-aware model"):
        R.batched_fit(FitSet({("m", 16, "sweetspot"): single}, "l1", 5))
    assert R.batched_fit(fit) is fit
    other = exact_fit(seed=1)
    two = FitSet({}, "l1", 5, {"a": fit, "b": other})
    with pytest.raises(FitError, match="several models"):
        R.batched_fit(two)
    assert R.batched_fit(two, prefer="b") is other  # the replay's model, when the fit holds it
    with pytest.raises(FitError, match="several models"):
        R.batched_fit(two, prefer="not-in-the-fit")
    assert R.batched_fit(two, "a", prefer="b") is fit


def batch_data(path, theta=THETA):
    """Isolated-batch windows of the simulated server at four batch sizes, as a tidy CSV `energykit fit` reads."""
    i, o, b = (a.ravel() for a in np.meshgrid([64, 256, 1024, 2048], [16, 64, 256, 512], [1, 4, 16, 64]))
    E = BATCHED.energy(i, o, b, **theta)
    pd.DataFrame({"model": "sim", "batch_size": b, "input_len": i, "output_len": o, "repeat": 0, "energy_j": E,
                  "duration_s": o * STEP(b)}).to_csv(path, index=False)
    return path


def test_cli_attribute_writes_the_table_beside_the_trace(tmp_path, capsys):
    from energykit.cli import main

    arr, i, o = stream(n=12, seed=7, span_s=6.0)
    rep, truth = R.simulate(arr, i, o, THETA, 80.0, STEP, 2e-5, window_s=1.0)
    folder = R.write_replay(rep, tmp_path / "replay")
    data = batch_data(tmp_path / "batches.csv")
    assert main(["attribute", str(folder), "--fit", str(data), "--window-s", "2", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    table = pd.read_csv(folder / "attribution.csv")
    assert out["totals"]["attributed_j"] == pytest.approx(out["totals"]["measured_busy_j"])
    assert np.max(np.abs(table.set_index("request_id")["energy_j"] / truth - 1)) < 0.02
    assert {"energy_j", "energy_shapley_j", "shapley_method", "energy_per_token_j"} <= set(table.columns)
    assert main(["attribute", str(folder), "--fit", str(data), "-o", str(folder / "requests.jsonl")]) == 2
    assert "would replace the state of the input folder" in capsys.readouterr().err
    assert main(["attribute", str(tmp_path / "nowhere"), "--fit", str(data)]) == 2
    assert "not a replay folder" in capsys.readouterr().err
    single = tmp_path / "single.csv"
    pd.read_csv(data).query("batch_size == 16").to_csv(single, index=False)
    assert main(["attribute", str(folder), "--fit", str(single)]) == 2
    assert "no batch-aware model" in capsys.readouterr().err


def test_page_figures_draw_what_they_are_given(fit):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from energykit import plots

    arr, i, o = stream(n=8, seed=9, span_s=3.0)
    rep, _ = R.simulate(arr, i, o, THETA, 80.0, STEP, 2e-5, noise_pct=1.0)
    windows, _ = R.predict(rep, fit, window_s=2.0)
    table, _ = R.attribute(rep, fit)
    ax = plots.replay_windows(windows)
    assert len(ax.patches) == len(windows)  # one measured bar per window
    ax = plots.replay_timeline(table)
    assert len(ax.lines) == 2 * len(table)  # wait and decode of each request
    a, b = plots.attribution_vs_lengths(table)
    assert len(a.collections[0].get_offsets()) == len(table) == len(b.collections[0].get_offsets())
    ax = plots.attribution_methods(table)
    assert ax.get_xlabel().startswith("equal split")
    plt.close("all")


def test_trace_stream_reads_arrival_times(tmp_path):
    s = R.trace_stream(ROOT / "data/azure_llm_inference_trace_2023_conv.csv", 30, time_scale=2.0)
    assert len(s) == 30 and s["arrival_s"].iloc[0] == 0.0 and s["arrival_s"].is_monotonic_increasing
    assert s["arrival_s"].iloc[-1] == pytest.approx(19.913927 / 2, abs=1e-6)  # the trace's 30th request, sped up twice
    (tmp_path / "t.csv").write_text("input_len,output_len\n10,0\n20,5\n")
    assert R.trace_stream(tmp_path / "t.csv", 5)["output_len"].tolist() == [1, 5]
    with pytest.raises(DataError, match="no request after skipping 9"):
        R.trace_stream(tmp_path / "t.csv", 5, skip=9)


def test_attribution_survives_client_side_jitter_of_token_times(fit):
    """A client records token times late by up to 3 ms (a sixth of a step): still within 2 %."""
    arr, i, o = stream(seed=2)
    rep, truth = R.simulate(arr, i, o, THETA, 80.0, STEP, 2e-5, max_batch=8)
    rng = np.random.default_rng(2)
    req = rep.requests.copy()
    for c in ("first_token_s", "last_token_s"):
        req[c] = req[c] + rng.uniform(0, 0.003, len(req))
    req["last_token_s"] = np.maximum(req["last_token_s"], req["first_token_s"])
    table, _ = R.attribute(R.Replay(req, rep.windows, rep.meta), fit, with_shapley=False)
    assert np.max(np.abs(table.set_index("request_id")["energy_j"] / truth - 1)) < 0.02


def test_runner_records_a_window_it_could_not_measure_and_a_request_without_tokens(fit, tmp_path):
    """What energykit replay writes (serve branch, energykit/replay_run.py): windows with ``valid`` and a null
    energy when the counter went down; ok requests the server answered with no token; idle_power_w null."""
    arr, i, o = stream(n=10, seed=11, span_s=4.0)
    rep, truth = R.simulate(arr, i, o, THETA, 80.0, STEP, 2e-5, window_s=0.5)
    win = rep.windows.assign(valid=True)
    win.loc[3, "valid"] = False
    req = pd.concat([rep.requests, pd.DataFrame([{**REQ, "request_id": 77, "first_token_s": None, "last_token_s": None,
                                                   "completion_tokens": 0}])], ignore_index=True)
    folder = R.write_replay(R.Replay(req, win, {**rep.meta, "idle_power_w": None}), tmp_path / "r")
    with open(folder / "energy.jsonl") as f:
        lines = [json.loads(x) for x in f]
    lines[3]["valid"], lines[3]["energy_j"] = False, None  # a counter that went down: unknown
    lines[5]["valid"], lines[5]["reason"] = False, "the process used no CPU tick in the window"  # flagged, kept
    (folder / "energy.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    with pytest.raises(DataError, match="idle_power_w is null"):
        R.read_replay(folder)
    back = R.read_replay(folder, idle_power_w=80.0)
    assert np.isnan(back.windows["energy_j"].iloc[3]) and len(back.served) == 10
    windows, whole = R.predict(back, fit)
    assert whole["invalid_windows"] == 1 and np.isnan(windows["measured_j"].iloc[3])
    assert whole["measured_j"] == pytest.approx(np.nansum(back.windows["energy_j"]))
    table, totals = R.attribute(back, fit, with_shapley=False)
    assert totals["invalid_windows"] == 1 and totals["modelled_invalid_j"] > 0 and totals["flagged_windows"] == 1
    assert back.windows["energy_j"].iloc[5] == rep.windows["energy_j"].iloc[5] and not back.windows["valid"].iloc[5]
    assert table["energy_j"].sum() == pytest.approx(totals["measured_busy_j"] + totals["modelled_invalid_j"], rel=1e-12)
    assert np.max(np.abs(table.set_index("request_id")["energy_j"] / truth - 1)) < 0.02


def test_cli_idle_power_and_text_output(tmp_path, capsys):
    from energykit.cli import main

    arr, i, o = stream(n=6, seed=12, span_s=2.0)
    rep, _ = R.simulate(arr, i, o, THETA, 80.0, STEP)
    folder = R.write_replay(R.Replay(rep.requests, rep.windows, {**rep.meta, "idle_power_w": None}), tmp_path / "r")
    data = batch_data(tmp_path / "batches.csv")
    assert main(["attribute", str(folder), "--fit", str(data)]) == 2
    assert "--idle-power-w" in capsys.readouterr().err
    assert main(["attribute", str(folder), "--fit", str(data), "--idle-power-w", "-3"]) == 2
    assert main(["attribute", str(folder), "--fit", str(data), "--idle-power-w", "80", "-o", str(tmp_path / "t.csv")]) == 0
    out = capsys.readouterr().out
    assert "SIMULATED replay" in out and "residual" in out and (tmp_path / "t.csv").is_file()


def test_key_results_say_simulated_and_state_the_residual():
    from energykit import summary

    whole = {"measured_j": 2400.0, "predicted_j": 2410.0, "predicted_j_low": 2396.0, "predicted_j_high": 2420.0,
             "error_pct": 0.4, "duration_s": 23.0}
    totals = {"requests": 30, "busy_periods": 7, "measured_busy_j": 1535.0, "residual_j": -8.2, "residual_pct": -0.5,
              "idle_gap_j": 397.0, "idle_empty_windows_j": 468.0, "unattributed_j": -1.0, "invalid_windows": 1,
              "modelled_invalid_j": 12.0, "mean_abs_shapley_diff_pct": 2.4, "max_abs_shapley_diff_pct": 13.9,
              "shapley_methods": ["exact"]}
    text, numbers = summary.replay_results(whole, totals, True, "a source", 1.66, 10.0, 0.2)
    assert "SIMULATED REPLAY" in text and "residual against the model is -8 J (-0.5 %)" in text
    assert "2410 [2396, 2420] J" in text and "1 meter window(s) could not be measured" in text
    assert numbers["simulated"] and numbers["recovery_max_error_pct"] == 1.66
    measured, _ = summary.replay_results(whole, {**totals, "invalid_windows": 0}, False, "runs/x")
    assert "SIMULATED" not in measured and "Measured replay: runs/x" in measured


@pytest.mark.slow
def test_page_shows_a_measured_replay_folder(tmp_path):
    """07_replay with replay_dir: the measured branch (no SIMULATED banner), with the fit from replay_fit."""
    import nbformat

    from energykit import report
    from energykit.params import load_report_params

    arr, i, o = stream(n=12, seed=13, span_s=5.0)
    rep, _ = R.simulate(arr, i, o, THETA, 80.0, STEP, 2e-5, noise_pct=1.0)
    meta = {k: v for k, v in rep.meta.items() if k != "simulated"}
    folder = R.write_replay(R.Replay(rep.requests, rep.windows, {**meta, "trace": "test stream"}), tmp_path / "r")
    params = load_report_params(ROOT / "params" / "report.yaml").model_copy(
        update={"replay_dir": str(folder), "replay_fit": str(batch_data(tmp_path / "b.csv"))})
    report.execute(ROOT / "notebooks" / "07_replay.py", tmp_path / "07.ipynb", params, ROOT)
    md = [o.data["text/markdown"] for c in nbformat.read(tmp_path / "07.ipynb", 4).cells for o in c.get("outputs", [])
          if "data" in o and "text/markdown" in o.data]
    key = next(m for m in md if "Key results" in m)
    assert "Measured replay" in key and "SIMULATED" not in key and "12 requests" in key


def test_replies_in_one_chunk(fit):
    """A replay that did not stream (first token = last token) is refused; a few such replies are placed."""
    arr, i, o = stream(n=10, seed=14, span_s=3.0)
    rep, truth = R.simulate(arr, i, o, THETA, 80.0, STEP, 2e-5)
    req = rep.requests.assign(first_token_s=rep.requests["last_token_s"])
    with pytest.raises(DataError, match="did not stream"):
        R.attribute(R.Replay(req, rep.windows, rep.meta), fit)
    req = rep.requests.copy()
    req.loc[4, "first_token_s"] = req.loc[4, "last_token_s"]
    table, totals = R.attribute(R.Replay(req, rep.windows, rep.meta), fit, with_shapley=False)
    assert table["energy_j"].sum() == pytest.approx(totals["measured_busy_j"], rel=1e-12)
    assert np.max(np.abs(table.set_index("request_id")["energy_j"] / truth - 1)) < 0.02  # placed, not lost


def test_the_runners_folder_is_read_and_attributed(tmp_path):
    """The folder energykit replay writes (energykit/replay_run.py against test_serve's fake server, metered by
    the CPU-time proxy of this process) is read, predicted and attributed, the attributions summing to the
    measured busy energy. The fake server's energy has nothing to do with the fit: only the plumbing is checked."""
    import os

    from test_replay_run import _trace
    from test_serve import GEOM, FakeServer

    from energykit.params import ReplayParams
    from energykit.replay_run import run_replay

    s = FakeServer("exact")
    try:
        p = ReplayParams(trace=str(_trace(tmp_path, n=12, gap_s=0.02)), model={"name": "m", **GEOM},
                         serve={"url": s.url, "model": "m", "server_pid": os.getpid()}, window_s=0.2,
                         meter="process_cpu", idle_s=0.2, output=str(tmp_path / "replay"))
        run_replay(p, progress=False)
    finally:
        s.close()
    rep = R.read_replay(tmp_path / "replay")
    assert len(rep.served) == 12 and rep.meta["model"] == "m"
    _, whole = R.predict(rep, exact_fit(), window_s=0.4)
    table, totals = R.attribute(rep, exact_fit())
    assert table["energy_j"].sum() == pytest.approx(totals["measured_busy_j"] + totals["modelled_invalid_j"], rel=1e-9)
    assert whole["measured_j"] == pytest.approx(np.nansum(rep.windows["energy_j"]))


@pytest.mark.slow
def test_done_when_a_real_server_replay_is_measured_predicted_and_attributed(tmp_path, real_server):  # noqa: F811
    """Issue 29's Done-when on the CI server (transformers serve, CPU, tiny model; scripts/serve_local.sh): the
    same server swept at batch 1 and 4 (the fit of E(i, o, B)), then 30 requests replayed with overlapping
    arrivals, then `energykit attribute`: it predicts, attributes, and the attributions sum to what was measured."""
    import subprocess
    import sys

    import yaml

    from test_replay_run import _trace
    from test_serve import _params

    url, model = real_server

    def cli(*args):
        r = subprocess.run([sys.executable, "-m", "energykit", *args], capture_output=True, text=True, timeout=900,
                           cwd=ROOT)
        assert r.returncode == 0, r.stderr[-2000:]
        return r.stdout

    sweep, out = tmp_path / "sweep", tmp_path / "replay"
    cli("measure", str(_params(tmp_path, url, model, "auto", sweep, models=model)))
    params = {"trace": str(_trace(tmp_path, 30, gap_s=0.3, seed=3, burst=3)), "serve": {"url": url, "model": model},
              "model": model, "window_s": 1.0, "meter": "process_cpu", "idle_s": 1.0, "output": str(out)}
    (tmp_path / "r.yaml").write_text(yaml.safe_dump(params))
    cli("replay", str(tmp_path / "r.yaml"), "--no-progress")
    got = json.loads(cli("attribute", str(out), "--fit", str(sweep / "measurements.nc"), "--json"))["totals"]
    table = pd.read_csv(out / "attribution.csv")
    assert len(table) == 30 and np.isfinite(got["whole_predicted_j"]) and got["busy_periods"] >= 1
    assert (table.groupby("busy_period").size() > 1).any()  # requests that shared the server's time
    assert table["energy_j"].sum() == pytest.approx(got["measured_busy_j"] + got["modelled_invalid_j"], rel=1e-9)


def test_cli_reads_a_stored_fit_file(tmp_path, capsys):
    from energykit.cli import main

    data = batch_data(tmp_path / "b.csv")
    assert main(["fit", str(data), "--save", str(tmp_path / "fits.nc")]) == 0
    arr, i, o = stream(n=8, seed=15, span_s=2.0)
    rep, _ = R.simulate(arr, i, o, THETA, 80.0, STEP, 2e-5)
    folder = R.write_replay(rep, tmp_path / "r")
    capsys.readouterr()
    assert main(["attribute", str(folder), "--fit", str(tmp_path / "fits.nc"), "--no-shapley", "--json"]) == 0
    got = json.loads(capsys.readouterr().out)
    assert got["model"] == "sim" and abs(got["totals"]["whole_error_pct"]) < 1.0
