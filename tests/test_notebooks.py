"""The analysis notebooks execute through papermill on the bundled data and render to HTML."""

import html
import json
import re

import nbformat
import pytest

import energykit.fit as ekfit
from energykit import report
from energykit.params import load_report_params

from conftest import ROOT


def test_notebook_sources_are_jupytext_scripts_with_one_parameters_cell():
    sources = sorted((ROOT / "notebooks").glob("*.py"))
    assert [p.stem for p in sources] == ["01_measure", "02_fit", "03_sweetspots", "04_workloads", "05_planning", "06_batching", "07_replay"]
    for path in sources:
        nb = report.read_source(path)
        tagged = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
        assert len(tagged) == 1, path.name
        code = [c for c in nb.cells if c.cell_type == "code"]
        assert code[0] is tagged[0], "the parameters cell comes first among code cells"
        assert report.description(path), f"{path.name} lacks energykit.description in its header"


def test_notebook_defaults_equal_the_report_params():
    """Stepping through a notebook in JupyterLab reproduces the report."""
    import yaml

    params = yaml.safe_load((ROOT / "params" / "report.yaml").read_text())
    for path in report.analysis_notebooks(ROOT):
        defaults = report.notebook_defaults(path)
        assert defaults, path.name
        for key, value in defaults.items():
            assert key in params and params[key] == value, f"{path.name}: {key} = {value!r}, report.yaml: {params.get(key)!r}"


def test_no_notebook_is_tracked_as_ipynb():
    import subprocess

    tracked = subprocess.run(["git", "ls-files", "notebooks/*.ipynb"], capture_output=True, text=True, cwd=ROOT)
    assert tracked.returncode != 0 or tracked.stdout.strip() == ""


def test_editing_a_source_changes_what_the_report_executes(tmp_path):
    import shutil

    src = tmp_path / "notebooks"
    src.mkdir()
    path = src / "02_fit.py"
    shutil.copy(ROOT / "notebooks" / "02_fit.py", path)
    path.write_text(path.read_text().replace("# # Fitting the SweetSpot energy model", "# # Fitting, edited"))
    assert report.read_source(path).cells[0].source.startswith("# Fitting, edited")


INTERVAL = re.compile(r"(-?[\d.]+(?:e[+-]?\d+)?) \[(-?[\d.]+(?:e[+-]?\d+)?), (-?[\d.]+(?:e[+-]?\d+)?|unbounded)\]")
LARGEST = 1e10
"""No reported number may exceed this: 1e6 times the largest quantity of the bundled data (~1e4 J)."""


def check_reported_numbers(page: str, name: str) -> None:
    """Every ``est [low, high]`` holds its estimate; no table cell is infinite, NaN-as-text or absurd."""
    cells = [html.unescape(re.sub(r"<[^>]+>", "", c)).strip() for c in re.findall(r"<td[^>]*>(.*?)</td>", page, re.S)]
    assert cells, name
    for text in cells:
        for est, lo, hi in INTERVAL.findall(text):
            assert float(lo) <= float(est) and (hi == "unbounded" or float(est) <= float(hi)), f"{name}: {text}"
        assert not re.search(r"\b(inf|-inf|nan|NaN|Infinity)\b", text), f"{name}: {text}"
        for number in re.findall(r"-?\d+(?:\.\d+)?(?:e[+-]?\d+)?", text):
            assert abs(float(number)) <= LARGEST, f"{name}: {text}"
    headers = re.findall(r"<th[^>]*>(.*?)</th>", page, re.S)
    assert not [h for h in headers if h.strip().endswith(("_low", "_high", "ci_low", "ci_high"))], name


def test_reported_number_check_catches_what_misleads():
    good = "<td>4.79 [4.79, 6.7]</td><td>0 [0, unbounded]</td><td>n/a</td><th>x [95 %]</th>"
    check_reported_numbers(good, "good")
    for bad in ("<td>4.79 [5.1, 6.7]</td>", "<td>inf</td>", "<td>3.4 [3.4, 1.02e+15]</td>", "<td>1</td><th>x_low</th>"):
        with pytest.raises(AssertionError):
            check_reported_numbers(bad, "bad")


@pytest.mark.slow
def test_report_renders_every_notebook(tmp_path):
    timings = report.build(ROOT / "params" / "report.yaml", tmp_path)
    assert set(timings) == {"fit"} | {p.stem for p in report.analysis_notebooks(ROOT)}
    del timings["fit"]
    index = (tmp_path / "index.html").read_text()
    # fitted once: the stored fits sit beside the pages, and every page that fits was handed them
    fits = ekfit.load_fits(tmp_path / report.FIT_FILE, loss="l1", cv_folds=5,
                             data=["data/h200_hf_energykit/measurements.nc"])
    assert fits.keys
    for stem in ("02_fit", "03_sweetspots", "04_workloads"):
        injected = next(c for c in nbformat.read(tmp_path / f"{stem}.ipynb", 4).cells
                        if "injected-parameters" in c.metadata.get("tags", []))
        assert "fit_file = " in injected.source and report.FIT_FILE in injected.source, stem
    for stem in timings:
        check_reported_numbers((tmp_path / f"{stem}.nocode.html").read_text(), stem)
        full = (tmp_path / f"{stem}.html").read_text()
        nocode = (tmp_path / f"{stem}.nocode.html").read_text()
        assert "data:image/png;base64" in full, stem  # figures embedded
        assert "Traceback" not in full and "Error" not in json.dumps(
            [o.get("ename") for c in nbformat.read(tmp_path / f"{stem}.ipynb", 4).cells for o in c.get("outputs", [])]
        )
        assert len(nocode) < len(full)
        assert f'href="{stem}.nocode.html"' in index
    assert "Splitwise" in index
    # token lengths print as integers (the line read 'measured inputs 64.0–4096.0')
    assert "measured inputs 64–4096, outputs 16–1024 tokens" in (tmp_path / "04_workloads.nocode.html").read_text()


@pytest.mark.slow
def test_measure_notebook_runs_tiny_cpu_sweep(tmp_path):
    pytest.importorskip("transformers")
    import papermill as pm

    out = tmp_path / "sweep"
    nbformat.write(report.read_source(ROOT / "notebooks" / "01_measure.py"), tmp_path / "01_in.ipynb")
    pm.execute_notebook(str(tmp_path / "01_in.ipynb"), str(tmp_path / "01.ipynb"),
                        parameters={"params_file": "params/measure_cpu_tiny.yaml", "output": str(out)},
                        cwd=str(ROOT), kernel_name="python3", progress_bar=False)
    assert (out / "measurements.nc").exists() and (out / "windows.jsonl").exists()


@pytest.mark.slow
def test_failing_notebook_is_one_line_and_replaces_no_report(tmp_path):
    import subprocess
    import sys

    import pandas as pd
    import yaml

    df = pd.read_csv(ROOT / "data" / "h200_transformers_compiled_b16.csv")
    df[["model", "batch_size", "input_len", "output_len", "repeat", "energy_j", "duration_s"]].to_csv(
        tmp_path / "nogeom.csv", index=False)  # 05_planning cannot calibrate without geometry
    params = yaml.safe_load((ROOT / "params" / "report.yaml").read_text())
    params["calibrate_data"] = str(tmp_path / "nogeom.csv")
    (tmp_path / "p.yaml").write_text(yaml.safe_dump(params))
    out = tmp_path / "reports"
    out.mkdir()
    (out / "05_planning.html").write_text("the previous report")
    (out / "index.html").write_text("the previous index")  # a finished build, by the marker the kit writes
    (out / report.BUILD_FILE).write_text(json.dumps({"format": report.REPORT_FORMAT}))
    p = subprocess.run([sys.executable, "-m", "energykit", "report", "--params", str(tmp_path / "p.yaml"),
                        "--out", str(out), "--only", "05_planning"], capture_output=True, text=True, cwd=ROOT,
                       timeout=3600)
    assert p.returncode == 2 and "Traceback" not in p.stderr
    errors = [line for line in p.stderr.splitlines() if line.startswith("energykit: error:")]
    assert len(errors) == 1 and "05_planning.py failed" in errors[0], p.stderr[-1000:]
    assert (out / "05_planning.html").read_text() == "the previous report"
    assert [x.name for x in tmp_path.iterdir() if ".building" in x.name or ".old" in x.name] == []


def test_bad_workload_model_stops_before_any_notebook(tmp_path):
    import yaml

    from energykit.errors import ParamsError

    params = yaml.safe_load((ROOT / "params" / "report.yaml").read_text())
    params["workload_model"] = "no-such-model"
    (tmp_path / "p.yaml").write_text(yaml.safe_dump(params))
    with pytest.raises(ParamsError, match="workload_model 'no-such-model' is not in the data"):
        report.build(tmp_path / "p.yaml", tmp_path / "reports")
    assert not (tmp_path / "reports").exists()


@pytest.mark.parametrize("path", sorted((ROOT / "params").glob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_parameter_file_validates_and_names_files_that_exist(path):
    from energykit.params import load_measure_params, load_report_params

    if path.name.startswith("report"):
        p = load_report_params(path)
        for f in p.data + list(p.traces.values()) + [p.calibrate_data]:
            assert (ROOT / f).is_file(), f"{path.name}: {f}"
    else:
        assert load_measure_params(path).grid


@pytest.mark.slow
def test_a_given_fit_file_is_checked_and_read_by_the_pages(tmp_path):
    import yaml

    from energykit import dataset
    from energykit.errors import FitError

    params = yaml.safe_load((ROOT / "params" / "report.yaml").read_text())
    fits = ekfit.fit_dataset(dataset.load_many([ROOT / f for f in params["data"]]))
    fits.save(tmp_path / "mine.nc", source={"data": params["data"]})
    (tmp_path / "p.yaml").write_text(yaml.safe_dump({**params, "fit_file": str(tmp_path / "mine.nc")}))
    report.build(tmp_path / "p.yaml", tmp_path / "out", only=["02_fit"])
    assert (tmp_path / "out" / report.FIT_FILE).read_bytes() == (tmp_path / "mine.nc").read_bytes()
    (tmp_path / "q.yaml").write_text(yaml.safe_dump({**params, "loss": "l2", "fit_file": str(tmp_path / "mine.nc")}))
    with pytest.raises(FitError, match="fitted with loss=l1, not l2"):
        report.build(tmp_path / "q.yaml", tmp_path / "out2", only=["02_fit"])
    assert not (tmp_path / "out2").exists()


@pytest.mark.slow
def test_probe_pages_name_the_file_that_calibrated_them(tmp_path):
    """The probes set calibrates its hardware model on another file than the probes it loads: 05 and 06 name it
    (06's key-results box said only 'simulated', beside the probe files, with the kit's H200 numbers)."""
    report.build(ROOT / "params" / "report_probes.yaml", tmp_path)
    calibration = load_report_params(ROOT / "params" / "report_probes.yaml").calibrate_data
    assert calibration not in load_report_params(ROOT / "params" / "report_probes.yaml").data
    for stem in ("05_planning", "06_batching"):
        assert calibration in (tmp_path / f"{stem}.nocode.html").read_text(), stem
    box = (tmp_path / "06_batching.nocode.html").read_text().split("Key results", 1)[1].split("<h2", 1)[0]
    assert f"calibrated on <code>{calibration}</code>" in box


@pytest.mark.slow
def test_a_rendered_notebook_reruns_from_another_folder(tmp_path):
    """A shared report re-runs: the rendered notebook names the fits beside it, not the build's staging folder
    (it named reports/.report.building-PID/fits.nc, gone after the build, and failed with FitError)."""
    import os
    import shutil

    stem = f"test_rerun_{os.getpid()}"
    out = ROOT / "reports" / stem
    try:
        report.build(ROOT / "params" / "report.yaml", out, only=["02_fit"])
        injected = next(c for c in nbformat.read(out / "02_fit.ipynb", 4).cells
                        if "injected-parameters" in c.metadata.get("tags", []))
        # relative to the repository root (iotools.resolve finds it from any folder), the file beside the notebook
        assert f'fit_file = "reports/{stem}/{report.FIT_FILE}"' in injected.source
        assert ".building" not in (out / "02_fit.html").read_text()
        shared = tmp_path / "shared"  # the rendered folder as shared, executed from yet another folder
        shutil.copytree(out, shared)
        elsewhere = tmp_path / "elsewhere"
        elsewhere.mkdir()
        _rerun(out / "02_fit.ipynb", elsewhere)
        shutil.rmtree(out)  # a reader's copy of the folder: the fits beside the notebook, the repository's gone
        _rerun(shared / "02_fit.ipynb", elsewhere)
    finally:
        shutil.rmtree(out, ignore_errors=True)


def _rerun(notebook, elsewhere):
    import os
    import subprocess
    import sys

    p = subprocess.run([sys.executable, "-m", "jupyter", "nbconvert", "--to", "notebook", "--execute",
                        str(notebook), "--output-dir", str(elsewhere), "--output", "rerun"],
                       cwd=elsewhere, capture_output=True, text=True, timeout=600,
                       env={**os.environ, "PYTHONPATH": ""})
    assert p.returncode == 0, p.stderr[-2000:]
    rerun = nbformat.read(elsewhere / "rerun.ipynb", 4)
    assert not [o for c in rerun.cells for o in c.get("outputs", []) if o.get("output_type") == "error"]


@pytest.mark.slow
def test_make_report_rebuilds_when_data_named_outside_data_changes(tmp_path):
    """The stale-data case: params naming a file outside data/ (make's own times never see it). The build records
    every named file's SHA-256; make asks ``report --check-stale`` and rebuilds when one changed."""
    import os
    import shutil
    import subprocess

    from energykit.params import stale_reasons

    data = tmp_path / "elsewhere.csv"
    shutil.copy(ROOT / "data" / "h200_transformers_compiled_b16.csv", data)
    stem = f"test_stale_{os.getpid()}"
    params = tmp_path / f"{stem}.yaml"
    params.write_text(f"label: stale-data test\ndata:\n  - {data}\n")
    out = ROOT / "reports" / stem
    stamp = ROOT / "reports" / f".{stem}.inputs"
    try:
        report.build(params, out, only=["02_fit"])
        assert stale_reasons(params, out, ROOT) == []

        def make_would_build() -> bool:
            p = subprocess.run(["make", "-n", "report", f"PARAMS={params}"], cwd=ROOT, capture_output=True, text=True,
                               timeout=300)
            assert p.returncode == 0, p.stderr
            return f"energykit report --params {params} --out reports/{stem} --rendered-by" in p.stdout

        assert not make_would_build()
        with open(data, "a") as f:  # one more window: the fit, and every page, would change
            f.write(open(data).read().splitlines()[1].replace(",0,", ",9,", 1) + "\n")
        assert stale_reasons(params, out, ROOT) == [f"{data} changed since the last build"]
        assert make_would_build()
    finally:
        shutil.rmtree(out, ignore_errors=True)
        stamp.unlink(missing_ok=True)


def test_check_stale_names_what_changed_and_exits_1(tmp_path):
    """``energykit report --check-stale``: exit 0 when nothing the params name changed, else 1 and why."""
    import json

    from energykit.cli import main
    from energykit.params import BUILD_FILE, input_hashes, stale_reasons

    data = tmp_path / "d.csv"
    data.write_text("x\n")
    params = tmp_path / "p.yaml"
    params.write_text(f"data:\n  - {data}\n")
    out = tmp_path / "out"
    assert stale_reasons(params, out, ROOT) == [f"{out} holds no build yet"]
    out.mkdir()
    (out / BUILD_FILE).write_text(json.dumps({"inputs": input_hashes(params, load_report_params(params), ROOT)}))
    assert stale_reasons(params, out, ROOT) == []
    assert main(["report", "--params", str(params), "--out", str(out), "--check-stale"]) == 0
    data.write_text("y\n")
    assert main(["report", "--params", str(params), "--out", str(out), "--check-stale"]) == 1
    params.write_text(f"data:\n  - {data}\nsweet_pct: 5\n")
    assert set(stale_reasons(params, out, ROOT)) == {f"{params} changed since the last build",
                                                     f"{data} changed since the last build"}
    (out / BUILD_FILE).write_text(json.dumps({"params": "old build"}))
    assert "records no input hashes" in stale_reasons(params, out, ROOT)[0]


def _lab_save(notebooks, name: str) -> None:
    """Open and save a notebook as JupyterLab does: jupytext's contents manager rooted at ``notebooks/`` (make lab's
    root), the kernelspec of the kernel Lab starts (ipykernel's kernel.json) written into the model."""
    from jupyter_client.kernelspec import KernelSpecManager
    from jupyter_core.utils import run_sync
    from jupytext.async_contentsmanager import AsyncTextFileContentsManager  # what Lab's server runs (jupytext 1.19)

    cm = AsyncTextFileContentsManager(root_dir=str(notebooks))
    model = run_sync(cm.get)(name, content=True)
    spec = KernelSpecManager().get_kernel_spec("python3")
    model["content"]["metadata"]["kernelspec"] = {"display_name": spec.display_name, "language": spec.language,
                                                  "name": "python3"}
    run_sync(cm.save)(model, name)


def test_lab_pairs_a_notebook_and_saving_rewrites_no_tracked_source(tmp_path):
    """Lab's root is notebooks/: jupytext finds its configuration there (it never looks above Lab's root), so saving
    02_fit.py writes the paired .ipynb, and the .py comes back byte for byte (the kernel's name included)."""
    import shutil

    notebooks = tmp_path / "notebooks"
    shutil.copytree(ROOT / "notebooks", notebooks, ignore=shutil.ignore_patterns("*.ipynb", ".ipynb_checkpoints"))
    for path in sorted((ROOT / "notebooks").glob("0*.py")):
        _lab_save(notebooks, path.name)
        assert (notebooks / path.name).read_bytes() == path.read_bytes(), f"saving rewrote {path.name}"
        assert (notebooks / path.with_suffix(".ipynb").name).is_file(), f"saving {path.name} paired no .ipynb"
    # the old layout (the configuration at the repository root, above Lab's root) paired nothing
    (notebooks / "jupytext.toml").unlink()
    for p in notebooks.glob("*.ipynb"):
        p.unlink()
    _lab_save(notebooks, "02_fit.py")
    assert not (notebooks / "02_fit.ipynb").exists()
