"""The rendered reports in a real headless Chromium (Debian's ``chromium``, driven by Playwright), offline.

Checks each page and the landing page: no console error or failed request, every image loaded,
formulas rendered (no raw ``$…$`` left in the visible text), and no table running past the page
width or fitting it only by scrolling sideways. Skipped where Chromium or Playwright is missing (``.ci/run`` installs both).
"""

import shutil

import pytest

from energykit import report

from conftest import ROOT

pytestmark = [pytest.mark.browser, pytest.mark.slow]
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    if not CHROMIUM:
        pytest.skip("no chromium (apt-get install chromium)")
    pytest.importorskip("playwright")
    out = tmp_path_factory.mktemp("reports")
    report.build(ROOT / "params" / "report.yaml", out)
    return out


def test_pages_render_offline_in_chromium(built):
    from playwright.sync_api import sync_playwright

    pages = ["index"] + [f"{p.stem}{suffix}" for p in report.analysis_notebooks(ROOT) for suffix in ("", ".nocode")]
    problems = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        context = browser.new_context(offline=True, viewport={"width": 1280, "height": 900})
        for name in pages:
            page = context.new_page()
            errors = []
            page.on("console", lambda m, errors=errors: errors.append(m.text) if m.type == "error" else None)
            page.on("requestfailed", lambda r, errors=errors: errors.append(f"request failed: {r.url}"))
            page.goto((built / f"{name}.html").as_uri())
            page.wait_for_load_state("load")
            broken = page.evaluate("() => [...document.images].filter(i => !i.complete || i.naturalWidth === 0).length")
            raw_math = page.evaluate("() => (document.body.innerText.match(/\\$[^$\\n]{1,80}\\$/g) || []).slice(0, 3)")
            wide = page.evaluate("() => [...document.querySelectorAll('table')]"
                                 ".filter(t => t.getBoundingClientRect().right > window.innerWidth + 1).length")
            # a table that only fits by scrolling sideways hides its right-hand columns from the reader
            scrolled = page.evaluate("() => [...document.querySelectorAll('table')]"
                                     ".filter(t => t.scrollWidth > t.clientWidth + 1).length")
            mathml = page.evaluate("() => document.querySelectorAll('math').length")
            if errors or broken or raw_math or wide or scrolled:
                problems.append(f"{name}: errors {errors[:2]}, broken images {broken}, raw math {raw_math}, "
                                f"tables past the page {wide}, tables scrolling sideways {scrolled}")
            if name.startswith("02_fit"):
                assert mathml > 5, "the model's formulas render as MathML"
            page.close()
        browser.close()
    assert not problems, "\n".join(problems)
