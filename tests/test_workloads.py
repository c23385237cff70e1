import numpy as np
import pandas as pd
import pytest

from energykit.iotools import read_tidy, read_trace, read_window_log
import energykit.fit as ekfit
from energykit import dataset, workloads
from energykit.errors import DataError, ParamsError

from conftest import COMPILED, DATA


@pytest.fixture(scope="module")
def fit():
    return ekfit.fit_dataset(dataset.load(COMPILED)).get("llama3.2-1b-shape")


def test_load_azure_trace():
    t = read_trace(DATA / "azure_llm_inference_trace_2023_code.csv")[0]
    assert len(t) == 8819
    assert list(t.columns) == ["input_len", "output_len"]


def test_request_energy_is_batch_energy_over_batch(fit):
    assert workloads.request_energy_j(fit, 1024, 256) == pytest.approx(fit.predict(1024.0, 256.0) / 16)


def test_policies_hand_checked(fit):
    trace = pd.DataFrame({"input_len": [100, 3000, 5000], "output_len": [10, 400, 50]})
    s = workloads.policy_savings(fit, trace, [workloads.truncate_inputs(2048), workloads.cap_outputs(100)])
    trunc, cap = s.iloc[0], s.iloc[1]
    e0 = workloads.request_energy_j(fit, trace.input_len, trace.output_len).sum()
    e1 = workloads.request_energy_j(fit, [100, 2048, 2048], [10, 400, 50]).sum()
    assert trunc["saving_pct"] == pytest.approx(100 * (1 - e1 / e0))
    assert trunc["requests_changed_pct"] == pytest.approx(200 / 3)
    assert trunc["output_tokens_kept_pct"] == pytest.approx(100)
    assert cap["output_tokens_kept_pct"] == pytest.approx(100 * 160 / 460)


def test_savings_are_positive_when_energy_falls_and_widen_with_the_extrapolated_share(fit):
    """Issue #19: one sign convention, and an interval that grows with the requests outside the grid."""
    inside = pd.DataFrame({"input_len": [256, 512, 1024, 256], "output_len": [64, 128, 200, 250]})
    outside = pd.DataFrame({"input_len": [256, 512, 1024, 9000], "output_len": [64, 128, 200, 900]})
    cap = [workloads.cap_outputs(100)]
    a, b = workloads.policy_savings(fit, inside, cap).iloc[0], workloads.policy_savings(fit, outside, cap).iloc[0]
    e0 = workloads.request_energy_j(fit, inside.input_len, inside.output_len).sum()
    e1 = workloads.request_energy_j(fit, inside.input_len, np.minimum(inside.output_len, 100)).sum()
    kept = np.minimum(inside.output_len, 100).sum() / inside.output_len.sum()
    assert a["per_token_saving_pct"] == pytest.approx(100 * (1 - (e1 / kept) / e0))  # positive: less per token
    assert a["saving_pct"] > 0 and "energy_per_token_change_pct" not in a
    assert a["extrapolated_pct"] == 0 and b["extrapolated_pct"] == 25
    assert b["extrapolation_error_pct"] == pytest.approx(np.max(fit.cv_ape_pct))
    width = lambda r: r["saving_pct_high"] - r["saving_pct_low"]
    assert width(b) > width(a)
    for r in (a, b):
        assert r["saving_pct_low"] <= r["saving_pct"] <= r["saving_pct_high"]
        assert r["per_token_saving_pct_low"] <= r["per_token_saving_pct"] <= r["per_token_saving_pct_high"]


def test_extrapolation_and_sweet_spot_flags(fit):
    trace = pd.DataFrame({"input_len": [64, 8000], "output_len": [128, 5]})
    t = workloads.trace_energy(fit, trace)
    assert t["extrapolated"].tolist() == [False, True]
    assert t["near_sweet_spot"].tolist() == [True, False]


def test_bad_trace(tmp_path):
    (tmp_path / "t.csv").write_text("a,b\n1,2\n")
    with pytest.raises(DataError, match="missing column 'input_len'"):
        read_trace(tmp_path / "t.csv")[0]
    with pytest.raises(ParamsError, match="positive"):
        workloads.truncate_inputs(0)
