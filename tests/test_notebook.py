"""energykit.notebook: the one call each analysis notebook makes first (display settings; data and their fits)."""

import pandas as pd
import pytest

from conftest import ROOT


def test_setup_sets_the_pages_display_settings_outside_ipython():
    import matplotlib

    from energykit import notebook

    with pd.option_context("display.precision", 6, "display.max_colwidth", 50), matplotlib.rc_context():
        notebook.setup()  # no IPython shell here: no magic, no error
        assert pd.get_option("display.precision") == 4 and pd.get_option("display.max_colwidth") is None
        assert matplotlib.rcParams["axes.facecolor"] == "white" and matplotlib.rcParams["axes.grid"]


def test_every_analysis_notebook_calls_setup_and_none_repeats_the_preamble():
    for path in sorted((ROOT / "notebooks").glob("0[2-9]_*.py")):
        text = path.read_text()
        assert "notebook.setup()" in text, path.name
        assert "sns.set_theme(" not in text and "display.max_colwidth" not in text, path.name
        assert "fitting.load_fits(fit_file" not in text, path.name  # notebook.data_and_fits reads it


def test_a_missing_fit_file_is_one_line_naming_it(tmp_path):
    from energykit import notebook
    from energykit.errors import EnergykitError

    data = [str(ROOT / "data" / "h200_transformers_compiled_b16.csv")]
    with pytest.raises(EnergykitError, match="nope.nc") as err:
        notebook.data_and_fits(data, str(tmp_path / "nope.nc"))
    assert "\n" not in str(err.value)


def test_the_report_defaults_have_one_home():
    """ReportParams' own defaults (the knobs a set may leave out) equal the default set's values, as the notebooks'
    parameters cells do (tests/test_notebooks.py): a set that leaves a knob out gets what the notebooks show."""
    import yaml

    from energykit.params import DEFAULT_PARAMS, ReportParams

    given = yaml.safe_load((ROOT / DEFAULT_PARAMS).read_text())
    knobs = {k: f.default for k, f in ReportParams.model_fields.items() if not f.is_required() and f.default not in
             ("", None) and f.default_factory is None}
    assert {"loss", "cv_folds", "sweet_pct", "replay_requests", "replay_window_s"} <= set(knobs)
    assert {k: given[k] for k in knobs} == knobs
