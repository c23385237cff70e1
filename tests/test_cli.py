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


def test_main_module_reimported_as_a_worker_runs_no_cli():
    """A worker re-imports the main module under another name (multiprocessing's spawn: ``__mp_main__``;
    mpi4py's MPIPoolExecutor, used by TensorRT-LLM): the guard keeps the CLI from running there."""
    import subprocess
    import sys

    for name in ("__worker__", "__mp_main__"):
        code = f"import runpy; runpy.run_module('energykit.__main__', run_name={name!r})"
        p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
        assert (p.returncode, p.stdout, p.stderr) == (0, "", ""), name
    # and run as the main module it is still the CLI
    p = subprocess.run([sys.executable, "-m", "energykit", "--help"], capture_output=True, text=True, timeout=120)
    assert p.returncode == 0 and "usage: energykit" in p.stdout
