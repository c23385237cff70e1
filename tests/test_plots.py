"""Figures cannot be stretched or made absurd by an interval bound near 0 or infinity."""

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import xarray as xr  # noqa: E402

import energykit.fit as ekfit
from energykit import dataset, plots  # noqa: E402

from conftest import synthetic_frame  # noqa: E402


def _map(values):
    return xr.DataArray(np.asarray(values, dtype=float), dims=("input_len", "output_len"),
                        coords={"input_len": [64, 128], "output_len": [16, 32]})


def test_heatmap_shows_an_absurd_upper_bound_as_unbounded():
    est = _map([[4.0, 4.1], [3.9, 3.8]])
    ax = plots.efficiency_heatmap(est, low=est * 0.9, high=_map([[4.2, 1.02e15], [np.inf, 4.0]]))
    texts = [t.get_text() for t in ax.texts]
    assert sum("unbounded" in t for t in texts) == 2
    assert not any("e+" in t or "inf" in t for t in texts)


def test_fit_bands_and_parity_error_bars_stay_inside_the_data_range(monkeypatch):
    fits = ekfit.fit_dataset(dataset.from_frame(synthetic_frame(noise=0.02, repeats=2, seed=8)))
    fit = fits.get("synthetic")
    real = ekfit.ModelFit.predict_interval

    def absurd(self, i, o, *a, **k):  # bounds of a badly identified fit: ~0 and ~infinity
        est, _, _ = real(self, i, o, *a, **k)
        return est, np.full_like(est, 1e-12), np.full_like(est, 1e15)

    monkeypatch.setattr(ekfit.ModelFit, "predict_interval", absurd)
    lo, hi = plots.log_range(fit.energy_j)
    ax = plots.fit_curves(fit)
    assert ax.get_ylim() == (lo, hi)
    for band in ax.collections:
        ys = np.concatenate([p.vertices[:, 1] for p in band.get_paths()])
        assert ys.min() >= lo * (1 - 1e-9) and ys.max() <= hi * (1 + 1e-9)
    ax = plots.parity(fits)
    assert ax.get_ylim() == (lo, hi) and ax.get_xlim() == (lo, hi)
    for bars in ax.collections:  # the error bars' segments
        for seg in bars.get_segments():
            assert seg[:, 1].min() >= lo * (1 - 1e-9) and seg[:, 1].max() <= hi * (1 + 1e-9)


def test_heatmap_draws_no_o_star_marker_on_the_edge_row_when_o_star_is_beyond_it():
    """The pilot's OPT-1.3B map (o ≤ 256 measured) showed o* markers on the top row at i ≥ 1024, reading as
    o* = 256 where the fit gives more: beyond the rows the line stops and the title says where."""
    ds = dataset.load("data/h100_paper_families_pilot/measurements.nc")
    fit = ekfit.fit_dataset(ds, loss="l1", cv_folds=2).get("opt-1.3b")
    tpj = (ds["batch_size"] * ds["output_len"] / ds["energy_j"].mean("repeat")).sel(model="opt-1.3b").isel(batch_size=0)
    ax = plots.efficiency_heatmap(tpj, fit)
    line = next(l for l in ax.get_lines() if l.get_label() == "o*(i) (fitted)")
    y = np.asarray(line.get_ydata(), dtype=float)
    top_row_centre = 0.5  # heatmap rows run from the longest output (row 0) down
    assert np.isnan(y).any() and not np.any(np.isclose(y, top_row_centre))
    assert "outside the plotted o range at i = " in ax.get_title()
    plt.close("all")
