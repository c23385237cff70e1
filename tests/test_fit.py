import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import energykit.fit as ekfit
from energykit import dataset
from energykit.errors import FitError

from conftest import COMPILED, GRID_I, GRID_O, TRUE_THETA, synthetic_frame


def _grid():
    i, o = np.meshgrid(GRID_I, GRID_O, indexing="ij")
    return i.ravel().astype(float), o.ravel().astype(float)


@pytest.mark.parametrize("loss", ["l1", "l2"])
def test_recovers_known_theta_from_noisy_data(loss):
    ds = dataset.from_frame(synthetic_frame(noise=0.005, repeats=3, seed=1))
    fit = ekfit.fit_dataset(ds, loss=loss).get("synthetic")
    for name, true in TRUE_THETA.items():
        assert fit.params[name] == pytest.approx(true, rel=0.25), name
    # the dominant terms are recovered much more tightly
    assert fit.params["theta5"] == pytest.approx(TRUE_THETA["theta5"], rel=0.03)
    assert fit.params["theta3"] == pytest.approx(TRUE_THETA["theta3"], rel=0.05)
    assert fit.mape_pct < 1.0
    assert np.isfinite(fit.stderr["theta5"]) and fit.stderr["theta5"] > 0


def test_exact_data_gives_exact_fit():
    i, o = _grid()
    E = ekfit.sweetspot_energy(i, o, **TRUE_THETA)
    res = ekfit.fit_cells(E, i, o)
    np.testing.assert_allclose(res.eval(input_len=i, output_len=o), E, rtol=1e-6)


def test_theta_nonnegative_even_when_data_prefer_negative():
    i, o = _grid()
    E = 100 + 3 * o - 0.01 * i  # negative input slope
    res = ekfit.fit_cells(E, i, o)
    assert all(p.value >= 0 for p in res.params.values())


def test_mape_hand_computed():
    assert ekfit.mape_pct([110, 90, 100], [100, 100, 100]) == pytest.approx(20 / 3)
    assert ekfit.ape_pct([150], [100])[0] == pytest.approx(50)


def test_r2_hand_computed():
    assert ekfit.r2([1, 2, 3], [1, 2, 3]) == 1.0
    assert ekfit.r2([2, 2, 2], [1, 2, 3]) == pytest.approx(0.0)


def test_kfold_partitions_every_cell_once():
    folds = ekfit.kfold_indices(20, 5, seed=3)
    assert len(folds) == 5
    assert sorted(np.concatenate(folds).tolist()) == list(range(20))


def test_cross_validation_hand_computed_linear_case():
    # exactly linear data: every held-out cell is predicted exactly by the baseline
    i, o = _grid()
    E = 0.1 * i + 2.0 * o + 5.0
    ape = ekfit.cross_validate(E, i, o, kind="linear", k=4)
    assert np.nanmax(ape) < 1e-6
    # one perturbed cell: its own held-out error is the largest, by construction
    E2 = E.copy()
    E2[7] *= 1.5
    ape2 = ekfit.cross_validate(E2, i, o, kind="linear", loss="l2", k=len(E))  # leave-one-out
    assert int(np.argmax(ape2)) == 7


def test_fit_on_measured_compiled_file_beats_baseline():
    fits = ekfit.fit_dataset(dataset.load(COMPILED))
    s = fits.summary().iloc[0]
    assert s["mape_pct"] < 5.0
    assert s["mape_pct"] <= 0.75 * s["baseline_mape_pct"]
    assert s["r2"] > 0.99


def test_too_few_cells_is_an_error():
    with pytest.raises(FitError, match="only 4 cells"):
        ekfit.fit_cells([1.0, 2, 3, 4], [1, 2, 3, 4], [1, 2, 3, 4])


def test_unknown_model_is_an_error():
    with pytest.raises(FitError, match="not in the data"):
        ekfit.fit_dataset(dataset.load(COMPILED), models=["gpt-9"])


@settings(max_examples=25, deadline=None)
@given(st.floats(1, 4096), st.floats(1, 4096))
def test_scalar_array_xarray_agree(i, o):
    import xarray as xr

    s = ekfit.sweetspot_energy(i, o, **TRUE_THETA)
    a = ekfit.sweetspot_energy(np.array([i]), np.array([o]), **TRUE_THETA)[0]
    x = ekfit.sweetspot_energy(xr.DataArray([i]), xr.DataArray([o]), **TRUE_THETA).item()
    assert s == pytest.approx(a) == pytest.approx(x)


def test_to_xarray_has_units():
    fits = ekfit.fit_dataset(dataset.load(COMPILED))
    x = fits.to_xarray()
    assert set(x["param"].values) == set(ekfit.THETA)
    assert str(x["units"].sel(param="theta0").values) == "J"


# --- the stored fit (one fit per report build, read by every page) ---------------------------------

def test_saved_fits_load_without_refitting_and_give_the_same_numbers(tmp_path, monkeypatch):
    ds = dataset.from_frame(synthetic_frame(noise=0.01, repeats=2, seed=3))
    fits = ekfit.fit_dataset(ds)
    path = fits.save(tmp_path / "fits.nc", source={"data": ["x.nc"]})
    monkeypatch.setattr(ekfit.estimate, "irls", lambda *a, **k: pytest.fail("loading refitted"))
    loaded = ekfit.load_fits(path, loss="l1", cv_folds=5, data=["x.nc"])
    assert loaded.summary().equals(fits.summary())
    for key, f in fits.fits.items():
        g = loaded.fits[key]
        assert g.params == f.params
        np.testing.assert_array_equal(g.draws()["theta5" if f.kind == "sweetspot" else "b"],
                                      f.draws()["theta5" if f.kind == "sweetspot" else "b"])
        np.testing.assert_allclose(g.predict_interval([100, 3000], [20, 900]),
                                   f.predict_interval([100, 3000], [20, 900]))
        assert g.identified() == f.identified()


def test_a_stored_fit_of_other_settings_or_version_is_refused_in_one_line(tmp_path):
    import xarray as xr

    fits = ekfit.fit_dataset(dataset.from_frame(synthetic_frame(noise=0.01, repeats=1, seed=4)))
    path = fits.save(tmp_path / "fits.nc", source={"data": ["a.nc"]})
    with pytest.raises(FitError, match=r"fitted with loss=l1, not l2"):
        ekfit.load_fits(path, loss="l2")
    with pytest.raises(FitError, match=r"fitted with data="):
        ekfit.load_fits(path, data=["b.nc"])
    ds = xr.load_dataset(path)
    ds.attrs["version"] = 99
    ds.to_netcdf(tmp_path / "v99.nc")
    with pytest.raises(FitError, match="version 1"):
        ekfit.load_fits(tmp_path / "v99.nc")
    with pytest.raises(FitError, match="does not exist; write one with: energykit fit"):
        ekfit.load_fits(tmp_path / "missing.nc")


# --- identification under the θ >= 0 bounds ------------------------------------------------------

def test_a_coefficient_the_cells_cannot_see_is_not_identified_and_o_star_is_na():
    """Energy whose o² term the data would make negative leaves θ4 on its bound in most draws: o* must
    read n/a, not inf or an absurd number."""
    from energykit import summary, sweetspots, uncertainty

    truth = {**TRUE_THETA, "theta4": -2e-5}
    frame = synthetic_frame(noise=0.01, repeats=2, seed=5, theta=truth)
    fit = ekfit.fit_dataset(dataset.from_frame(frame)).get("synthetic")
    assert fit.params["theta4"] == 0.0 and fit.at_bound_share()["theta4"] > 0.25
    assert fit.identified()["theta4"] is False and fit.identified()["theta5"] is True
    est, lo, hi = uncertainty.o_star_interval(fit, [64, 1024])
    assert np.isnan(est).all() and np.isnan(lo).all() and np.isnan(hi).all()
    shown = summary.table(sweetspots.o_star_table(ekfit.fit_dataset(dataset.from_frame(frame))))
    assert set(shown["o star [95 %]"]) == {"n/a"}
    assert set(shown["o star extrapolated"]) == {"n/a"}  # no o* is not an extrapolated o*
    theta = uncertainty.theta_table(fit).set_index("param")
    assert not theta.loc["theta4", "identified"] and theta.loc["theta2", "identified"]


def test_identified_coefficients_keep_their_o_star():
    fit = ekfit.fit_dataset(dataset.from_frame(synthetic_frame(noise=0.005, repeats=2, seed=6))).get("synthetic")
    from energykit import uncertainty

    assert fit.identified()["theta4"]
    est, lo, hi = uncertainty.o_star_interval(fit, [64, 1024])
    assert np.all((lo <= est) & (est <= hi)) and np.isfinite(est).all()


def test_a_cell_far_off_its_fit_cannot_drag_the_interval_to_zero():
    """A noisy window measured at 3x its fit: with E* = Ê(1 + v·r) half the draws would put that cell at
    -2Ê (clipped to ~0), refits collapse and the lower bound reaches ~0 (the 02_fit bands to 1e-12). On
    the log scale the cell is mirrored to Ê/3 instead."""
    i, o = _grid()
    E = ekfit.sweetspot_energy(i, o, **TRUE_THETA)
    E[3] *= 3.0
    res = ekfit.fit_cells(E, i, o)
    coef = np.array([res.params[n].value for n in ekfit.THETA])
    X = ekfit.design_matrix("sweetspot", i, o)
    draws = ekfit.wild_bootstrap(X, E, coef, "l1", 200, seed=1)
    pred = draws @ X.T
    assert (pred > 0.2 * (X @ coef)).all()


def test_validation_cells_are_left_out_of_the_fit_and_predicted():
    frame = synthetic_frame(noise=0.0, repeats=1, seed=7)
    frame.loc[(frame["input_len"] == 1024) & (frame["output_len"] == 64), "energy_j"] *= 1.5  # one cell off
    ds = dataset.from_frame(frame)
    t = ekfit.validation_table(ds, [(1024, 64), (256, 256)])
    row = t.iloc[0]
    assert (row["cells_fitted"], row["cells_validated"]) == (len(GRID_I) * len(GRID_O) - 2, 2)
    # the clean cell is predicted exactly, the perturbed one misses by 1 - 1/1.5 = 33.3 %
    assert row["validation_max_ape_pct"] == pytest.approx(100 / 3, rel=1e-3)
    assert row["validation_mape_pct"] == pytest.approx(100 / 6, rel=1e-3)
    with pytest.raises(FitError, match="none of the validation cells"):
        ekfit.validation_table(ds, [(3, 3)])
