import numpy as np
import pandas as pd
import pytest

from energykit.iotools import read_tidy, read_trace, read_window_log
from energykit import dataset, fitting, workloads
from energykit.errors import DataError, ParamsError

from conftest import COMPILED, DATA


@pytest.fixture(scope="module")
def fit():
    return fitting.fit_dataset(dataset.load(COMPILED)).get("llama3.2-1b-shape")


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
