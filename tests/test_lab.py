"""The README's first use, scripted: ``make lab`` serves (as root too), a double-click on a notebook's
``.py`` source opens it as a notebook, Run All runs every cell without an error, giving the
report's numbers, and saving writes the paired ``.ipynb`` without rewriting the tracked ``.py``. Real JupyterLab, driven in Debian's ``chromium`` by Playwright (issue #19).

Skipped where Chromium or Playwright is missing. Lab autosaves, so the test puts the notebook source
back byte for byte and removes a paired ``.ipynb`` it created.
"""

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import time

import pytest

from conftest import ROOT

pytestmark = [pytest.mark.browser, pytest.mark.slow]
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
TOKEN = "energykit-lab-test"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def lab(tmp_path):
    if not CHROMIUM:
        pytest.skip("no chromium (apt-get install chromium)")
    pytest.importorskip("playwright")
    port = _free_port()
    source = ROOT / "notebooks" / "02_fit.py"
    paired = source.with_suffix(".ipynb")
    kept, had_paired = source.read_bytes(), paired.exists()
    log = open(tmp_path / "lab.log", "w")
    proc = subprocess.Popen(["make", "lab", f"LAB_ARGS=--no-browser --port={port} --IdentityProvider.token={TOKEN} --expose-app-in-browser"],
                            cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.time() + 120
        while not re.search(rf"http://\S+:{port}/lab", (tmp_path / "lab.log").read_text()):
            assert proc.poll() is None, "make lab stopped:\n" + (tmp_path / "lab.log").read_text()[-2000:]
            assert time.time() < deadline, "make lab printed no URL in 120 s"
            time.sleep(0.5)
        yield f"http://127.0.0.1:{port}/lab?token={TOKEN}", (tmp_path / "lab.log")
    finally:
        os.killpg(proc.pid, signal.SIGTERM)  # the process group this fixture started: make and its jupyter
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
        log.close()
        source.write_bytes(kept)
        if not had_paired:
            paired.unlink(missing_ok=True)


def test_make_lab_opens_the_py_source_as_a_notebook_and_runs_all_cells(lab):
    from playwright.sync_api import sync_playwright

    import energykit.fit as ekfit
    from energykit import dataset, summary

    url, log = lab
    source, paired = ROOT / "notebooks" / "02_fit.py", ROOT / "notebooks" / "02_fit.ipynb"
    original = source.read_bytes()  # as tracked, before Lab opens it (Lab autosaves)
    if os.geteuid() == 0:
        assert "--allow-root" in log.read_text()
    ds = dataset.load_many(["data/h200_hf_energykit/measurements.nc"])
    expected = summary.fit_results(ds, ekfit.fit_dataset(ds, loss="l1", cv_folds=5))[1]["mape_pct"]
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.goto(url)
        item = page.locator(".jp-DirListing-item", has_text="02_fit.py").first
        item.wait_for(timeout=120_000)
        item.dblclick()
        # a notebook panel, not the text editor, opens on double-click (jupytext's default viewer)
        panel = page.locator(".jp-NotebookPanel").first
        panel.wait_for(timeout=120_000)
        assert page.locator(".jp-FileEditor").count() == 0
        # Lab runs with --expose-app-in-browser: the notebook's own model says what ran (cells outside the
        # viewport are not rendered, so their prompts cannot be read from the page)
        state = """() => { const w = window.jupyterapp && window.jupyterapp.shell.currentWidget;
            if (!w || !w.content || !w.content.model || !w.sessionContext) return null;
            const k = w.sessionContext.session && w.sessionContext.session.kernel;
            return {kernel: k ? k.status : 'none', nb: w.content.model.toJSON()}; }"""
        deadline = time.time() + 180
        while (page.evaluate(state) or {}).get("kernel") != "idle":
            assert time.time() < deadline, f"the kernel did not start in 180 s: {page.evaluate(state)}"
            time.sleep(1)
        page.locator(".lm-MenuBar-itemLabel", has_text=re.compile(r"^Run$")).click()
        page.locator(".lm-Menu-itemLabel", has_text=re.compile(r"^Run All Cells$")).click()
        deadline = time.time() + 900
        while True:
            code = [c for c in page.evaluate(state)["nb"]["cells"] if c["cell_type"] == "code"]
            errors = [o for c in code for o in c.get("outputs", []) if o.get("output_type") == "error"]
            assert not errors, f"{errors[0].get('ename')}: {errors[0].get('evalue')}"
            if all(c.get("execution_count") for c in code):
                break
            assert time.time() < deadline, f"cells still to run after 900 s: {[c.get('execution_count') for c in code]}"
            time.sleep(2)
        text = json.dumps([o for c in code for o in c.get("outputs", [])])
        # save as a user does: jupytext (configured by notebooks/jupytext.toml, inside Lab's root) writes the paired
        # .ipynb, and the tracked .py comes back byte for byte (it used to get another kernel name and no .ipynb)
        before = paired.stat().st_mtime if paired.exists() else 0.0
        page.locator(".jp-NotebookPanel").first.click()
        page.keyboard.press("Control+s")
        deadline = time.time() + 60
        while not (paired.exists() and paired.stat().st_mtime > before):
            assert time.time() < deadline, "saving in Lab wrote no paired 02_fit.ipynb in 60 s"
            time.sleep(0.5)
        time.sleep(1)
        assert source.read_bytes() == original, "saving in Lab rewrote the tracked notebooks/02_fit.py"
        browser.close()
    # the report's number: the key-results box opens with the same mean MAPE as the rendered report
    assert f"mean MAPE of **{expected:.2f} %**" in text
