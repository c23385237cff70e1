"""The energy models, each declared once: variables, terms, units, meanings and bounds.

Every model the kit fits is linear in non-negative coefficients over products of its variables.
An :class:`EnergyModel` declares them once, and everything else derives from that declaration: the
energy (:meth:`EnergyModel.energy`), its design matrix, energy per output token, the
energy-optimal output length ``o*`` (:meth:`EnergyModel.o_star`), the parameter table and the
function lmfit fits (:meth:`EnergyModel.function`; the lmfit Model is
:class:`energykit.fit.LinearEnergyModel`, so that this module imports without lmfit: a sweep on a GPU
machine never needs it). Fitting, sweet spots, workloads, the hardware model,
designs, plots, the CLI and the price card call these; none types a term again.

Three models are declared (the derivation is in docs/model.md and notebooks/02_fit.py):

- :data:`SWEETSPOT`, the paper's model of one request batch at a fixed batch size ``B``
  (Pizzini Cavagna et al., arXiv:2602.05695):

  .. math:: E(i, o) = \\theta_1 i^2 + \\theta_2 i o + \\theta_3 i + \\theta_4 o^2 + \\theta_5 o + \\theta_0

- :data:`BATCHED`, the same physics across batch sizes: prefill compute and KV reads scale with
  ``B``, a decode step reads the weights once for the whole batch and pays its step overhead once:

  .. math:: E(i, o, B) = B (\\theta_1 i^2 + \\theta_2 i o + \\theta_3 i + \\theta_4 o^2 + \\theta_5' o)
            + \\theta_w o + \\theta_0

  At one ``B`` it is :data:`SWEETSPOT` with :math:`\\theta_5 = B \\theta_5' + \\theta_w` and the
  other θ multiplied by ``B`` (:func:`per_batch_theta`).
- :data:`LINEAR`, the baseline :math:`E = a i + b o + c`.

Evaluation order is part of the declaration: a term's contribution is its coefficient times each
factor in turn, summed in declared order, so that numbers are reproducible to the last bit.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy.optimize import nnls

__all__ = ["Variable", "Term", "EnergyModel", "VARIABLES", "SWEETSPOT", "BATCHED", "LINEAR", "MODELS",
           "cell", "cell_key", "model_of", "per_batch_theta", "tokens_per_j", "energy_per_token_j", "nnls_weighted"]


@dataclass(frozen=True)
class Variable:
    """One independent variable of an energy model."""

    name: str
    symbol: str
    unit: str
    meaning: str


@dataclass(frozen=True)
class Term:
    """One term: a non-negative coefficient times a product of variables.

    ``factors`` names the variables multiplied (repeated for a power), in evaluation order.
    """

    name: str
    factors: tuple[str, ...]
    symbol: str
    unit: str
    meaning: str
    min: float = 0.0


VARIABLES = {
    "input_len": Variable("input_len", "i", "tokens", "input (prompt) length"),
    "output_len": Variable("output_len", "o", "tokens", "output length (decode steps)"),
    "batch_size": Variable("batch_size", "B", "requests", "requests decoded together in one batch"),
}


def cell_key() -> tuple[str, ...]:
    """Names of a cell's variables: the declared :data:`VARIABLES`, read at call time.

    >>> cell_key()
    ('input_len', 'output_len', 'batch_size')
    """
    return tuple(VARIABLES)


def cell(*values, **named) -> dict:
    """A cell: values of the declared :data:`VARIABLES` by name (``None`` values dropped).

    Give one mapping, or values in :data:`VARIABLES` order, or names; names override. A name that
    is not a declared variable is refused.

    >>> cell(512, 128, batch_size=16)
    {'input_len': 512, 'output_len': 128, 'batch_size': 16}
    >>> cell({"input_len": 64, "output_len": 8})
    {'input_len': 64, 'output_len': 8}
    """
    if len(values) == 1 and isinstance(values[0], Mapping):
        out = dict(values[0])
    else:
        if len(values) > len(VARIABLES):
            raise ValueError(f"a cell has at most {len(VARIABLES)} variables ({', '.join(VARIABLES)}); got {len(values)} values")
        out = dict(zip(VARIABLES, values))
    out.update(named)
    unknown = [k for k in out if k not in VARIABLES]
    if unknown:
        raise ValueError(f"{unknown[0]!r} is not a declared variable; declare it in energykit/model.py's VARIABLES "
                         f"or use one of {', '.join(VARIABLES)}")
    return {k: v for k, v in out.items() if v is not None}


def tokens_per_j(energy_j, batch_size, output_len):
    """Output tokens per joule :math:`B o / E` [tokens/J]."""
    return batch_size * output_len / energy_j


def energy_per_token_j(energy_j, batch_size, output_len):
    """Energy per output token :math:`E / (B o)` [J/token]."""
    return energy_j / (batch_size * output_len)


def nnls_weighted(X: np.ndarray, E: np.ndarray, w: np.ndarray) -> np.ndarray:
    """argmin ||w·(X θ − E)|| subject to θ ≥ 0 (columns scaled for conditioning)."""
    scale = np.abs(X).max(axis=0)
    scale[scale == 0] = 1.0
    coef, _ = nnls((X / scale) * w[:, None], E * w)
    return coef / scale


class EnergyModel:
    """An energy model linear in non-negative coefficients, declared by its variables and terms.

    Parameters
    ----------
    kind : str
        Short name stored with fits (``"sweetspot"``, ``"batched"``, ``"linear"``).
    variables : tuple of str
        Names of its independent variables, keys of :data:`VARIABLES`, in call order.
    terms : tuple of Term
        Its terms, in evaluation order.
    description : str
        One line: what the model is.

    Examples
    --------
    >>> float(SWEETSPOT.energy(100, 10, theta1=1e-4, theta3=0.05, theta5=2.0, theta0=10.0))
    36.0
    >>> BATCHED.names
    ('theta1', 'theta2', 'theta3', 'theta4', 'theta5p', 'thetaw', 'theta0')
    """

    def __init__(self, kind: str, variables: tuple[str, ...], terms: tuple[Term, ...], description: str):
        self.kind = kind
        self.variables = tuple(variables)
        self.terms = tuple(terms)
        self.description = description
        unknown = {f for t in terms for f in t.factors} - set(variables)
        if unknown:
            raise ValueError(f"terms of {kind} use undeclared variables {sorted(unknown)}")

    def __repr__(self) -> str:
        return f"EnergyModel({self.kind!r}, {self.formula})"

    @property
    def names(self) -> tuple[str, ...]:
        """Coefficient names in declared order."""
        return tuple(t.name for t in self.terms)

    @property
    def units(self) -> dict[str, str]:
        """Unit of each coefficient."""
        return {t.name: t.unit for t in self.terms}

    @property
    def meanings(self) -> dict[str, str]:
        """What each coefficient stands for."""
        return {t.name: t.meaning for t in self.terms}

    @property
    def has_batch(self) -> bool:
        """Whether the batch size is one of the model's variables."""
        return "batch_size" in self.variables

    @property
    def formula(self) -> str:
        """The energy as text, e.g. ``E = θ1·i² + … + θ0``."""
        parts = []
        for t in self.terms:
            sym = "·".join([t.symbol] + [VARIABLES[f].symbol for f in t.factors])
            parts.append(sym)
        return "E = " + " + ".join(parts)

    def take(self, cell: Mapping) -> dict:
        """This model's variables out of a cell (a mapping with every one of them; others are ignored)."""
        missing = [v for v in self.variables if v not in cell]
        if missing:
            raise ValueError(f"the {self.kind} model needs {', '.join(missing)} in every cell; got "
                             f"{', '.join(cell) or 'none'}")
        return {v: cell[v] for v in self.variables}

    def _values(self, args, kwargs) -> dict:
        vals = dict(zip(self.variables, args))
        for v in self.variables:
            if v in kwargs:
                vals[v] = kwargs.pop(v)
        missing = [v for v in self.variables if v not in vals]
        if missing:
            raise TypeError(f"{self.kind} energy needs {', '.join(missing)}")
        return vals

    def energy(self, *args, **kwargs):
        """Energy of one request batch [J] at the variables (positional, in :attr:`variables` order, or by name).

        Coefficients are keyword arguments (0 when absent); scalars, numpy arrays (e.g. bootstrap
        draws of shape (n, 1)) and xarray objects broadcast.
        """
        vals = self._values(args, kwargs)
        total = None
        for t in self.terms:
            c = kwargs.get(t.name, 0.0)
            for f in t.factors:
                c = c * vals[f]
            total = c if total is None else total + c
        return total

    def design_matrix(self, *args, **kwargs) -> np.ndarray:
        """Columns of the terms at the given cells, shape (n, len(terms)): ``energy = X @ θ``."""
        vals = {k: np.atleast_1d(np.asarray(v, dtype=float)) for k, v in self._values(args, kwargs).items()}
        n = np.broadcast_shapes(*(v.shape for v in vals.values()))
        vals = {k: np.broadcast_to(v, n) for k, v in vals.items()}
        first = vals[self.variables[0]]
        cols = []
        for t in self.terms:
            if not t.factors:
                cols.append(np.ones_like(first))
                continue
            col = vals[t.factors[0]]
            for f in t.factors[1:]:
                col = col * vals[f]
            cols.append(col)
        return np.column_stack(cols)

    def energy_per_token_j(self, params: dict, *args, batch_size=None, **kwargs):
        """Energy per output token :math:`E / (B o)` [J/token]; ``batch_size`` is a variable of
        batch-aware models and an argument of the others."""
        vals = self._values(args, kwargs)
        b = vals.get("batch_size", batch_size)
        if b is None:
            raise TypeError(f"energy per token of the {self.kind} model needs batch_size")
        return energy_per_token_j(self.energy(**vals, **params), b, vals["output_len"])

    def o_star(self, params: dict, *args, **kwargs):
        """Output length that minimises energy per output token, the other variables fixed [tokens].

        For energy of degree 2 in ``o``, :math:`E = A + B' o + C o^2` with ``A``, ``C`` from the terms
        with no and with two output factors, :math:`E / o` is minimised at :math:`o^* = \\sqrt{A / C}`;
        ``inf`` where ``C = 0`` (efficiency then rises with output length). Pass every variable but
        ``output_len``. Parameters may be arrays that broadcast (bootstrap draws of shape (n, 1)).

        >>> float(SWEETSPOT.o_star({"theta0": 100.0, "theta4": 1.0}, 64))
        10.0
        """
        if "output_len" not in self.variables:
            raise ValueError(f"the {self.kind} model has no output length")
        rest = [v for v in self.variables if v != "output_len"]
        vals = {k: np.asarray(v, dtype=float) for k, v in zip(rest, args)}
        vals.update({k: np.asarray(kwargs.pop(k), dtype=float) for k in rest if k in kwargs})
        num, den = None, None
        for t in self.terms:
            power = t.factors.count("output_len")
            if power == 1:
                continue
            if power > 2:
                raise ValueError(f"o* of the {self.kind} model: term {t.name} is of degree {power} in o")
            others = [f for f in t.factors if f != "output_len"]
            c = params.get(t.name, 0.0)
            if others:
                prod = vals[others[0]]
                for f in others[1:]:
                    prod = prod * vals[f]
                c = c * prod
            if power == 0:
                num = c if num is None else num + c
            else:
                den = c if den is None else den + c
        den = np.asarray(den, dtype=float)
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(den > 0, np.sqrt(num / np.where(den > 0, den, 1.0)), np.inf)

    def batch_parts(self, params: dict, *args, **kwargs):
        """Energy of a batch split by how it grows with ``B``: ``(per_request_j, per_batch_j)`` with
        :math:`E = B a + c` with ``a`` the per-request and ``c`` the per-batch energy (batch-aware models only).

        Pass every variable but ``batch_size``; parameters may be arrays that broadcast.
        """
        if not self.has_batch:
            raise ValueError(f"the {self.kind} model has no batch size")
        rest = [v for v in self.variables if v != "batch_size"]
        vals = dict(zip(rest, args))
        vals.update({k: kwargs.pop(k) for k in rest if k in kwargs})
        per_request, per_batch = 0.0, 0.0
        for t in self.terms:
            c = params.get(t.name, 0.0)
            for f in t.factors:
                if f != "batch_size":
                    c = c * vals[f]
            if "batch_size" in t.factors:
                per_request = per_request + c
            else:
                per_batch = per_batch + c
        return per_request, per_batch

    def saturation_batch(self, params: dict, *args, drop_pct: float = 5.0, **kwargs):
        """Batch size beyond which doubling the batch saves less than ``drop_pct`` % of energy per
        token [requests].

        With :math:`E = B a + c` (:meth:`batch_parts`), energy per token is :math:`(a + c/B)/o`, and
        doubling ``B`` saves the share :math:`c / (2 (a B + c))`, below ``d = drop_pct/100`` once

        .. math:: B > B_\\mathrm{sat} = \\frac{c}{a} \\left(\\frac{1}{2 d} - 1\\right)

        ``inf`` where ``a = 0``; 0 where ``c = 0`` (batching saves nothing per token).

        >>> float(BATCHED.saturation_batch({"theta3": 1.0, "theta0": 100.0}, 10, 1))
        90.0
        """
        a, c = self.batch_parts(params, *args, **kwargs)
        a, c = np.asarray(a, dtype=float), np.asarray(c, dtype=float)
        factor = 1.0 / (2.0 * drop_pct / 100.0) - 1.0
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(a > 0, c * factor / np.where(a > 0, a, 1.0), np.inf)

    def param_table(self):
        """The declared coefficients: name, term, unit, meaning and lower bound, one row each."""
        return pd.DataFrame([{"param": t.name, "term": "·".join([VARIABLES[f].symbol for f in t.factors]) or "1",
                              "unit": t.unit, "meaning": t.meaning, "min": t.min} for t in self.terms]).set_index("param")

    def function(self):
        """The energy as a plain function with the model's signature (what lmfit reads)."""

        def energy(**kw):
            return self.energy(**kw)

        params = [inspect.Parameter(v, inspect.Parameter.POSITIONAL_OR_KEYWORD) for v in self.variables]
        params += [inspect.Parameter(n, inspect.Parameter.POSITIONAL_OR_KEYWORD, default=0.0) for n in self.names]
        energy.__signature__ = inspect.Signature(params)
        energy.__name__ = f"{self.kind}_energy"
        energy.__doc__ = f"{self.description}: {self.formula} [J]."
        return energy


_I, _O, _B = "input_len", "output_len", "batch_size"

SWEETSPOT = EnergyModel("sweetspot", (_I, _O), (
    Term("theta1", (_I, _I), "θ1", "J/token^2", "i²: prefill causal attention"),
    Term("theta2", (_I, _O), "θ2", "J/token^2", "i·o: decode attention / KV-cache reads of the prompt"),
    Term("theta3", (_I,), "θ3", "J/token", "i: prefill weight GEMMs"),
    Term("theta4", (_O, _O), "θ4", "J/token^2", "o²: decode attention / KV reads of generated tokens (≈ θ2/2)"),
    Term("theta5", (_O,), "θ5", "J/token", "o: per-step weight reads and step overheads"),
    Term("theta0", (), "θ0", "J", "fixed cost per request batch"),
), "SweetSpot analytical model of one request batch at a fixed batch size (arXiv:2602.05695)")

BATCHED = EnergyModel("batched", (_I, _O, _B), (
    Term("theta1", (_B, _I, _I), "θ1", "J/token^2", "B·i²: prefill causal attention, per request"),
    Term("theta2", (_B, _I, _O), "θ2", "J/token^2", "B·i·o: decode reads of each prompt's KV cache"),
    Term("theta3", (_B, _I), "θ3", "J/token", "B·i: prefill weight GEMMs, per request"),
    Term("theta4", (_B, _O, _O), "θ4", "J/token^2", "B·o²: decode reads of each request's generated KV"),
    Term("theta5p", (_B, _O), "θ5'", "J/token", "B·o: per-request work of a decode step (its GEMM FLOPs, sampling)"),
    Term("thetaw", (_O,), "θw", "J/token", "o: weight reads and overheads of a decode step, once per batch"),
    Term("theta0", (), "θ0", "J", "fixed cost per request batch"),
), "SweetSpot model across batch sizes: E(i, o, B) of one batch of B requests")

LINEAR = EnergyModel("linear", (_I, _O), (
    Term("a", (_I,), "a", "J/token", "i: energy per input token"),
    Term("b", (_O,), "b", "J/token", "o: energy per output token"),
    Term("c", (), "c", "J", "fixed cost per request batch"),
), "linear-in-lengths baseline")

MODELS = {m.kind: m for m in (SWEETSPOT, LINEAR, BATCHED)}


def model_of(kind: str) -> EnergyModel:
    """The declared model of a kind (``"sweetspot"``, ``"linear"``, ``"batched"``)."""
    try:
        return MODELS[kind]
    except KeyError:
        raise ValueError(f"unknown model kind {kind!r}; use one of {', '.join(MODELS)}") from None


def per_batch_theta(params: dict, batch_size: float) -> dict:
    """θ of :data:`SWEETSPOT` at one batch size implied by :data:`BATCHED`'s coefficients.

    .. math:: \\theta_k^{(B)} = B \\theta_k \\;(k = 1..4), \\quad \\theta_5^{(B)} = B \\theta_5' + \\theta_w,
              \\quad \\theta_0^{(B)} = \\theta_0

    >>> per_batch_theta({"theta1": 1.0, "theta2": 0, "theta3": 0, "theta4": 0, "theta5p": 2.0, "thetaw": 3.0,
    ...                  "theta0": 5.0}, 4)["theta5"]
    11.0
    """
    b = batch_size
    return {"theta1": b * params["theta1"], "theta2": b * params["theta2"], "theta3": b * params["theta3"],
            "theta4": b * params["theta4"], "theta5": b * params["theta5p"] + params["thetaw"],
            "theta0": params["theta0"]}
