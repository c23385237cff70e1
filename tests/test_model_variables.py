"""A variable declared in energykit/model.py alone reaches every step (issue 31): the CSV reader, the
dataset, the fit, predictions with intervals, the stored fit file and the price card.

The test adds a dummy measured axis, the GPU power cap ``power_cap_w``, to ``model.VARIABLES`` and
a model using it to ``model.MODELS``, in place (``monkeypatch.setitem`` on the registries' own
dicts, as an edit of model.py's source would change them): a module that copied the variables at
import time (``DIMS = (..., *VARIABLES)``) would miss it and fail here.

Also: fit files and price cards written by the kit before issue 31 (``tests/data/*_main_v1.*``,
written by ``tests/data/make_main_fixtures.py`` with main's code at fbc1e08) still load, and give
main's numbers.
"""

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from conftest import GRID_I, GRID_O, TRUE_THETA
from energykit import dataset, model, price
from energykit.errors import FitError
from energykit.iotools import read_tidy
from energykit.fit import fit_dataset, fit_kind, load_fits, price_card, sweetspot_energy

DATA = Path(__file__).parent / "data"
CAPS = (200, 300, 450)
THETA_P = 0.05
"""True energy per watt of power cap [J/W] of the synthetic data."""


@pytest.fixture
def power_cap(monkeypatch):
    """``power_cap_w`` declared as a Variable and a model ``capped`` (SweetSpot's terms plus θp·P), in model.py's registries."""
    monkeypatch.setitem(model.VARIABLES, "power_cap_w", model.Variable("power_cap_w", "P", "W", "GPU power cap"))
    capped = model.EnergyModel("capped", ("input_len", "output_len", "power_cap_w"), (
        *model.SWEETSPOT.terms,
        model.Term("thetap", ("power_cap_w",), "θp", "J/W", "P: energy per watt of power cap"),
    ), "SweetSpot analytical model plus a power-cap term")
    monkeypatch.setitem(model.MODELS, "capped", capped)
    return capped


def _csv(tmp_path) -> Path:
    rng = np.random.default_rng(7)
    rows = [dict(model="synthetic", engine="sim", gpu="none", dtype="bf16", batch_size=16, input_len=i, output_len=o,
                 power_cap_w=p, repeat=r, duration_s=0.01 * o + 1e-4 * i,
                 energy_j=(sweetspot_energy(i, o, **TRUE_THETA) + THETA_P * p) * (1 + 0.005 * rng.standard_normal()))
            for i in GRID_I for o in GRID_O for p in CAPS for r in range(2)]
    path = tmp_path / "capped.csv"
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


def _truth(i, o, p):
    return sweetspot_energy(i, o, **TRUE_THETA) + THETA_P * p


def test_a_variable_declared_in_model_py_is_read_fitted_predicted_stored_and_priced(power_cap, tmp_path):
    assert model.cell_key()[-1] == "power_cap_w"
    csv = _csv(tmp_path)
    ds = dataset.load(csv)
    assert "power_cap_w" in dataset.window_key(ds) and "power_cap_w" in ds.dims
    assert "power_cap_w" in dataset.measured_cells(ds).columns
    again = dataset.load(dataset.write_netcdf(ds, tmp_path / "capped.nc"))  # the kit's own file keeps the axis
    assert "power_cap_w" in dataset.window_key(again)
    assert dataset.measured_cells(again).equals(dataset.measured_cells(ds))
    frame = read_tidy(csv, variables=model.cell_key())[0]
    stacked = dataset.from_frame(frame, layout="stacked")  # the long-tail layout: the axis is a window coordinate
    assert dataset.measured_cells(stacked).equals(dataset.measured_cells(ds))

    fits = fit_dataset(ds, kinds=["capped"], cv_folds=3)
    f = fits.get("synthetic", 16, kind="capped")
    assert f.variables == ("input_len", "output_len", "power_cap_w") and f.fixed == {"batch_size": 16}
    assert sorted(set(f.cells["power_cap_w"])) == list(CAPS)
    assert f.params["thetap"] == pytest.approx(THETA_P, rel=0.3)
    cell = {"input_len": [512], "output_len": [128], "power_cap_w": [300]}
    est, low, high = f.predict_interval(cell, n=50)
    assert low[0] <= est[0] <= high[0]
    assert est[0] == pytest.approx(_truth(512, 128, 300), rel=0.03)
    assert float(f.predict(model.cell(512, 128, power_cap_w=300))) == pytest.approx(est[0])
    with pytest.raises(FitError, match="power_cap_w"):
        f.predict(512, 128)  # the variable is needed, and the error names it

    back = load_fits(fits.save(tmp_path / "fits.nc", n_draws=50))
    g = back.get("synthetic", 16, kind="capped")
    assert g.params == f.params and g.fixed == f.fixed and g.variables == f.variables
    assert np.array_equal(g.predict_interval(cell, n=50), (est, low, high))

    card = json.loads(json.dumps(price_card(ds, kind="capped", n_draws=50)))
    e = card["models"][0]
    assert "power_cap_w" in e["variables"] and e["fixed"] == {"batch_size": 16}
    assert card["units"]["power_cap_w"] == "W"
    joules, lo, hi, outside = price.price(price.check_card(card), "synthetic", 512, 128, batch=16, power_cap_w=300)
    assert joules == pytest.approx(float(f.predict(cell)[0]) / 16, rel=1e-9) and lo <= joules <= hi and not outside
    assert price.price(card, "synthetic", 512, 128, batch=16, power_cap_w=900)[3]  # beyond the caps measured
    with pytest.raises(ValueError, match="power_cap_w"):
        price.price(card, "synthetic", 512, 128, batch=16)
    with pytest.raises(ValueError, match="batch size 16 only"):
        price.price(card, "synthetic", 512, 128, batch=4, power_cap_w=300)


def test_the_default_fits_hold_the_new_variable_fixed(power_cap, tmp_path):
    """The per-batch analytical model does not take the power cap: it is fitted once per cap, and says so."""
    ds = dataset.load(_csv(tmp_path))
    fits = fit_kind(ds, "synthetic", "sweetspot", cv_folds=2)
    assert [f.fixed for f in fits] == [{"batch_size": 16, "power_cap_w": p} for p in CAPS]
    default = fit_dataset(ds, cv_folds=2)  # never pooled across caps
    assert default.fits == {} and sorted((f.kind, f.fixed["power_cap_w"]) for f in default.every()) == \
        sorted((k, p) for k in ("sweetspot", "linear") for p in CAPS)


def test_a_fit_file_written_before_issue_31_loads_and_gives_its_numbers():
    """main's file marked the batch-aware fit by batch size 0; it loads as ``fixed = {}`` with the same numbers."""
    want = json.loads((DATA / "main_v1_expected.json").read_text())
    fits = load_fits(DATA / "fits_main_v1.nc")
    b = fits.batched["simulated"]
    assert b.fixed == {} and b.batch_size is None and b.batch_sizes == [1, 4, 16]
    assert float(b.predict(512, 128, 8)) == pytest.approx(want["batched_predict_512_128_8"], rel=1e-12)
    interval = [float(x[0]) for x in b.predict_interval([512], [128], n=20, batch_size=8)]
    assert interval == pytest.approx(want["batched_interval_512_128_8"], rel=1e-12)
    s = fits.get("simulated", 4)
    assert s.fixed == {"batch_size": 4} and s.batch_size == 4
    assert float(s.predict(512, 128)) == pytest.approx(want["sweetspot_b4_predict_512_128"], rel=1e-12)
    assert all(0 not in f.fixed.values() for f in fits.every())


def test_a_fit_file_written_before_issue_31_is_written_again_as_version_2(tmp_path):
    import xarray as xr

    path = load_fits(DATA / "fits_main_v1.nc").save(tmp_path / "v2.nc", n_draws=20)
    with xr.open_dataset(path, engine="h5netcdf") as ds:
        assert ds.attrs["version"] == 2 and "fit_batch_size" not in ds.variables
        fixed = [json.loads(str(x)) for x in ds["fit_fixed"].values]
    assert {} in fixed and {"batch_size": 4} in fixed
    assert load_fits(path).batched["simulated"].params == load_fits(DATA / "fits_main_v1.nc").batched["simulated"].params


def test_a_price_card_written_before_issue_31_prices_as_it_did():
    want = json.loads((DATA / "main_v1_expected.json").read_text())
    card = price.load_card(DATA / "price_card_main_v1.json")
    assert card["schema_version"] == 1
    assert list(price.price(card, "simulated", 512, 128, batch=8)) == pytest.approx(want["price_512_128_8"], rel=1e-12)


@pytest.mark.parametrize("where, value, match", [
    ("fixed", {"batch_size": -1}, "fixed batch_size"),
    ("fixed", {"batch_size": "16"}, "fixed batch_size"),
    ("fixed", [16], "fixed"),
    ("variables", {"input_len": {}, "output_len": {}, "Power Cap!": {}}, "plain variable name"),
    ("ranges", {"power_cap_w": [1, 2]}, "unknown variable 'power_cap_w'"),
])
def test_a_version_2_card_with_a_bad_fixed_or_variable_is_refused_naming_it(where, value, match):
    card = json.loads((Path(__file__).parents[1] / "tests" / "golden" / "price_h200_hf.json").read_text())
    card["models"][0][where] = value
    with pytest.raises(ValueError, match=match):
        price.check_card(card)


def test_a_design_chooses_among_cells_given_as_mappings_of_a_declared_variable(power_cap):
    from energykit.design import d_optimal

    cells = [model.cell(i, o, power_cap_w=p) for i in GRID_I for o in GRID_O for p in CAPS]
    chosen = d_optimal(cells, 9, model=power_cap)
    assert len(chosen) == 9 and all(len(c) == 3 and c[2] in CAPS for c in chosen)
    assert len({c[2] for c in chosen}) > 1  # the design spreads over the new axis
    assert d_optimal(cells, 9, model=power_cap) == d_optimal([tuple(c.values()) for c in cells], 9, model=power_cap)


def test_the_cli_fits_shows_and_exports_a_model_over_the_new_variable(power_cap, tmp_path, capsys):
    """``energykit fit --kind`` / ``export --kind`` name a declared model; fits outside the per-batch pairs are shown."""
    import re

    from energykit.cli import main

    csv = _csv(tmp_path)
    assert main(["fit", str(csv), "--kind", "capped", "--cv-folds", "2", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    [o] = out["other_fits"]
    assert o["kind"] == "capped" and o["fixed"] == {"batch_size": 16} and "power_cap_w" in o["variables"]
    assert o["params"]["thetap"] == pytest.approx(THETA_P, rel=0.3) and out["models"] == {}
    assert main(["fit", str(csv), "--cv-folds", "2"]) == 0  # by default: the per-batch models at each cap
    text = capsys.readouterr().out
    assert len(re.findall(r"synthetic: sweetspot over \(input_len, output_len\) at batch_size=16, power_cap_w=\d+", text)) == 3
    card = tmp_path / "card.json"
    assert main(["export", str(csv), "-o", str(card), "--kind", "capped"]) == 0
    joules = price.price(json.loads(card.read_text()), "synthetic", 512, 128, batch=16, power_cap_w=300)[0]
    assert joules == pytest.approx(_truth(512, 128, 300) / 16, rel=0.03)
    capsys.readouterr()
    assert main(["fit", str(csv), "--kind", "nosuch"]) == 2
    err = capsys.readouterr().err
    assert "nosuch" in err and len(err.strip().splitlines()) == 1
