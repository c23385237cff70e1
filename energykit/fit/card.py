"""The price card of ``energykit export``: the pricing fit of each model as JSON, read by ``energykit/price.py``.

Version 2 gives each entry ``fixed``, what its fit holds constant (``{"batch_size": 16}`` for the
analytical model at one batch size, ``{}`` for the batch-aware fit), and ``variables`` carries
every declared variable the model takes (:data:`energykit.model.VARIABLES`), so a variable
declared in ``model.py`` is priced with no other file listing it. ``price.py`` reads version 1 too.
"""

from __future__ import annotations

from typing import Iterable

import numpy as np
import xarray as xr

from .. import __version__
from ..dataset import model_names, model_value
from ..intervals import LEVEL
from ..model import VARIABLES
from .estimate import DRAWS
from .measured import pricing_fit

__all__ = ["PRICE_CARD", "PRICE_CARD_VERSION", "price_card", "card_entry"]

PRICE_CARD = "energykit-price-card"
PRICE_CARD_VERSION = 2
"""Schema version of the price card (:func:`price_card`); ``energykit/price.py`` reads 1 and 2."""


def card_entry(f, ds: xr.Dataset, n_draws: int = DRAWS) -> dict:
    """The card's entry of one fit: declared terms, coefficients, draws, what it holds fixed, ranges."""
    em = f.energy_model
    draws = f.draws(n_draws)
    ranged = list(em.variables) + [v for v in f.fixed if v not in em.variables]
    return {
        "model": f.model,
        "gpu": str(model_value(ds, f.model, "gpu", "")),
        "engine": str(model_value(ds, f.model, "engine", "")),
        "dtype": str(model_value(ds, f.model, "dtype", "")),
        "kind": em.kind,
        "description": em.description,
        "formula": em.formula,
        "variables": {v: {"symbol": VARIABLES[v].symbol, "unit": VARIABLES[v].unit, "meaning": VARIABLES[v].meaning}
                      for v in em.variables},
        "fixed": dict(f.fixed),
        "terms": [{"name": t.name, "factors": list(t.factors), "unit": t.unit, "meaning": t.meaning}
                  for t in em.terms],
        "coefficients": f.params,
        "stderr": {k: (None if not np.isfinite(v) else v) for k, v in f.stderr.items()},
        "draws": {k: [float(x) for x in v[:, 0]] for k, v in draws.items()},
        "batch_sizes": f.batch_sizes,
        "ranges": {v: [float(np.min(x)), float(np.max(x))] for v in ranged for x in [f.cell_values(v)]},
        "cells": int(len(f.energy_j)),
        "mape_pct": f.mape_pct,
        "cv_mape_pct": None if not np.isfinite(f.cv_mape_pct) else f.cv_mape_pct,
    }


def price_card(ds: xr.Dataset, models: Iterable[str] | None = None, loss: str = "l1", n_draws: int = DRAWS,
               source: Iterable[str] = (), kind: str | None = None) -> dict:
    """The price card of ``energykit export``: per model/GPU/engine the declared terms, fitted
    coefficients with standard errors and ``n_draws`` bootstrap draws, what the fit holds fixed, the
    ranges measured and the units; read it with ``energykit/price.py`` (standard library only).
    ``kind`` prices with another declared model (default: :func:`~energykit.fit.pricing_fit`'s choice)."""
    entries = [card_entry(pricing_fit(ds, m, loss, kind=kind), ds, n_draws)
               for m in (list(models) if models is not None else model_names(ds))]
    units = {v: VARIABLES[v].unit for v in VARIABLES if any(v in e["variables"] or v in e["fixed"] for e in entries)}
    return {"schema": PRICE_CARD, "schema_version": PRICE_CARD_VERSION, "energykit_version": __version__,
            "source": [str(s) for s in source], "loss": loss, "level": LEVEL, "quantile": "inverted_cdf",
            "units": {"energy": "J per batch of batch_size requests (price() divides by the batch: J per request)",
                      **units},
            "models": entries}
