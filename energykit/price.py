"""Price one request from an energykit price card, with the Python standard library only.

A price card (``energykit export DATA -o card.json``) holds, per model/GPU/engine, the fitted
coefficients of the energy model with their bootstrap draws, the ranges measured, the units and a
schema version. This file imports nothing but the standard library, so that a serving router can
copy it alone into its own code base::

    from price import load_card, price, o_star
    card = load_card("card.json")
    joules, low, high, extrapolated = price(card, "llama3.2-1b", 512, 128, batch=16)

It computes exactly what ``energykit predict DATA --model M --batch-size B --input-lens I
--output-lens O --json`` reports as ``energy_per_request_j`` (and its ``_low``/``_high``): the
same terms summed in the same order, the same percentile rule over the same draws.
"""

from __future__ import annotations

import json
import math

__all__ = ["SCHEMA", "SCHEMA_VERSION", "load_card", "entry", "price", "o_star", "energy"]

SCHEMA = "energykit-price-card"
SCHEMA_VERSION = 1


def load_card(path) -> dict:
    """Read a price card and check its schema version."""
    with open(path, encoding="utf-8") as f:
        card = json.load(f)
    if card.get("schema") != SCHEMA or card.get("schema_version") != SCHEMA_VERSION:
        raise ValueError(f"{path} is not an energykit price card of version {SCHEMA_VERSION} "
                         f"(schema {card.get('schema')!r}, version {card.get('schema_version')!r}); "
                         "write it again with: energykit export DATA -o card.json")
    return card


def entry(card: dict, model: str, gpu: str | None = None, engine: str | None = None) -> dict:
    """The card's entry of ``model`` (narrowed by ``gpu``/``engine`` when the card holds several)."""
    found = [e for e in card["models"] if e["model"] == model and gpu in (None, e["gpu"])
             and engine in (None, e["engine"])]
    if not found:
        have = sorted({e["model"] for e in card["models"]})
        raise KeyError(f"model {model!r} is not in the price card; it prices {', '.join(have)}")
    if len(found) > 1:
        raise KeyError(f"model {model!r} is priced on several GPUs/engines "
                       f"{[(e['gpu'], e['engine']) for e in found]}; pass gpu= and engine=")
    return found[0]


def energy(e: dict, coefficients: dict, values: dict) -> float:
    """Energy of one request batch [J]: Σ coefficient × its factors, terms in declared order."""
    total = None
    for t in e["terms"]:
        c = coefficients[t["name"]]
        for f in t["factors"]:
            c = c * values[f]
        total = c if total is None else total + c
    return total


def _quantile(sorted_values: list, q: float) -> float:
    """numpy's ``quantile(..., method="inverted_cdf")`` of sorted values."""
    n = len(sorted_values)
    index = n * q - 1
    previous = math.floor(index)
    k = previous if index - previous == 0 else previous + 1
    return sorted_values[min(max(k, 0), n - 1)]


def _values(e: dict, input_len, output_len, batch) -> dict:
    values = {"input_len": float(input_len), "output_len": float(output_len)}
    if "batch_size" in e["variables"]:
        values["batch_size"] = float(batch)
    elif batch not in e["batch_sizes"]:
        raise ValueError(f"{e['model']} was measured at batch size {e['batch_sizes'][0]} only; the card cannot price "
                         f"batch {batch}: measure two or more batch sizes for the batch-aware model, or use "
                         f"batch={e['batch_sizes'][0]}")
    return values


def price(card: dict, model: str, input_len, output_len, batch: int = 1, gpu: str | None = None,
          engine: str | None = None) -> tuple[float, float, float, bool]:
    """Energy of one request [J] in a batch of ``batch`` requests, with its interval.

    Parameters
    ----------
    card : dict
        A price card (:func:`load_card`).
    model : str
        Model name as in the card.
    input_len, output_len : int
        Prompt and generated tokens of the request [tokens].
    batch : int
        Requests decoded together [requests]; a per-batch card prices only its measured batch size.

    Returns
    -------
    (joules, low, high, extrapolated)
        Energy per request :math:`E(i, o, B) / B` [J], the card's interval (level in
        ``card["level"]``), and whether a variable lies outside the ranges measured.
    """
    e = entry(card, model, gpu, engine)
    values = _values(e, input_len, output_len, batch)
    b = float(batch)
    est = energy(e, e["coefficients"], values)
    names = [t["name"] for t in e["terms"]]
    n = len(e["draws"][names[0]])
    samples = sorted(energy(e, {k: e["draws"][k][j] for k in names}, values) for j in range(n))
    tail = (1 - card["level"]) / 2
    low, high = min(_quantile(samples, tail), est), max(_quantile(samples, 1 - tail), est)
    checked = dict(values, batch_size=b)
    outside = any(not (lo <= checked[v] <= hi) for v, (lo, hi) in e["ranges"].items())
    return est / b, low / b, high / b, outside


def o_star(card: dict, model: str, input_len, batch: int = 1, gpu: str | None = None,
           engine: str | None = None) -> float:
    """Output length that minimises energy per output token at this input length and batch [tokens].

    :math:`o^* = \\sqrt{A / C}` with ``A`` the terms without and ``C`` the coefficient of the terms with
    ``o²``; ``inf`` where ``C = 0``. Cap ``max_tokens`` at it to stay near the sweet spot.
    """
    e = entry(card, model, gpu, engine)
    values = _values(e, input_len, 1.0, batch)
    num, den = 0.0, 0.0
    for t in e["terms"]:
        power = t["factors"].count("output_len")
        c = e["coefficients"][t["name"]]
        for f in t["factors"]:
            if f != "output_len":
                c = c * values[f]
        if power == 0:
            num += c
        elif power == 2:
            den += c
    return math.sqrt(num / den) if den > 0 else math.inf
