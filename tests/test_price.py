"""The price card (energykit export) and energykit/price.py, the standard-library reader a router vendors."""

import contextlib
import io
import json
import shutil
import subprocess
import sys
import venv
from pathlib import Path

import pytest

from energykit import hardware, price
from energykit.cli import main
from energykit.presets import PRESETS

ROOT = Path(__file__).resolve().parents[1]
H200 = ROOT / "data" / "h200_hf_energykit" / "measurements.nc"
COEF = dict(prefill_j_per_flop=2e-12, decode_j_per_flop=3e-12, weight_j_per_byte=4e-10, kv_j_per_byte=2e-10,
            step_j_per_layer=0.02, request_j=5.0)


def _run(argv) -> str:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(argv) == 0
    return out.getvalue()


@pytest.fixture(scope="module")
def batched_csv(tmp_path_factory):
    df = hardware.simulate(PRESETS["llama3.2-1b"], COEF, (1, 4, 16), (64, 256, 1024, 4096), (16, 64, 256, 1024),
                           noise_pct=3.0, seed=2)
    path = tmp_path_factory.mktemp("sim") / "batched.csv"
    df.to_csv(path, index=False)
    return path


def _check_round_trip(data, model, batch, ins, outs, tmp_path):
    card_path = tmp_path / "card.json"
    _run(["export", str(data), "-o", str(card_path)])
    card = price.load_card(card_path)
    pred = json.loads(_run(["predict", str(data), "--model", model, "--batch-size", str(batch), "--input-lens",
                            *map(str, ins), "--output-lens", *map(str, outs), "--json"]))
    for c in pred["cells"]:
        j, lo, hi, extra = price.price(card, model, c["input_len"], c["output_len"], batch=batch)
        assert j == pytest.approx(c["energy_per_request_j"], rel=1e-9)
        assert lo == pytest.approx(c["energy_per_request_j_low"], rel=1e-9)
        assert hi == pytest.approx(c["energy_per_request_j_high"], rel=1e-9)
        assert extra == c["extrapolated"]
    for i, o in pred["o_star"].items():
        assert price.o_star(card, model, int(i), batch) == pytest.approx(o["value"], rel=1e-9)
    return card, pred


def test_card_prices_as_predict_does_at_an_unmeasured_batch_size(batched_csv, tmp_path):
    card, pred = _check_round_trip(batched_csv, "simulated", 8, [64, 700, 8192], [16, 300], tmp_path)
    e = card["models"][0]
    assert card["schema_version"] == price.SCHEMA_VERSION and e["kind"] == "batched"
    assert e["batch_sizes"] == [1, 4, 16] and e["ranges"]["batch_size"] == [1.0, 16.0]
    assert len(e["draws"]["thetaw"]) == 200 and e["terms"][0]["unit"] == "J/token^2"
    flags = {(c["input_len"], c["output_len"]): c["extrapolated"] for c in pred["cells"]}
    assert flags == {(64, 16): False, (64, 300): False, (700, 16): False, (700, 300): False,
                     (8192, 16): True, (8192, 300): True}
    assert price.price(card, "simulated", 512, 128, batch=64)[3]  # beyond the measured batch sizes
    assert not price.price(card, "simulated", 512, 128, batch=4)[3]


def test_card_prices_the_bundled_single_batch_data(tmp_path):
    card, _ = _check_round_trip(H200, "llama3.2-1b", 16, [100, 512, 8000], [128, 2000], tmp_path)
    with pytest.raises(ValueError, match="batch size 16 only"):
        price.price(card, "llama3.2-1b", 512, 128, batch=4)
    with pytest.raises(KeyError, match="not in the price card"):
        price.price(card, "gpt-9", 512, 128, batch=16)


def test_load_card_refuses_another_schema(tmp_path):
    p = tmp_path / "card.json"
    p.write_text(json.dumps({"schema": price.SCHEMA, "schema_version": 99, "models": []}))
    with pytest.raises(ValueError, match="version 1"):
        price.load_card(p)


def test_price_runs_alone_in_a_venv_without_packages(batched_csv, tmp_path):
    card = tmp_path / "card.json"
    _run(["export", str(batched_csv), "-o", str(card)])
    vendored = tmp_path / "router"
    vendored.mkdir()
    shutil.copy(ROOT / "energykit" / "price.py", vendored / "price.py")
    env_dir = tmp_path / "venv"
    venv.EnvBuilder(with_pip=False, system_site_packages=False).create(env_dir)
    python = env_dir / ("Scripts/python.exe" if sys.platform == "win32" else "bin/python")
    code = ("import importlib.util, json, sys\n"
            "assert importlib.util.find_spec('numpy') is None, 'numpy is installed in the bare venv'\n"
            "import price\n"
            f"card = price.load_card({str(card)!r})\n"
            "print(json.dumps(price.price(card, 'simulated', 512, 128, batch=8)))\n"
            "assert 'numpy' not in sys.modules\n")
    p = subprocess.run([str(python), "-c", code], cwd=vendored, capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    j, lo, hi, extra = json.loads(p.stdout)
    here = price.price(price.load_card(card), "simulated", 512, 128, batch=8)
    assert (j, lo, hi, extra) == pytest.approx(here, rel=1e-12) and lo <= j <= hi and extra is False
