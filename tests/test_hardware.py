import json

import numpy as np
import pandas as pd
import pytest

from energykit import dataset, hardware, physics
from energykit.cli import main
from energykit.errors import FitError
from energykit.fit import sweetspot_energy
from energykit.presets import PRESETS

from conftest import EAGER, GRID_I, GRID_O

COEF = dict(prefill_j_per_flop=2e-12, decode_j_per_flop=3e-12, weight_j_per_byte=4e-10, kv_j_per_byte=2e-10,
            step_j_per_layer=0.02, request_j=5.0)


def _simulated(models, noise=0.0, seed=0):
    rng = np.random.default_rng(seed)
    hw = hardware.HardwareModel(COEF, [], "l1")
    rows = []
    for name in models:
        g = PRESETS[name]
        for i in GRID_I:
            for o in GRID_O:
                e = float(hw.predict(g, 16, i, o)[0]) * (1 + noise * rng.standard_normal())
                rows.append(dict(model=name, engine="sim", gpu="sim", dtype="bfloat16", batch_size=16, input_len=i,
                                 output_len=o, repeat=0, energy_j=e, duration_s=1.0,
                                 **{k: g[k] for k in ("arch", "num_layers", "hidden_size", "num_heads", "num_kv_heads",
                                                      "head_dim", "intermediate_size", "ffn_gated", "vocab_size",
                                                      "tied_embeddings")}, params=physics.param_count(g)))
    return dataset.from_frame(pd.DataFrame(rows))


def test_theta_is_exactly_the_sweetspot_form():
    hw = hardware.HardwareModel(COEF, [], "l1")
    g = PRESETS["llama3.2-1b"]
    theta = hw.theta(g, 16)
    i, o = np.array([100.0, 3000.0]), np.array([50.0, 700.0])
    np.testing.assert_allclose(sweetspot_energy(i, o, **theta), hw.predict(g, 16, i, o), rtol=1e-9)


def test_calibration_recovers_simulated_hardware_exactly():
    lomo = hardware.leave_one_model_out(_simulated(["llama3.2-1b", "opt-1.3b", "qwen2-1.5b"]))
    assert len(lomo) == 3 and (lomo["mape_pct"] < 1e-3).all()


def test_calibration_predicts_an_unseen_geometry_of_the_same_hardware():
    # 0.5 % noise: transfer to another geometry extrapolates the coefficients, so errors grow
    ds = _simulated(["llama3.2-1b", "opt-1.3b", "qwen2-1.5b"], noise=0.005)
    lomo = hardware.leave_one_model_out(ds)
    assert len(lomo) == 3 and (lomo["mape_pct"] < 10).all()
    hw = hardware.calibrate(ds)
    g = PRESETS["llama3.2-3b"]
    truth = hardware.HardwareModel(COEF, [], "l1").predict(g, 16, [512, 2048], [128, 512])
    assert hw.predict(g, 16, [512, 2048], [128, 512]) == pytest.approx(truth, rel=0.08)
    est, lo, hi = hw.predict_interval(g, 16, [512], [128], n=50)
    assert lo[0] <= est[0] <= hi[0]


def test_calibration_refuses_mixed_engines():
    with pytest.raises(FitError, match="several engines"):
        hardware.calibrate(dataset.load_many([EAGER, _write_other_engine()]))


def _write_other_engine():
    import tempfile
    from pathlib import Path

    df = pd.read_csv(EAGER)
    df["engine"] = "other"
    df["model"] = df["model"] + "-x"
    path = Path(tempfile.mkdtemp()) / "other.csv"
    df.to_csv(path, index=False)
    return path


def test_calibration_needs_geometry(tmp_path):
    df = pd.read_csv(EAGER)[["model", "batch_size", "input_len", "output_len", "repeat", "energy_j", "duration_s"]]
    df.to_csv(tmp_path / "nogeom.csv", index=False)
    with pytest.raises(FitError, match="geometry columns"):
        hardware.calibrate(dataset.load(tmp_path / "nogeom.csv"))


def test_predict_cli_json(capsys, tmp_path):
    ds = _simulated(["llama3.2-1b", "opt-1.3b"])
    dataset.write_netcdf(ds, tmp_path / "sim.nc")
    assert main(["predict", "--calibrate", str(tmp_path / "sim.nc"), "--geometry", "qwen2-1.5b", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["calibrated_on"] == ["llama3.2-1b", "opt-1.3b"]
    assert len(out["cells"]) == len(GRID_I) * len(GRID_O)
    c = out["cells"][0]
    assert c["energy_j_low"] <= c["energy_j"] <= c["energy_j_high"]
    assert set(out["leave_one_model_out_mape_pct"]) == {"llama3.2-1b", "opt-1.3b"}
    assert out["o_star"]["64"]["low"] <= out["o_star"]["64"]["value"] <= out["o_star"]["64"]["high"]


def test_predict_cli_unknown_geometry(capsys):
    assert main(["predict", "--calibrate", str(EAGER), "--geometry", "gpt-9"]) == 2
    assert "unknown model 'gpt-9'" in capsys.readouterr().err


def test_identification_is_one_rule_for_predict_and_the_planning_page():
    """Issue #19: `predict --json` said identified while the 05 page said 4 of 6 coefficients were not."""
    import json
    import subprocess
    import sys

    from conftest import ROOT

    from energykit import dataset, hardware

    ds = dataset.load(ROOT / "data" / "h200_hf_energykit" / "measurements.nc")
    two = hardware.calibrate(ds)
    table = hardware.coefficient_table(two)
    assert two.full_rank  # full rank, and still coefficients on their bound: not identified
    assert two.unidentified() == [c for c in table.index if not table.loc[c, "identified"]]
    assert two.all_identified() is (not two.unidentified())
    one = hardware.calibrate(ds, ["llama3.2-1b"])
    assert not one.full_rank and one.rank == 5
    p = subprocess.run([sys.executable, "-m", "energykit", "predict", "--calibrate",
                        str(ROOT / "data" / "h200_hf_energykit" / "measurements.nc"),
                        "--geometry", "qwen2-1.5b", "--json"], capture_output=True, text=True, cwd=ROOT, timeout=3600)
    assert p.returncode == 0, p.stderr
    out = json.loads(p.stdout)
    assert out["identified"] is two.all_identified()
    assert out["unidentified_coefficients"] == two.unidentified()
    if two.unidentified():
        assert "do not identify" in p.stderr
    # a prediction for an unmeasured model carries the leave-one-model-out error in its interval
    e = out["transfer_error_pct"] / 100
    assert e > 0
    for c in out["cells"]:
        assert c["energy_j_low"] <= c["energy_j"] * (1 - e) * (1 + 1e-9) if e < 1 else c["energy_j_low"] >= 0
        assert c["energy_j_high"] >= c["energy_j"] * (1 + e) * (1 - 1e-9)
