"""Hardware-level energy model: θ from a few GPU/engine coefficients and the model's geometry.

Every θ of the analytical model is a product of an architecture count and a hardware or engine
coefficient (the SweetSpot derivation, arXiv:2602.05695). Writing the energy of a request batch as

.. math::

    E = c_\\mathrm{pf} F_\\mathrm{prefill} + c_\\mathrm{df} F_\\mathrm{decode}
        + c_\\mathrm{w} \\mathrm{Bytes}_\\mathrm{weights} + c_\\mathrm{kv} \\mathrm{Bytes}_\\mathrm{KV}
        + c_\\mathrm{step} L o + c_0

with FLOPs and bytes from :mod:`energykit.physics`, the coefficients are energy per FLOP in
prefill and in decode [J/FLOP], energy per byte of weights and of KV cache read or written [J/B],
a per-layer per-step overhead [J] (kernel launches, synchronisation, and static power over the
time they take) and a fixed cost per request batch [J]. Static power times a roofline-style time is
absorbed: each phase's time is proportional to its FLOPs (compute-bound prefill) or bytes
(memory-bound decode), so static power adds to the per-FLOP and per-byte coefficients.

The coefficients are fitted (non-negative, relative error) on the cells of one or more measured
models that share a GPU and engine, and then predict another model's energy from its geometry
alone. Because every feature is a polynomial of degree ≤ 2 in (i, o), the prediction has exactly
the SweetSpot form, so θ, ``o*(i)`` and sweet spots follow for an unmeasured model.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import xarray as xr

from .dataset import geometry, measured_cells, model_names, model_value
from .errors import FitError
from .fit import ape_pct, column_rank, irls, wild_bootstrap
from .intervals import LEVEL, estimate_interval, identified
from .model import SWEETSPOT, tokens_per_j
from .physics import cell_work
from .schema import GEOMETRY_KEYS

__all__ = ["COEFFICIENTS", "NEEDED", "features", "HardwareModel", "each_draw", "SIMULATED", "simulate", "calibrate", "leave_one_model_out",
           "coefficient_table", "theta_interval_table", "prediction_table", "transfer_error_pct",
           "with_transfer_error"]

COEFFICIENTS = ("prefill_j_per_flop", "decode_j_per_flop", "weight_j_per_byte", "kv_j_per_byte",
                "step_j_per_layer", "request_j")
NEEDED = tuple(k for k in GEOMETRY_KEYS if k not in ("arch", "ffn_gated", "tied_embeddings"))
"""Geometry columns the calibration needs as coordinates of the data."""


def features(geom: dict, batch_size, input_len, output_len, dtype: str = "bfloat16") -> np.ndarray:
    """Feature matrix (n, 6) of :data:`COEFFICIENTS` for cells of one model."""
    i = np.atleast_1d(np.asarray(input_len, dtype=float))
    o = np.atleast_1d(np.asarray(output_len, dtype=float))
    w = cell_work(geom, batch_size, i, o, dtype)
    return np.column_stack([
        w["prefill_flops"], w["decode_flops"], w["weight_bytes"], w["kv_read_bytes"] + w["kv_write_bytes"],
        float(geom["num_layers"]) * o, np.ones_like(i),
    ])


def _dtype(ds: xr.Dataset, model: str) -> str:
    d = str(model_value(ds, model, "dtype", ds.attrs.get("dtype", "bfloat16")))
    return {"bf16": "bfloat16", "fp16": "float16", "fp32": "float32"}.get(d, d if d in
                                                                           ("bfloat16", "float16", "float32") else "bfloat16")


def _cells(ds: xr.Dataset, model: str) -> pd.DataFrame:
    return measured_cells(ds, model)


@dataclass
class HardwareModel:
    """Calibrated coefficients; predicts energy and θ for any geometry."""

    coef: dict
    calibrated_on: list
    loss: str
    gpu: str = ""
    engine: str = ""
    _X: np.ndarray = field(default=None, repr=False)
    _E: np.ndarray = field(default=None, repr=False)
    _draws: dict = field(default_factory=dict, repr=False)

    @property
    def rank(self) -> int:
        """Rank of the calibration's feature matrix (columns scaled); below 6 some coefficients are not identified."""
        return column_rank(self._X)

    @property
    def full_rank(self) -> bool:
        """True when the calibration cells identify every coefficient (one model alone never does)."""
        return self.rank == len(COEFFICIENTS)

    @property
    def params(self) -> dict[str, float]:
        """The calibrated coefficients by name (the result protocol shared with :class:`~energykit.fit.ModelFit`)."""
        return dict(self.coef)

    def identified(self, n: int = 200) -> dict[str, bool]:
        """Whether the calibration identifies each coefficient: off its ≥ 0 bound in the fit and in most
        draws (the rule of :func:`energykit.fit.identified`, as for :meth:`ModelFit.identified`)."""
        d = self.draws(n)
        return {k: identified(self.coef[k], d[k][:, 0]) for k in COEFFICIENTS}

    def unidentified(self, n: int = 200) -> list[str]:
        """The coefficients :meth:`identified` calls not identified, in order (what the 05 page and
        ``energykit predict --json`` list)."""
        return [k for k, ok in self.identified(n).items() if not ok]

    def all_identified(self, n: int = 200) -> bool:
        """Full design rank and every coefficient identified: the one rule of ``predict --json``'s
        ``identified`` and of the 05 page's warning."""
        return self.full_rank and not self.unidentified(n)

    def predict(self, geom: dict, batch_size, input_len, output_len, dtype="bfloat16", coef=None):
        """Energy of one request batch [J] for a geometry at the given lengths."""
        c = np.array([(coef or self.coef)[k] for k in COEFFICIENTS])
        return features(geom, batch_size, input_len, output_len, dtype) @ c

    def theta(self, geom: dict, batch_size: int, dtype="bfloat16", coef=None) -> dict:
        """θ of the analytical model implied for a geometry (exact for full-attention models)."""
        i, o = np.meshgrid([64.0, 512.0, 2048.0, 4096.0], [16.0, 128.0, 512.0, 1024.0], indexing="ij")
        i, o = i.ravel(), o.ravel()
        E = self.predict(geom, batch_size, i, o, dtype, coef)
        theta, *_ = np.linalg.lstsq(SWEETSPOT.design_matrix(i, o), E, rcond=None)
        return {n: float(max(v, 0.0)) for n, v in zip(SWEETSPOT.names, theta)}

    def draws(self, n: int = 200, seed: int = 0) -> dict[str, np.ndarray]:
        """Wild-bootstrap draws of the coefficients: ``{name: array of shape (n, 1)}`` like
        :meth:`ModelFit.draws`, cached per (n, seed); :func:`each_draw` iterates them as dicts."""
        if (n, seed) not in self._draws:
            c = np.array([self.coef[k] for k in COEFFICIENTS])
            out = wild_bootstrap(self._X, self._E, c, self.loss, n, seed)
            self._draws[(n, seed)] = {k: out[:, [j]] for j, k in enumerate(COEFFICIENTS)}
        return self._draws[(n, seed)]

    def predict_interval(self, geom, batch_size, input_len, output_len, dtype="bfloat16", n=200, level=LEVEL):
        """(estimate, low, high) of the predicted energy [J]."""
        samples = np.array([self.predict(geom, batch_size, input_len, output_len, dtype, c)
                            for c in each_draw(self.draws(n))])
        est = self.predict(geom, batch_size, input_len, output_len, dtype)
        return estimate_interval(est, samples, level)


def each_draw(draws: dict[str, np.ndarray]):
    """The draws of :meth:`HardwareModel.draws` (or :meth:`ModelFit.draws`) one at a time, as ``{name: float}``."""
    n = len(next(iter(draws.values())))
    for j in range(n):
        yield {k: float(v[j, 0]) for k, v in draws.items()}


SIMULATED = "simulated (per-step physics)"
"""The ``gpu`` and ``engine`` label of simulated cells: never presented as measured."""


def simulate(geom: dict, coef: dict, batch_sizes, input_lens, output_lens, noise_pct: float = 0.0, repeats: int = 1,
             seed: int = 0, name: str = "simulated", dtype: str = "bfloat16") -> pd.DataFrame:
    """Tidy windows simulated from the per-step physics (:func:`energykit.physics.cell_work`) and
    hardware coefficients, with multiplicative Gaussian noise of ``noise_pct`` % per window.

    For checking fits and building pages before measurements exist; ``gpu`` and ``engine`` read
    :data:`SIMULATED` so the rows can never pass for measured ones. Columns are those of a tidy file
    (:mod:`energykit.dataset`), geometry included; build a Dataset with ``dataset.from_frame``.
    """
    rng = np.random.default_rng(seed)
    hw = HardwareModel(dict(coef), [], "l1")
    geo = {k: geom[k] for k in GEOMETRY_KEYS if k in geom}
    rows = []
    for b in batch_sizes:
        for i in input_lens:
            for o in output_lens:
                e = float(hw.predict(geom, b, i, o, dtype)[0])
                for r in range(repeats):
                    rows.append(dict(model=name, engine=SIMULATED, gpu=SIMULATED, dtype=dtype, batch_size=int(b),
                                     input_len=int(i), output_len=int(o), repeat=r,
                                     energy_j=e * (1.0 + noise_pct / 100.0 * rng.standard_normal()), duration_s=1.0,
                                     **geo))
    return pd.DataFrame(rows)


def calibrate(ds: xr.Dataset, models=None, loss: str = "l1") -> HardwareModel:
    """Fit the coefficients on the measured cells of ``models`` (all with geometry by default)."""
    names = model_names(ds) if models is None else list(models)
    missing = [c for c in NEEDED if c not in ds.coords]
    if missing:
        raise FitError(f"the data lack geometry columns {missing}; add them to calibrate the hardware model")
    for key in ("gpu", "engine"):
        if key in ds.coords:
            values = {str(model_value(ds, m, key)) for m in names}
            if len(values) > 1:
                raise FitError(f"calibration models span several {key}s {sorted(values)}; "
                               f"calibrate on one {key} at a time (choose models)")
    X, E = [], []
    for m in names:
        cells = _cells(ds, m)
        geom = geometry(ds, m)
        for b, g in cells.groupby("batch_size"):
            X.append(features(geom, b, g["input_len"], g["output_len"], _dtype(ds, m)))
            E.append(g["energy_j"].to_numpy())
    if not X:
        raise FitError("no measured cells to calibrate on")
    X, E = np.vstack(X), np.concatenate(E)
    if len(E) <= len(COEFFICIENTS):
        raise FitError(f"{len(E)} measured cell(s) cannot calibrate {len(COEFFICIENTS)} hardware coefficients with an "
                       f"interval (no residual is left to bootstrap); measure at least {len(COEFFICIENTS) + 1} cells")
    coef, _ = irls(X, E, loss)
    gpu = str(model_value(ds, names[0], "gpu", ""))
    engine = str(model_value(ds, names[0], "engine", ""))
    return HardwareModel(dict(zip(COEFFICIENTS, map(float, coef))), names, loss, gpu, engine, X, E)


def leave_one_model_out(ds: xr.Dataset, loss: str = "l1", models=None) -> pd.DataFrame:
    """For each (gpu, engine) group of two or more of ``models`` (all by default): calibrate on the
    others, predict this one."""
    names = model_names(ds) if models is None else list(models)
    key = [(str(model_value(ds, m, "gpu", "")), str(model_value(ds, m, "engine", ""))) for m in names]
    rows = []
    for m, k in zip(names, key):
        others = [n for n, kk in zip(names, key) if kk == k and n != m]
        if not others:
            continue
        hw = calibrate(ds, others, loss)
        cells = _cells(ds, m)
        pred = np.concatenate([hw.predict(geometry(ds, m), b, g["input_len"], g["output_len"], _dtype(ds, m))
                               for b, g in cells.groupby("batch_size")])
        obs = np.concatenate([g["energy_j"].to_numpy() for _, g in cells.groupby("batch_size")])
        rows.append({"model": m, "calibrated_on": ", ".join(others), "cells": len(obs),
                     "mape_pct": float(np.mean(ape_pct(pred, obs))), "max_ape_pct": float(np.max(ape_pct(pred, obs)))})
    return pd.DataFrame(rows)


def coefficient_table(hw: HardwareModel, n: int = 200) -> pd.DataFrame:
    """Calibrated coefficients with 95 % bootstrap intervals.

    ``identified`` is False for a coefficient on its ≥ 0 bound in the fit or in most draws (see
    :data:`energykit.fit.IDENTIFIED_SHARE`): the calibration models do not pin it down.
    """
    d = hw.draws(n)
    rows = []
    for k in COEFFICIENTS:
        draws = d[k][:, 0]
        _, lo, hi = estimate_interval(hw.coef[k], draws)
        rows.append({"coefficient": k, "value": hw.coef[k], "value_low": float(lo), "value_high": float(hi),
                     "identified": identified(hw.coef[k], draws)})
    return pd.DataFrame(rows).set_index("coefficient")


def theta_interval_table(hw: HardwareModel, geom: dict, batch_size: int, dtype="bfloat16", n: int = 200) -> pd.DataFrame:
    """θ implied for a geometry with 95 % intervals over the calibration's bootstrap draws."""
    est = hw.theta(geom, batch_size, dtype)
    samples = [hw.theta(geom, batch_size, dtype, c) for c in each_draw(hw.draws(n))]
    rows = []
    for k in SWEETSPOT.names:
        _, lo, hi = estimate_interval(est[k], np.array([s[k] for s in samples]))
        rows.append({"param": k, "value": est[k], "value_low": float(lo), "value_high": float(hi)})
    return pd.DataFrame(rows).set_index("param")


def prediction_table(hw: HardwareModel, geom: dict, batch_size: int, input_lens, output_lens,
                     dtype: str = "bfloat16", n: int = 200) -> pd.DataFrame:
    """Predicted energy and efficiency per cell with 95 % intervals."""
    i, o = np.meshgrid(np.asarray(input_lens, float), np.asarray(output_lens, float), indexing="ij")
    i, o = i.ravel(), o.ravel()
    est, lo, hi = hw.predict_interval(geom, batch_size, i, o, dtype, n)
    return pd.DataFrame({"input_len": i.astype(int), "output_len": o.astype(int), "energy_j": est,
                         "energy_j_low": lo, "energy_j_high": hi, "tokens_per_j": tokens_per_j(est, batch_size, o),
                         "tokens_per_j_low": tokens_per_j(hi, batch_size, o),
                         "tokens_per_j_high": tokens_per_j(lo, batch_size, o)})


def transfer_error_pct(lomo: pd.DataFrame) -> float:
    """The error of a prediction for an unmeasured geometry [%]: the worst model's leave-one-model-out MAPE.

    NaN when the calibration has one model (nothing can be held out): the transfer is then unchecked.
    """
    return float(lomo["mape_pct"].max()) if len(lomo) else float("nan")


def with_transfer_error(table: pd.DataFrame, error_pct: float) -> pd.DataFrame:
    """A :func:`prediction_table` whose intervals also cover an energy error of ±``error_pct`` %.

    θ's bootstrap interval alone describes the calibration's noise, not how far a geometry the
    calibration never saw may be off; this widens each cell's energy interval to at least
    [E (1 − e), E (1 + e)] and its tokens/J interval to the matching [t / (1 + e), t / (1 − e)]
    (unbounded above for e ≥ 100 %). With ``error_pct`` NaN (unchecked) the table is returned unchanged.

    >>> t = pd.DataFrame({"energy_j": [100.0], "energy_j_low": [99.0], "energy_j_high": [101.0], "tokens_per_j": [2.0],
    ...                   "tokens_per_j_low": [1.98], "tokens_per_j_high": [2.02]})
    >>> with_transfer_error(t, 50).round(3).iloc[0].tolist()
    [100.0, 50.0, 150.0, 2.0, 1.333, 4.0]
    """
    if not np.isfinite(error_pct):
        return table
    e = error_pct / 100.0
    out = table.copy()
    out["energy_j_low"] = np.minimum(out["energy_j_low"], out["energy_j"] * max(1 - e, 0.0))
    out["energy_j_high"] = np.maximum(out["energy_j_high"], out["energy_j"] * (1 + e))
    out["tokens_per_j_low"] = np.minimum(out["tokens_per_j_low"], out["tokens_per_j"] / (1 + e))
    out["tokens_per_j_high"] = np.maximum(out["tokens_per_j_high"], out["tokens_per_j"] / (1 - e) if e < 1 else np.inf)
    return out
