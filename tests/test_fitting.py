import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from energykit import dataset, fitting
from energykit.errors import FitError

from conftest import COMPILED, GRID_I, GRID_O, TRUE_THETA, synthetic_frame


def _grid():
    i, o = np.meshgrid(GRID_I, GRID_O, indexing="ij")
    return i.ravel().astype(float), o.ravel().astype(float)


@pytest.mark.parametrize("loss", ["l1", "l2"])
def test_recovers_known_theta_from_noisy_data(loss):
    ds = dataset.from_frame(synthetic_frame(noise=0.005, repeats=3, seed=1))
    fit = fitting.fit_dataset(ds, loss=loss).get("synthetic")
    for name, true in TRUE_THETA.items():
        assert fit.params[name] == pytest.approx(true, rel=0.25), name
    # the dominant terms are recovered much more tightly
    assert fit.params["theta5"] == pytest.approx(TRUE_THETA["theta5"], rel=0.03)
    assert fit.params["theta3"] == pytest.approx(TRUE_THETA["theta3"], rel=0.05)
    assert fit.mape_pct < 1.0
    assert np.isfinite(fit.stderr["theta5"]) and fit.stderr["theta5"] > 0


def test_exact_data_gives_exact_fit():
    i, o = _grid()
    E = fitting.sweetspot_energy(i, o, **TRUE_THETA)
    res = fitting.fit_cells(E, i, o)
    np.testing.assert_allclose(res.eval(input_len=i, output_len=o), E, rtol=1e-6)


def test_theta_nonnegative_even_when_data_prefer_negative():
    i, o = _grid()
    E = 100 + 3 * o - 0.01 * i  # negative input slope
    res = fitting.fit_cells(E, i, o)
    assert all(p.value >= 0 for p in res.params.values())


def test_mape_hand_computed():
    assert fitting.mape_pct([110, 90, 100], [100, 100, 100]) == pytest.approx(20 / 3)
    assert fitting.ape_pct([150], [100])[0] == pytest.approx(50)


def test_r2_hand_computed():
    assert fitting.r2([1, 2, 3], [1, 2, 3]) == 1.0
    assert fitting.r2([2, 2, 2], [1, 2, 3]) == pytest.approx(0.0)


def test_kfold_partitions_every_cell_once():
    folds = fitting.kfold_indices(20, 5, seed=3)
    assert len(folds) == 5
    assert sorted(np.concatenate(folds).tolist()) == list(range(20))


def test_cross_validation_hand_computed_linear_case():
    # exactly linear data: every held-out cell is predicted exactly by the baseline
    i, o = _grid()
    E = 0.1 * i + 2.0 * o + 5.0
    ape = fitting.cross_validate(E, i, o, kind="linear", k=4)
    assert np.nanmax(ape) < 1e-6
    # one perturbed cell: its own held-out error is the largest, by construction
    E2 = E.copy()
    E2[7] *= 1.5
    ape2 = fitting.cross_validate(E2, i, o, kind="linear", loss="l2", k=len(E))  # leave-one-out
    assert int(np.argmax(ape2)) == 7


def test_fit_on_measured_compiled_file_beats_baseline():
    fits = fitting.fit_dataset(dataset.load(COMPILED))
    s = fits.summary().iloc[0]
    assert s["mape_pct"] < 5.0
    assert s["mape_pct"] <= 0.75 * s["baseline_mape_pct"]
    assert s["r2"] > 0.99


def test_too_few_cells_is_an_error():
    with pytest.raises(FitError, match="only 4 cells"):
        fitting.fit_cells([1.0, 2, 3, 4], [1, 2, 3, 4], [1, 2, 3, 4])


def test_unknown_model_is_an_error():
    with pytest.raises(FitError, match="not in the data"):
        fitting.fit_dataset(dataset.load(COMPILED), models=["gpt-9"])


@settings(max_examples=25, deadline=None)
@given(st.floats(1, 4096), st.floats(1, 4096))
def test_scalar_array_xarray_agree(i, o):
    import xarray as xr

    s = fitting.sweetspot_energy(i, o, **TRUE_THETA)
    a = fitting.sweetspot_energy(np.array([i]), np.array([o]), **TRUE_THETA)[0]
    x = fitting.sweetspot_energy(xr.DataArray([i]), xr.DataArray([o]), **TRUE_THETA).item()
    assert s == pytest.approx(a) == pytest.approx(x)


def test_to_xarray_has_units():
    fits = fitting.fit_dataset(dataset.load(COMPILED))
    x = fits.to_xarray()
    assert set(x["param"].values) == set(fitting.THETA)
    assert str(x["units"].sel(param="theta0").values) == "J"
