"""The analysis notebooks execute through papermill on the bundled data and render to HTML."""

import json

import nbformat
import pytest

from energykit import report

from conftest import ROOT


def test_notebooks_committed_without_outputs():
    for nb_path in (ROOT / "notebooks").glob("*.ipynb"):
        nb = nbformat.read(nb_path, as_version=4)
        tagged = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
        assert len(tagged) == 1, nb_path.name
        assert nb.cells.index(tagged[0]) <= 2, "the parameters cell comes first among code cells"
        for c in nb.cells:
            if c.cell_type == "code":
                assert not c.outputs and not c.execution_count, nb_path.name


@pytest.mark.slow
def test_report_renders_every_notebook(tmp_path):
    timings = report.build(ROOT / "params" / "report.yaml", tmp_path)
    assert set(timings) == {p.stem for p in report.analysis_notebooks(ROOT)}
    index = (tmp_path / "index.html").read_text()
    for stem in timings:
        full = (tmp_path / f"{stem}.html").read_text()
        nocode = (tmp_path / f"{stem}.nocode.html").read_text()
        assert "data:image/png;base64" in full, stem  # figures embedded
        assert "Traceback" not in full and "Error" not in json.dumps(
            [o.get("ename") for c in nbformat.read(tmp_path / f"{stem}.ipynb", 4).cells for o in c.get("outputs", [])]
        )
        assert len(nocode) < len(full)
        assert f'href="{stem}.nocode.html"' in index
    assert "Splitwise" in index


@pytest.mark.slow
def test_measure_notebook_runs_tiny_cpu_sweep(tmp_path):
    pytest.importorskip("transformers")
    import papermill as pm

    out = tmp_path / "sweep"
    pm.execute_notebook(str(ROOT / "notebooks" / "01_measure.ipynb"), str(tmp_path / "01.ipynb"),
                        parameters={"params_file": "params/measure_cpu_tiny.yaml", "output": str(out)},
                        cwd=str(ROOT), kernel_name="python3", progress_bar=False)
    assert (out / "measurements.nc").exists() and (out / "windows.jsonl").exists()
