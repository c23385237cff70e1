import json

import numpy as np
import pandas as pd
import pytest
import xarray as xr

from energykit.iotools import read_tidy, read_trace, read_window_log
from energykit import dataset
from energykit.errors import DataError

from conftest import COMPILED, EAGER


def test_load_compiled_csv_dims_units_provenance():
    ds = dataset.load(COMPILED)
    assert tuple(ds["energy_j"].dims) == dataset.DIMS
    assert ds.sizes["input_len"] == 5 and ds.sizes["output_len"] == 4 and ds.sizes["repeat"] == 2
    assert ds["energy_j"].attrs["units"] == "J"
    assert ds["duration_s"].attrs["units"] == "s"
    assert ds.attrs["gpu"] == "NVIDIA H200"
    assert "compiled" in ds.attrs["engine"]
    assert int(ds["params"].sel(model="llama3.2-1b-shape")) == 1_235_814_400
    # first row of the file
    v = ds["energy_j"].sel(model="llama3.2-1b-shape", batch_size=16, input_len=64, output_len=16, repeat=0)
    assert float(v) == pytest.approx(47.49)


def test_eager_missing_repeats_are_nan():
    ds = dataset.load(EAGER)
    assert ds.sizes["model"] == 3
    n = int(ds["energy_j"].notnull().sum())
    assert n == len(pd.read_csv(EAGER))


def test_netcdf_round_trip(tmp_path):
    ds = dataset.load(COMPILED)
    ds.attrs["params"] = {"a": 1}
    path = dataset.write_netcdf(ds, tmp_path / "x.nc")
    back = dataset.load(path)
    xr.testing.assert_allclose(ds["energy_j"], back["energy_j"])
    assert back.attrs["params"] == {"a": 1}
    assert list(back["arch"].values) == list(ds["arch"].values)


def test_csv_and_jsonl_round_trip(tmp_path):
    df = pd.read_csv(COMPILED)
    df.to_json(tmp_path / "x.jsonl", orient="records", lines=True)
    a = dataset.load(COMPILED)
    b = dataset.load(tmp_path / "x.jsonl")
    xr.testing.assert_allclose(a["energy_j"], b["energy_j"])
    # tidy -> dataset -> tidy -> dataset
    tidy = dataset.to_frame(a)
    tidy.to_csv(tmp_path / "y.csv", index=False)
    c = dataset.load(tmp_path / "y.csv")
    xr.testing.assert_allclose(a["energy_j"], c["energy_j"])


def test_units_are_converted(tmp_path):
    df = pd.read_csv(COMPILED).rename(columns={"energy_j": "energy_kj", "duration_s": "duration_ms"})
    df["energy_kj"] /= 1000
    df["duration_ms"] *= 1000
    df.to_csv(tmp_path / "k.csv", index=False)
    a, b = dataset.load(COMPILED), dataset.load(tmp_path / "k.csv")
    np.testing.assert_allclose(a["energy_j"], b["energy_j"])
    np.testing.assert_allclose(a["duration_s"], b["duration_s"])


def _write(tmp_path, df, name="bad.csv"):
    path = tmp_path / name
    df.to_csv(path, index=False)
    return path


@pytest.mark.parametrize(
    "mutate, match",
    [
        (lambda d: d.drop(columns="input_len"), "missing column 'input_len'"),
        (lambda d: d.drop(columns="energy_j"), r"missing column 'energy_<unit>'"),
        (lambda d: d.assign(input_len=d.input_len.where(d.index != 3, -16)), r"'input_len' row 5: -16 is not a positive"),
        (lambda d: d.assign(output_len=d.output_len.where(d.index != 0, 0)), r"'output_len' row 2: 0 is not a positive"),
        (lambda d: d.assign(energy_j=d.energy_j.where(d.index != 1, -3.0)), r"'energy_j' row 3: energy -3 is negative"),
        (lambda d: d.assign(energy_j=d.energy_j.where(d.index != 2, np.nan)), r"'energy_j' row 4: energy is missing"),
        (lambda d: pd.concat([d, d.iloc[[5]]]), r"duplicate rows 7, 42"),
        (lambda d: d.rename(columns={"energy_j": "energy_cal"}), r"unknown unit 'cal' in column 'energy_cal'"),
        (lambda d: d.rename(columns={"duration_s": "duration_min"}), r"unknown unit 'min'"),
        (lambda d: d.assign(num_layers=d.num_layers.where(d.index != 4, 99)), r"'num_layers' varies within model"),
    ],
)
def test_bad_input_one_line_errors(tmp_path, mutate, match):
    path = _write(tmp_path, mutate(pd.read_csv(COMPILED)))
    with pytest.raises(DataError, match=match) as e:
        dataset.load(path)
    msg = str(e.value)
    assert "\n" not in msg and str(path) in msg


def test_empty_files(tmp_path):
    (tmp_path / "e.csv").write_text("")
    with pytest.raises(DataError, match="is empty"):
        dataset.load(tmp_path / "e.csv")
    (tmp_path / "h.csv").write_text(pd.read_csv(COMPILED).head(0).to_csv(index=False))
    with pytest.raises(DataError, match="no rows"):
        dataset.load(tmp_path / "h.csv")
    (tmp_path / "e.jsonl").write_text("")
    with pytest.raises(DataError, match="empty"):
        dataset.load(tmp_path / "e.jsonl")


def test_netcdf_with_unknown_unit(tmp_path):
    ds = dataset.load(COMPILED)
    ds["energy_j"].attrs["units"] = "mJ"
    ds.to_netcdf(tmp_path / "u.nc", engine="h5netcdf")
    with pytest.raises(DataError, match="unknown unit 'mJ'"):
        dataset.load(tmp_path / "u.nc")


def test_unknown_suffix(tmp_path):
    (tmp_path / "x.txt").write_text("a")
    with pytest.raises(DataError, match="unknown file type"):
        dataset.load(tmp_path / "x.txt")


def test_combine_renames_same_model_other_engine():
    ds = dataset.load_many([COMPILED, EAGER])
    names = list(ds["model"].values)
    assert "llama3.2-1b-shape" in names
    assert "llama3.2-1b-shape [transformers-5.17-eager]" in names
    assert ds.sizes["model"] == 4


def test_cell_means_match_pandas():
    ds = dataset.load(COMPILED)
    m = dataset.cell_means(ds)
    df = pd.read_csv(COMPILED).groupby(["input_len", "output_len"]).energy_j.agg(["mean", "std"])
    got = m["energy_j"].sel(model="llama3.2-1b-shape", batch_size=16).to_pandas().stack()
    np.testing.assert_allclose(got.sort_index().to_numpy(), df["mean"].sort_index().to_numpy())


def _long_tail_frame(rows: int, seed: int = 0):
    """Windows at long-tail lengths (as in production traces): almost every cell distinct."""
    rng = np.random.default_rng(seed)
    i = rng.integers(1, 8000, rows)
    o = rng.integers(1, 2000, rows)
    e = 3e-6 * i**2 + 2e-4 * i * o + 0.05 * i + 1e-4 * o**2 + 3.5 * o + 20
    df = pd.DataFrame(dict(model="tail", batch_size=16, input_len=i, output_len=o,
                           energy_j=e * (1 + 0.01 * rng.standard_normal(rows)), duration_s=0.01 * o))
    df["repeat"] = df.groupby(["input_len", "output_len"]).cumcount()  # a cell met twice is a second repeat
    return df


@pytest.mark.slow
def test_long_tail_data_is_stacked_and_stays_small(tmp_path):
    import energykit.fit as ekfit

    df = _long_tail_frame(20_000)
    path = tmp_path / "tail.csv"
    df.to_csv(path, index=False)
    ds = dataset.load(path)
    assert dataset.is_stacked(ds) and ds.sizes["window"] == 20_000
    assert ds.nbytes < 200 * 20_000  # in proportion to the rows; the grid would be ~ 8000 x 2000 slots
    assert dataset.model_names(ds) == ["tail"] and dataset.batch_sizes(ds) == [16]
    cells = dataset.measured_cells(ds, "tail")
    assert len(cells) == len(df.drop_duplicates(["input_len", "output_len"]))
    fits = ekfit.fit_dataset(ds, cv_folds=2)
    assert fits.get("tail").mape_pct < 2.0
    with pytest.raises(DataError, match="long-tail"):
        dataset.cell_means(ds)
    # a grid stays dense, and combining a grid with long-tail data stacks both
    grid = dataset.load(COMPILED)
    assert not dataset.is_stacked(grid)
    both = dataset.combine([grid, ds])
    assert dataset.is_stacked(both) and set(dataset.model_names(both)) == {"llama3.2-1b-shape", "tail"}
    assert dataset.geometry(both, "llama3.2-1b-shape")["num_layers"] == 16


def test_outlier_windows_are_flagged():
    from conftest import synthetic_frame

    ds = dataset.load(COMPILED)
    assert len(dataset.outlier_windows(ds)) == 0  # two repeats per cell: nothing to judge against
    df = synthetic_frame(repeats=4, noise=0.01)
    assert len(dataset.outlier_windows(dataset.from_frame(df))) == 0
    hit = (df["input_len"] == 64) & (df["output_len"] == 16) & (df["repeat"] == 3)
    df.loc[hit, "energy_j"] *= 1.5
    flagged = dataset.outlier_windows(dataset.from_frame(df))
    assert len(flagged) == 1 and flagged.iloc[0]["repeat"] == 3 and flagged.iloc[0]["deviation_pct"] > 40
