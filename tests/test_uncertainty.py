import numpy as np
import pytest

from energykit.iotools import read_tidy, read_trace, read_window_log
import energykit.fit as ekfit
from energykit import dataset, sweetspots, uncertainty, workloads

from conftest import COMPILED, DATA, TRUE_THETA, synthetic_frame


@pytest.fixture(scope="module")
def noisy_fit():
    ds = dataset.from_frame(synthetic_frame(noise=0.02, repeats=2, seed=4))
    return ekfit.fit_dataset(ds, cv_folds=2).get("synthetic")


def test_intervals_cover_the_true_theta_of_a_simulation(noisy_fit):
    t = uncertainty.theta_table(noisy_fit, n=300).set_index("param")
    for name in ("theta3", "theta5", "theta2"):
        assert t.loc[name, "value_low"] <= TRUE_THETA[name] <= t.loc[name, "value_high"], name
    assert (t["value_low"] <= t["value"]).all() and (t["value"] <= t["value_high"]).all()


def test_exact_data_gives_zero_width_intervals():
    fit = ekfit.fit_dataset(dataset.from_frame(synthetic_frame(noise=0.0, repeats=1)), cv_folds=2).get("synthetic")
    est, lo, hi = fit.predict_interval([64, 4096], [16, 1024])
    np.testing.assert_allclose(lo, est, rtol=1e-6)
    np.testing.assert_allclose(hi, est, rtol=1e-6)


def test_predict_and_o_star_intervals_contain_estimates(noisy_fit):
    est, lo, hi = noisy_fit.predict_interval([64, 1024, 4096], [16, 256, 1024])
    assert np.all(lo <= est) and np.all(est <= hi) and np.all(hi > lo)
    o, olo, ohi = uncertainty.o_star_interval(noisy_fit, [64, 4096])
    assert np.all(olo <= o) and np.all(o <= ohi)


def test_draws_are_cached_and_reproducible(noisy_fit):
    a = noisy_fit.draws(50, seed=1)
    assert noisy_fit.draws(50, seed=1) is a
    assert a["theta5"].shape == (50, 1)


def test_tables_carry_intervals():
    ds = dataset.load(COMPILED)
    fits = ekfit.fit_dataset(ds)
    o = sweetspots.o_star_table(fits, n_draws=50)
    assert (o["o_star_low"] <= o["o_star"]).all() and (o["o_star"] <= o["o_star_high"]).all()
    r = sweetspots.ratio_table(ds, fits, n_draws=50)
    assert (r["paper_grid_best_worst_low"] <= r["paper_grid_best_worst"]).all()
    share = sweetspots.region_probability(fits.get("llama3.2-1b-shape"), n_draws=50)
    assert float(share.min()) >= 0 and float(share.max()) == 1.0
    f = fits.get("llama3.2-1b-shape")
    trace = read_trace(DATA / "azure_llm_inference_trace_2023_code.csv")[0].head(500)
    s = workloads.trace_summary(f, trace, n_draws=50)
    assert s["total_energy_kwh_low"] <= s["total_energy_kwh"] <= s["total_energy_kwh_high"]
    p = workloads.policy_savings(f, trace, [workloads.cap_outputs(16)], n_draws=50).iloc[0]
    assert p["saving_pct_low"] <= p["saving_pct"] <= p["saving_pct_high"]
