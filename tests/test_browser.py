"""The rendered reports in a real headless Chromium (Debian's ``chromium``, driven by Playwright), offline.

For every shipped report parameter set (main, paper-families pilot, probes appendix) it builds the
pages once and checks each page and the landing page: no console error or failed request, every
image loaded, formulas rendered (no raw ``$…$`` left in the visible text), no table running past the
page width or fitting it only by scrolling sideways, no table cell whose text is cut (pandas' "..."
or overflowing its cell), no two tick labels of a figure's axis overlapping (figures are embedded as
SVG with real text), no ``Out[n]:`` prompt on a page without code, formulas in a named math font
(whose radical stretches over a fraction), and the parameter set's label and the data file loaded on
every page. Skipped where Chromium or Playwright is missing (``.ci/run`` installs both).
"""

import json
import shutil

import pytest

from energykit import report
from energykit.params import load_report_params

from conftest import ROOT

pytestmark = [pytest.mark.browser, pytest.mark.slow]
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
PARAM_SETS = ["report.yaml", "report_paper_families.yaml", "report_probes.yaml"]

CUT_CELLS = """() => [...document.querySelectorAll('td, th')].filter(c => {
    const t = c.innerText.trim();
    return /(\\.\\.\\.|…)$/.test(t) || c.scrollWidth > c.clientWidth + 1;
}).slice(0, 5).map(c => c.innerText.trim().slice(-60))"""

# pairs of tick labels of one axis whose boxes intersect (matplotlib's SVG groups them per axis)
OVERLAPPING_TICKS = """() => {
    const out = [];
    for (const axis of document.querySelectorAll('svg g[id^="matplotlib.axis_"]')) {
        const boxes = [...axis.querySelectorAll('g[id^="xtick_"] text, g[id^="ytick_"] text')]
            .filter(t => t.textContent.trim()).map(t => [t.textContent.trim(), t.getBoundingClientRect()]);
        for (let a = 0; a < boxes.length; a++) for (let b = a + 1; b < boxes.length; b++) {
            const [ta, p] = boxes[a], [tb, q] = boxes[b];
            const w = Math.min(p.right, q.right) - Math.max(p.left, q.left);
            const h = Math.min(p.bottom, q.bottom) - Math.max(p.top, q.top);
            if (w > 0.5 && h > 0.5) out.push(ta + ' / ' + tb);
        }
    }
    return out.slice(0, 5);
}"""


@pytest.fixture(scope="module", params=PARAM_SETS)
def built(request, tmp_path_factory):
    if not CHROMIUM:
        pytest.skip("no chromium (apt-get install chromium)")
    pytest.importorskip("playwright")
    out = tmp_path_factory.mktemp(request.param.removesuffix(".yaml"))
    report.build(ROOT / "params" / request.param, out, rendered_by=f"test_browser {request.param}")
    return request.param, out


def test_pages_render_offline_and_readable_in_chromium(built):
    from playwright.sync_api import sync_playwright

    params_name, out = built
    params = load_report_params(ROOT / "params" / params_name)
    info = json.loads((out / report.BUILD_FILE).read_text())
    assert info["label"] == params.label and info["data"] == params.data
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
            page.goto((out / f"{name}.html").as_uri())
            page.wait_for_load_state("load")
            broken = page.evaluate("() => [...document.images].filter(i => !i.complete || i.naturalWidth === 0).length")
            raw_math = page.evaluate("() => (document.body.innerText.match(/\\$[^$\\n]{1,80}\\$/g) || []).slice(0, 3)")
            wide = page.evaluate("() => [...document.querySelectorAll('table')]"
                                 ".filter(t => t.getBoundingClientRect().right > window.innerWidth + 1).length")
            # a table that only fits by scrolling sideways hides its right-hand columns from the reader
            scrolled = page.evaluate("() => [...document.querySelectorAll('table')]"
                                     ".filter(t => t.scrollWidth > t.clientWidth + 1).length")
            cut = page.evaluate(CUT_CELLS)
            ticks = page.evaluate(OVERLAPPING_TICKS)
            text = page.evaluate("() => document.body.innerText")
            prompts = page.evaluate("() => [...document.querySelectorAll('.jp-OutputPrompt, .jp-InputPrompt')]"
                                    ".filter(e => e.innerText.trim()).length") if name.endswith(".nocode") else 0
            missing = [w for w in [params.label] + params.data if w not in text]
            # formulas name fonts with a MATH table: under the bare generic 'math' Chromium drew a radical that did not
            # stretch, so o*(i) = sqrt((a)/θ4) read as sqrt(a)/θ4
            generic_math = page.evaluate("() => [...document.querySelectorAll('math')]"
                                         ".filter(m => !getComputedStyle(m).fontFamily.includes('Math\"')).length")
            if errors or broken or raw_math or wide or scrolled or cut or ticks or prompts or missing or generic_math:
                problems.append(f"{params_name} {name}: errors {errors[:2]}, broken images {broken}, raw math {raw_math}, "
                                f"tables past the page {wide}, tables scrolling sideways {scrolled}, cut cells {cut}, "
                                f"overlapping tick labels {ticks}, Out/In prompts {prompts}, provenance missing {missing}, "
                                f"formulas in the generic math font {generic_math}")
            if name == "index":  # the first screen answers "what was reproduced, how close"
                first = browser.new_page(viewport={"width": 1280, "height": 800})
                first.goto((out / "index.html").as_uri())
                box = first.evaluate("""() => { const t = document.querySelector('table.findings');
                    if (!t) return null; const r = t.getBoundingClientRect();
                    return {bottom: r.bottom, right: r.right, rows: t.tBodies[0].rows.length,
                            text: t.innerText}; }""")
                first.close()
                assert box, f"{params_name}: the landing page has no table of the paper's findings"
                assert box["bottom"] <= 800 and box["right"] <= 1280, \
                    f"{params_name}: the paper-vs-kit table does not fit the first screen (1280x800): {box}"
                assert box["rows"] == 4 and all(w in box["text"] for w in ("1.79 %", "33.41x", "GQA above MHA")), box
                assert all(any(v in row for v in ("reproduced", "differs", "not yet", "kit only"))
                           for row in box["text"].splitlines()[1:] if row.strip()), box["text"]
            if name.startswith("02_fit"):
                assert page.evaluate("() => document.querySelectorAll('math').length") > 5, "formulas render as MathML"
            if name != "index":
                assert page.evaluate("() => document.querySelectorAll('svg g[id^=\"matplotlib.axis_\"]').length") > 0, \
                    f"{name}: figures are embedded as SVG with text (the tick check reads them)"
            page.close()
        browser.close()
    assert not problems, "\n".join(problems)


def test_the_checks_catch_cut_cells_and_overlapping_ticks(tmp_path):
    """The two page checks above fail on a page that has the faults (crowded ticks, pandas' "...")."""
    import base64
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from playwright.sync_api import sync_playwright

    if not CHROMIUM:
        pytest.skip("no chromium (apt-get install chromium)")
    plt.rcParams["svg.fonttype"] = "none"
    fig, ax = plt.subplots(figsize=(2, 2))
    ax.plot(range(40))
    ax.set_xticks(range(40), [f"label {k}" for k in range(40)])  # forty labels on two inches
    buf = io.BytesIO()
    fig.savefig(buf, format="svg")
    plt.close(fig)
    img = f'<img src="data:image/svg+xml;base64,{base64.b64encode(buf.getvalue()).decode()}">'
    page_html = report.inline_svg(f"<html><body>{img}<table><tr><td>prompt content past the li...</td></tr>"
                                  "</table></body></html>")
    (tmp_path / "bad.html").write_text(page_html)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        page = browser.new_page()
        page.goto((tmp_path / "bad.html").as_uri())
        assert page.evaluate(OVERLAPPING_TICKS)
        assert page.evaluate(CUT_CELLS) == ["prompt content past the li..."]
        browser.close()
