"""What every analysis notebook does first: its display settings and its data with their fits, in one call each.

The notebooks (``notebooks/0N_*.py``) keep their ``parameters`` cell (papermill injects the report's values after
it); the cell after it calls :func:`setup`, and the pages that read fits call :func:`data_and_fits`.
"""

from __future__ import annotations

import pandas as pd
import seaborn as sns
import xarray as xr
from IPython import get_ipython

from .dataset import load_many
from .fit import FitSet, fit_dataset, load_fits

__all__ = ["setup", "data_and_fits"]


def setup() -> None:
    """The pages' display settings: seaborn's notebook theme (white grid), tables with 4 significant digits whose
    cells are read in full (they wrap, never cut with "…"), and figures inline when run in IPython."""
    sns.set_theme(context="notebook", style="whitegrid")
    pd.set_option("display.precision", 4)
    pd.set_option("display.max_colwidth", None)
    shell = get_ipython()
    if shell is not None:
        shell.run_line_magic("matplotlib", "inline")


def data_and_fits(data: list[str], fit_file: str = "", loss: str = "l1", cv_folds: int = 5) -> tuple[xr.Dataset, FitSet]:
    """The measured files ``data`` combined, and their fits: read from ``fit_file`` (stored by ``energykit fit
    --save``, or by the report build; checked against ``loss``, ``cv_folds`` and ``data``) or, when it is empty,
    fitted here."""
    ds = load_many(data)
    fits = (load_fits(fit_file, loss=loss, cv_folds=cv_folds, data=data) if fit_file
            else fit_dataset(ds, loss=loss, cv_folds=cv_folds))
    return ds, fits
