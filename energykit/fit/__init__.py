"""Fits of the energy models declared in :mod:`energykit.model`, one room per module.

- :mod:`~energykit.fit.estimate`: a declared model fitted on cells (IRLS, lmfit), cross-validation,
  the wild bootstrap, and the model's energy at cells.
- :mod:`~energykit.fit.result`: :class:`ModelFit` (its cells as a mapping of the declared variables,
  and what it holds ``fixed``) and :class:`FitSet`.
- :mod:`~energykit.fit.measured`: fits of a measured Dataset (per batch size, across batch sizes,
  the pricing fit, held-back validation cells).
- :mod:`~energykit.fit.store`: the versioned NetCDF fit file (:func:`load_fits`, :meth:`FitSet.save`).
- :mod:`~energykit.fit.card`: the price card of ``energykit export``.

Names here mean one thing: ``LMFIT_MODELS`` are lmfit Model classes, :data:`energykit.model.MODELS`
the declared models; ``LINEAR_THETA`` the baseline's coefficient names, :data:`energykit.model.LINEAR`
the declared baseline.
"""

from __future__ import annotations

from ..intervals import IDENTIFIED_SHARE, LEVEL, UNBOUNDED_FACTOR, around, bounded_high, identified, interval
from .card import PRICE_CARD, PRICE_CARD_VERSION, card_entry, price_card
from .estimate import (BATCH_THETA, DRAWS, LINEAR_THETA, LMFIT_MODELS, LOSSES, PER_BATCH, THETA, THETA_MEANING,
                       THETA_UNITS, BatchedModel, LinearBaselineModel, LinearEnergyModel, SweetSpotModel, ape_pct, cells_of, check_kind,
                       column_rank, cross_validate, design_matrix, design_rank, fit_cells, irls, kfold_indices,
                       leave_one_batch_out, linear_energy, mape_pct, o_star, predict_energy, r2, sweetspot_energy,
                       wild_bootstrap)
from .measured import fit_batched, fit_dataset, fit_kind, pricing_fit, validation_table
from .result import FitSet, ModelFit, SavedResult
from .store import FITS_FORMAT, FITS_VERSION, READS_VERSIONS, load_fits, save_fits

__all__ = ["THETA", "LINEAR_THETA", "BATCH_THETA", "THETA_UNITS", "THETA_MEANING", "LOSSES", "DRAWS", "LEVEL",
           "sweetspot_energy", "o_star", "linear_energy", "design_matrix", "irls", "wild_bootstrap", "interval",
           "around", "LinearEnergyModel", "SweetSpotModel", "LinearBaselineModel", "BatchedModel", "LMFIT_MODELS", "PER_BATCH",
           "check_kind", "cells_of", "column_rank", "design_rank", "fit_cells", "ape_pct", "mape_pct", "r2",
           "kfold_indices", "cross_validate", "leave_one_batch_out", "predict_energy", "ModelFit", "SavedResult",
           "FitSet", "fit_kind", "fit_dataset", "fit_batched", "pricing_fit", "validation_table", "FITS_FORMAT",
           "FITS_VERSION", "READS_VERSIONS", "load_fits", "save_fits", "IDENTIFIED_SHARE", "UNBOUNDED_FACTOR",
           "identified", "bounded_high", "PRICE_CARD", "PRICE_CARD_VERSION", "price_card", "card_entry"]
