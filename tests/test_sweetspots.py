import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import energykit.fit as ekfit
from energykit import dataset, sweetspots

from conftest import COMPILED, EAGER, TRUE_THETA


@settings(max_examples=40, deadline=None)
@given(
    st.floats(1e-8, 1e-4), st.floats(0, 1e-2), st.floats(1e-3, 1.0), st.floats(1e-6, 1e-2),
    st.floats(0, 10), st.floats(0, 500), st.sampled_from([64, 512, 4096]),
)
def test_closed_form_o_star_equals_numeric(t1, t2, t3, t4, t5, t0, i):
    p = dict(theta1=t1, theta2=t2, theta3=t3, theta4=t4, theta5=t5, theta0=t0)
    closed = float(ekfit.o_star(p, i))
    assert sweetspots.o_star_numeric(p, i) == pytest.approx(closed, rel=1e-4)


def test_o_star_brute_force_on_integer_grid():
    o = np.arange(1, 20000)
    for i in (64, 1024, 4096):
        per_token = ekfit.sweetspot_energy(i, o, **TRUE_THETA) / o
        brute = o[np.argmin(per_token)]
        assert abs(brute - ekfit.o_star(TRUE_THETA, i)) <= 1.0


def test_o_star_infinite_without_theta4():
    p = dict(TRUE_THETA, theta4=0.0)
    assert np.isinf(ekfit.o_star(p, 128))


def test_region_and_ratio():
    import xarray as xr

    da = xr.DataArray([[1.0, 2.0], [9.5, 10.0]], coords={"input_len": [1, 2], "output_len": [1, 2]},
                      dims=("input_len", "output_len"))
    reg = sweetspots.sweet_region(da, 10)
    assert reg.values.tolist() == [[False, False], [True, True]]
    assert sweetspots.best_worst_ratio(da) == 10.0
    assert sweetspots.best_cell(da) == (2, 2, 10.0)


def test_efficiency_definitions():
    assert sweetspots.tokens_per_j(100.0, 16, 50) == pytest.approx(8.0)
    assert sweetspots.energy_per_token_j(100.0, 16, 50) == pytest.approx(0.125)


def test_fitted_map_flags_extrapolation():
    fits = ekfit.fit_dataset(dataset.load(COMPILED))
    fm = sweetspots.fitted_map(fits.get("llama3.2-1b-shape"))
    assert bool(fm["extrapolated"].sel(input_len=64, output_len=2048))
    assert not bool(fm["extrapolated"].sel(input_len=128, output_len=512))
    assert fm["tokens_per_j"].attrs["units"] == "tokens/J"


def test_ratio_and_attention_tables():
    ds = dataset.load(EAGER)
    fits = ekfit.fit_dataset(ds)
    r = sweetspots.ratio_table(ds, fits)
    assert (r["measured_best_worst"] >= 1).all()
    a = sweetspots.attention_table(ds, fits).set_index("model")
    assert a.loc["opt-1.3b-shape", "attention"] == "MHA"
    assert a.loc["llama3.2-1b-shape", "attention"] == "GQA"
    # Llama-3.2-1B: 2·16 layers·8 kv heads·64·2 bytes
    assert a.loc["llama3.2-1b-shape", "kv_bytes_per_token"] == 2 * 16 * 8 * 64 * 2
