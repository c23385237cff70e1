import json

import pytest

from energykit import dataset, design
from energykit.cli import main
from energykit.errors import ParamsError

from conftest import COMPILED, GRID_I, GRID_O, synthetic_frame

GRID = [(i, o) for i in GRID_I for o in GRID_O]


def test_d_optimal_includes_corners_and_budget():
    cells = design.d_optimal(GRID, 8)
    assert len(cells) == 8 == len(set(cells))
    for corner in [(64, 16), (64, 1024), (4096, 16), (4096, 1024)]:
        assert corner in cells


def test_d_optimal_beats_random_subsets_in_logdet():
    import numpy as np

    cand = np.asarray(sorted(GRID))
    X = design._rows(cand, design.DECODE_TO_PREFILL_COST)
    chosen = design.d_optimal(GRID, 8)
    idx = [int(np.flatnonzero((cand == c).all(axis=1))[0]) for c in chosen]
    best = design._logdet(X[idx])
    rng = np.random.default_rng(0)
    for _ in range(200):
        assert design._logdet(X[rng.choice(len(cand), 8, replace=False)]) <= best + 1e-9


def test_budget_errors():
    with pytest.raises(ParamsError, match="budget 4 is below"):
        design.d_optimal(GRID, 4)
    with pytest.raises(ParamsError, match="exceeds the 20 candidate"):
        design.d_optimal(GRID, 21)


def test_design_recovers_synthetic_model():
    ds = dataset.from_frame(synthetic_frame(noise=0.0))
    t = design.evaluate_design(ds, 8)
    assert t["heldout_mape_pct"].iloc[0] < 0.1


def test_design_cli_json_on_measured_file(capsys):
    assert main(["design", str(COMPILED), "--budget", "8", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    m = out["models"]["llama3.2-1b-shape"]
    assert len(m["cells"]) == 8 and m["heldout_cells"] == 12
    assert m["heldout_mape_pct"] <= 6


def test_design_cli_bad_budget(capsys):
    assert main(["design", str(COMPILED), "--budget", "3"]) == 2
    assert "budget 3" in capsys.readouterr().err
