import json
import subprocess
import sys

import pandas as pd
import pytest

from energykit.cli import main

from conftest import COMPILED, ROOT


def test_fit_json_schema(capsys):
    assert main(["fit", str(COMPILED), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    m = out["models"]["llama3.2-1b-shape"]
    for key in ("mape_pct", "baseline_mape_pct", "cv_mape_pct", "params", "o_star"):
        assert key in m
    assert set(m["params"]) == {"theta0", "theta1", "theta2", "theta3", "theta4", "theta5"}
    assert set(m["o_star"]) == {"64", "256", "1024", "2048", "4096"}
    assert m["mape_pct"] <= 5 and m["mape_pct"] <= 0.75 * m["baseline_mape_pct"]


def test_fit_table(capsys):
    assert main(["fit", str(COMPILED)]) == 0
    out = capsys.readouterr().out
    assert "mape_pct" in out and "llama3.2-1b-shape" in out


def test_fit_save_stores_what_load_fits_reads(capsys, tmp_path):
    from energykit import load_fits

    path = tmp_path / "fits.nc"
    assert main(["fit", str(COMPILED), "--json", "--save", str(path)]) == 0
    printed = json.loads(capsys.readouterr().out)["models"]["llama3.2-1b-shape"]
    fit = load_fits(path, data=[str(COMPILED)]).get("llama3.2-1b-shape")
    assert fit.params == pytest.approx(printed["params"])
    assert fit.mape_pct == pytest.approx(printed["mape_pct"])


def test_fit_validate_reports_the_left_out_cells(capsys):
    assert main(["fit", str(COMPILED), "--json", "--validate", "256:64", "1024:256"]) == 0
    (row,) = json.loads(capsys.readouterr().out)["validation"]
    assert row["cells_validated"] == 2 and 0 <= row["validation_mape_pct"] < 10
    with pytest.raises(SystemExit):
        main(["fit", str(COMPILED), "--validate", "256x64"])
    assert "is not INPUT:OUTPUT" in capsys.readouterr().err


def test_fit_select_model(capsys, synthetic_csv):
    assert main(["fit", str(synthetic_csv), "--model", "synthetic", "--json"]) == 0
    assert list(json.loads(capsys.readouterr().out)["models"]) == ["synthetic"]


@pytest.mark.parametrize(
    "args, match",
    [
        (["fit", "missing.csv"], "no such file"),
        (["fit", str(COMPILED), "--model", "nope"], "'nope' is not in the data"),
        (["report", "--params", "missing.yaml"], "no such params file"),
    ],
)
def test_cli_errors_one_line_exit_2(args, match, capsys):
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert match in err and "\n" not in err and "Traceback" not in err


def test_cli_bad_csv_subprocess(tmp_path):
    df = pd.read_csv(COMPILED)
    df.loc[0, "energy_j"] = -1
    df.to_csv(tmp_path / "bad.csv", index=False)
    p = subprocess.run([sys.executable, "-m", "energykit", "fit", str(tmp_path / "bad.csv")],
                       capture_output=True, text=True, cwd=ROOT)
    assert p.returncode == 2
    assert p.stderr.count("\n") == 1 and "negative" in p.stderr and "Traceback" not in p.stderr


def test_bad_report_params(tmp_path, capsys):
    (tmp_path / "p.yaml").write_text("data: [data/h200_transformers_compiled_b16.csv]\ncv_fold: 3\n")
    assert main(["report", "--params", str(tmp_path / "p.yaml")]) == 2
    assert "unknown key 'cv_fold'" in capsys.readouterr().err
    (tmp_path / "q.yaml").write_text("data: [data/h200_transformers_compiled_b16.csv]\ntruncate_inputs: [-5]\n")
    assert main(["report", "--params", str(tmp_path / "q.yaml")]) == 2
    assert "-5" in capsys.readouterr().err


H200 = ROOT / "data" / "h200_hf_energykit" / "measurements.nc"


def test_version(capsys):
    from energykit import __version__

    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0 and capsys.readouterr().out.strip() == f"energykit {__version__}"


def test_predict_text_names_theta_o_star_and_what_each_energy_is_per(capsys):
    """Without --model every model is predicted (it used to price the first one silently); the text gives θ and
    o*(i) and labels energy per batch and per request apart."""
    assert main(["predict", str(H200), "--input-lens", "512", "--output-lens", "64", "512"]) == 0
    out = capsys.readouterr().out
    for model in ("llama3.2-1b", "opt-1.3b"):
        assert f"{model}: E(i, o) fitted at batch 16" in out
    assert out.count("θ (per batch of the fit): theta1 = ") == 2 and out.count("o*(i, B=16) [tokens]") == 2
    assert "energy per batch of 16 [J] [95 %]" in out and "energy per request [J] [95 %]" in out
    # the README's figure: o*(512) of llama3.2-1b at batch 16 is 373 tokens
    assert "i=512: 373 [" in out.split("opt-1.3b:")[0]
    assert main(["predict", str(H200), "--model", "opt-1.3b", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["model"] == "opt-1.3b"
    assert main(["predict", str(H200), "--json", "--input-lens", "64", "--output-lens", "64"]) == 0
    assert set(json.loads(capsys.readouterr().out)["models"]) == {"llama3.2-1b", "opt-1.3b"}
    assert main(["predict", str(H200), "--model", "gpt-9"]) == 2
    assert "model 'gpt-9' is not in" in capsys.readouterr().err


def test_design_plans_a_sweep_from_its_params_file_before_measuring(capsys, tmp_path):
    """design PARAMS.yaml --budget N: cells from the params' grid, no measurement needed, and a params file that
    validates as a sweep (the default prior reproduces the cells committed in measure_paper_families.yaml)."""
    from energykit.params import load_measure_params

    params = ROOT / "params" / "measure_paper_families.yaml"
    out = tmp_path / "planned.yaml"
    assert main(["design", str(params), "--budget", "10", "-o", str(out)]) == 0
    planned = load_measure_params(out)
    committed = load_measure_params(params)
    assert planned.cells == committed.cells[:10] and planned.models == committed.models
    assert out.read_text().startswith("# Written by energykit design")
    assert "energykit measure" in capsys.readouterr().out
    # a prior: the fit of measured models, the hardware model from geometry for the others
    prior_out = tmp_path / "prior.yaml"
    assert main(["design", str(params), "--budget", "8", "--prior", str(H200), "-o", str(prior_out)]) == 0
    text = capsys.readouterr().out
    assert "a fit of opt-1.3b, llama3.2-1b" in text and "hardware model from geometry for qwen2-1.5b" in text
    assert len(load_measure_params(prior_out).cells) == 8
    # never the input, never a file it did not write
    assert main(["design", str(params), "--budget", "10", "-o", str(params)]) == 2
    foreign = tmp_path / "mine.yaml"
    foreign.write_text("engine: hf\n")
    assert main(["design", str(params), "--budget", "10", "-o", str(foreign)]) == 2
    assert foreign.read_text() == "engine: hf\n"
    assert main(["design", str(params), "--budget", "3", "-o", str(out)]) == 2
