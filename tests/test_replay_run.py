"""The replay runner (``energykit replay``): the folder contract, against a fake server (fast) and the
real ``transformers serve`` of scripts/serve_local.sh (slow)."""

import json
import math
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import yaml

from conftest import ROOT
from test_serve import GEOM, FakeServer, real_server  # noqa: F401  (the module-scoped real server fixture)

from energykit.errors import DataError, ParamsError
from energykit.iotools import read_arrival_trace
from energykit.params import ReplayParams
from energykit.replay_run import ENERGY, REPLAY, REQUESTS, run_replay, schedule

REQUEST_KEYS = {"request_id", "arrival_s", "sent_s", "first_token_s", "last_token_s", "input_len", "output_len",
                "prompt_tokens", "completion_tokens", "ok", "error"}


def _trace(tmp_path, n=10, gap_s=0.05, seed=0, burst=1):
    """A trace of ``n`` requests, ``burst`` of them arriving together every ``gap_s`` [s]."""
    rng = np.random.default_rng(seed)
    path = tmp_path / "trace.csv"
    pd.DataFrame({"arrival_s": (np.arange(n) // burst) * gap_s, "input_len": rng.integers(4, 32, n),
                  "output_len": rng.integers(2, 12, n)}).to_csv(path, index=False)
    return path


def _read(out):
    reqs = [json.loads(x) for x in (out / REQUESTS).read_text().splitlines()]
    wins = [json.loads(x) for x in (out / ENERGY).read_text().splitlines()]
    return sorted(reqs, key=lambda r: r["request_id"]), wins, json.loads((out / REPLAY).read_text())


def _check_contract(reqs, wins, head, n):
    assert [r["request_id"] for r in reqs] == list(range(n))
    assert all(set(r) == REQUEST_KEYS for r in reqs)
    for r in reqs:
        if r["ok"]:
            assert r["error"] is None
            assert 0 <= r["sent_s"] <= r["first_token_s"] <= r["last_token_s"]
            assert r["sent_s"] >= r["arrival_s"] - 1e-3  # never sent before its time
            assert r["prompt_tokens"] == r["input_len"] and r["completion_tokens"] == r["output_len"]
    assert wins[0]["start_s"] == 0.0 and all(set(w) >= {"start_s", "end_s", "energy_j", "method"} for w in wins)
    assert all(b["start_s"] >= a["end_s"] for a, b in zip(wins, wins[1:]))
    assert all(b["start_s"] - a["end_s"] < 0.05 for a, b in zip(wins, wins[1:]))  # back to back
    ends = [r["last_token_s"] for r in reqs if r["last_token_s"] is not None]
    assert wins[-1]["end_s"] >= max(ends)  # the windows cover the whole replay
    for k in ("trace", "n_requests", "idle_power_w", "meter", "gpus", "server", "started_at", "energykit_version"):
        assert k in head
    assert ("time_scale" in head) != ("rate_rps" in head) and head["n_requests"] == n


@pytest.mark.filterwarnings("ignore:meter 'none'")
def test_a_replay_writes_the_contract(tmp_path):
    s = FakeServer("exact")
    try:
        out = tmp_path / "replay"
        p = ReplayParams(trace=str(_trace(tmp_path)), serve={"url": s.url, "model": "m"}, model={"name": "m", **GEOM},
                         window_s=0.1, meter="none", idle_s=0, output=str(out), time_scale=2.0)
        run_replay(p, progress=False)
    finally:
        s.close()
    reqs, wins, head = _read(out)
    _check_contract(reqs, wins, head, 10)
    assert all(r["ok"] for r in reqs) and head["time_scale"] == 2.0
    assert [r["arrival_s"] for r in reqs] == pytest.approx(np.arange(10) * 0.1)
    assert len({tuple(b["prompt"]) for b in s.bodies}) == 10  # fresh prompts


@pytest.mark.filterwarnings("ignore:meter 'none'")
def test_an_inexact_request_is_kept_as_not_ok_with_the_knob_named(tmp_path):
    s = FakeServer("ignore")
    try:
        out = tmp_path / "replay"
        p = ReplayParams(trace=str(_trace(tmp_path, 3)), serve={"url": s.url, "model": "m", "dialect": "llamacpp"},
                         model={"name": "m", **GEOM}, window_s=0.1, meter="none", idle_s=0, output=str(out),
                         rate_rps=50.0)
        run_replay(p, progress=False)
    finally:
        s.close()
    reqs, wins, head = _read(out)
    assert not any(r["ok"] for r in reqs) and all("min_tokens" in r["error"] for r in reqs)
    assert head["rate_rps"] == 50.0 and [r["arrival_s"] for r in reqs] == pytest.approx([0, 0.02, 0.04])


def test_bad_params_and_traces_are_one_line(tmp_path):
    with pytest.raises(ValueError, match="time_scale or rate_rps, not both"):
        ReplayParams(trace="t.csv", serve={}, model="llama3.2-1b", output="o", time_scale=1, rate_rps=1)
    bad = tmp_path / "bad.csv"
    bad.write_text("arrival_s,input_len,output_len\n1,4,4\n0,4,4\n")
    with pytest.raises(DataError, match="arrival times go back on row 3"):
        read_arrival_trace(bad)
    (tmp_path / "nt.csv").write_text("input_len,output_len\n4,4\n")
    with pytest.raises(DataError, match="no arrival times"):
        read_arrival_trace(tmp_path / "nt.csv")
    out = tmp_path / "full"
    out.mkdir()
    (out / "x").write_text("")
    p = ReplayParams(trace=str(_trace(tmp_path)), serve={}, model="llama3.2-1b", output=str(out))
    with pytest.raises(ParamsError, match="not an empty folder"):
        run_replay(p)


def test_the_azure_trace_gives_arrivals_from_its_timestamps():
    t, meta = read_arrival_trace(ROOT / "data" / "azure_llm_inference_trace_2023_code.csv")
    assert t["arrival_s"].iat[0] == 0 and t["arrival_s"].iat[1] == pytest.approx(0.052)
    assert (np.diff(t["arrival_s"]) >= 0).all() and meta["arrivals"] == "TIMESTAMP"
    assert schedule(t["arrival_s"][:3], time_scale=10).tolist() == pytest.approx([0, 0.52, 0.98189])


@pytest.mark.slow
def test_a_replay_of_30_overlapping_requests_against_the_real_server(tmp_path, real_server):  # noqa: F811
    url, model = real_server
    out = tmp_path / "replay"
    # overlapping by construction: 3 requests arrive together every 0.3 s (with one request every 0.1 s, a quiet
    # machine served each before the next arrived, and nothing overlapped)
    params = {"trace": str(_trace(tmp_path, 30, gap_s=0.3, seed=3, burst=3)), "serve": {"url": url, "model": model},
              "model": model, "window_s": 1.0, "meter": "process_cpu", "idle_s": 1.0, "output": str(out)}
    (tmp_path / "r.yaml").write_text(yaml.safe_dump(params))
    r = subprocess.run([sys.executable, "-m", "energykit", "replay", str(tmp_path / "r.yaml"), "--no-progress"],
                       capture_output=True, text=True, timeout=900, cwd=ROOT)
    assert r.returncode == 0, r.stderr[-2000:]
    reqs, wins, head = _read(out)
    _check_contract(reqs, wins, head, 30)
    assert all(r["ok"] for r in reqs)
    # overlapping: a request was sent before an earlier one's last token
    assert any(b["sent_s"] < a["last_token_s"] for a, b in zip(reqs, reqs[1:]))
    assert all(w["method"] == "process_cpu_time_x_nominal_power_proxy" for w in wins)
    assert sum(w["energy_j"] for w in wins if w["energy_j"] is not None) > 0
    assert head["server"]["server_dialect"] == "transformers" and not math.isnan(head["idle_power_w"])
