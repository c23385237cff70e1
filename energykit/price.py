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
import operator
import os
import stat

__all__ = ["SCHEMA", "SCHEMA_VERSION", "SCHEMA_VERSIONS", "VARIABLES", "MAX_TOKENS", "MAX_CARD_BYTES", "load_card", "check_card", "entry",
           "price", "o_star", "energy"]

SCHEMA = "energykit-price-card"
SCHEMA_VERSION = 2
SCHEMA_VERSIONS = (1, 2)
"""Versions read: 1 (the kit before issue 31: variables among :data:`VARIABLES`, a per-batch fit known by its
one batch size) and 2 (an entry declares its variables, and what its fit holds ``fixed``)."""
VARIABLES = ("input_len", "output_len", "batch_size")
"""The factors a version-1 card's terms may multiply [tokens, tokens, requests]; a version-2 entry names its own."""
MAX_TOKENS = 10**7
"""Largest length or batch priced [1e7], as the kit's readers accept: beyond it a value is a typo or an overflow."""
MAX_CARD_BYTES = 64 << 20
"""Largest card file read [64 MiB]; the kit's cards are a few hundred kB."""


def _fail(where: str, what: str, fix: str = "write the card again with: energykit export DATA -o card.json"):
    raise ValueError(f"{where} {what}; {fix}")


def _number(v, where: str) -> float:
    """``v`` as a finite, non-negative float (not a bool), else a one-line ``ValueError`` naming ``where``."""
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        _fail(where, f"must be a number; got {str(v)[:40]!r}")
    try:
        x = float(v)
    except OverflowError:
        x = math.inf
    if not math.isfinite(x) or x < 0:
        _fail(where, f"must be finite and non-negative; got {str(v)[:40]}")
    return x


def _mapping(v, where: str, kind=dict):
    if not isinstance(v, kind):
        _fail(where, f"must be a JSON {'object' if kind is dict else 'list'}; got {type(v).__name__}")
    return v


def _text(v, where: str) -> str:
    if not isinstance(v, str):
        _fail(where, f"must be text; got {type(v).__name__}")
    return v


def _check_entry(e, k: int) -> None:
    where = f"price card models[{k}]"
    _mapping(e, where)
    for key in ("model", "gpu", "engine", "variables", "terms", "coefficients", "draws", "batch_sizes", "ranges"):
        if key not in e:
            _fail(where, f"lacks {key!r}")
    model = _text(e["model"], f"{where}.model")
    where = f"price card model {model[:60]!r}"
    _text(e["gpu"], f"{where}: gpu")
    _text(e["engine"], f"{where}: engine")
    variables = e["variables"]
    known = _known(e, where)
    if not isinstance(variables, (dict, list)) or not all(isinstance(v, str) and v in known for v in variables):
        _fail(f"{where}: variables", f"must name only {', '.join(known)}; got {str(list(variables) if isinstance(variables, (dict, list)) else variables)[:80]}")
    if "input_len" not in variables or "output_len" not in variables:
        _fail(f"{where}: variables", "must hold input_len and output_len")
    terms = _mapping(e["terms"], f"{where}: terms", list)
    if not terms:
        _fail(f"{where}: terms", "is empty")
    names = []
    for t in terms:
        _mapping(t, f"{where}: a term")
        name = _text(t.get("name"), f"{where}: a term's name")
        factors = _mapping(t.get("factors"), f"{where}: term {name[:40]!r} factors", list)
        unknown = [f for f in factors if not isinstance(f, str) or f not in variables]
        if unknown:
            _fail(f"{where}: term {name[:40]!r}", f"has the unknown factor {str(unknown[0])[:40]!r}; "
                  f"factors are among {', '.join(variables)}")
        if name in names:
            _fail(f"{where}: term {name[:40]!r}", "is declared twice")
        if factors.count("output_len") > 2:
            _fail(f"{where}: term {name[:40]!r}", "is of a power of output_len above 2, which this reader does not price")
        names.append(name)
    coefficients = _mapping(e["coefficients"], f"{where}: coefficients")
    draws = _mapping(e["draws"], f"{where}: draws")
    n = None
    for name in names:
        if name not in coefficients:
            _fail(f"{where}: coefficients", f"lack the term {name[:40]!r}")
        _number(coefficients[name], f"{where}: coefficient {name[:40]}")
        d = _mapping(draws.get(name), f"{where}: draws of {name[:40]}", list)
        if n is None:
            n = len(d)
        if len(d) != n or not d:
            _fail(f"{where}: draws of {name[:40]}", f"hold {len(d)} values, the first term's {n}; "
                  "every term needs the same number of draws (at least one)")
        for j, x in enumerate(d):
            _number(x, f"{where}: draws of {name[:40]}[{j}]")
    sizes = _mapping(e["batch_sizes"], f"{where}: batch_sizes", list)
    if not sizes:
        _fail(f"{where}: batch_sizes", "is empty")
    for b in sizes:
        _count(b, f"{where}: batch_sizes value")
    ranges = _mapping(e["ranges"], f"{where}: ranges")
    for v, r in ranges.items():
        if v not in known:
            _fail(f"{where}: ranges", f"name the unknown variable {v[:40]!r}; use {', '.join(known)}")
        if not isinstance(r, list) or len(r) != 2:
            _fail(f"{where}: range of {v}", f"must be [low, high]; got {str(r)[:40]}")
        lo, hi = _number(r[0], f"{where}: range of {v}"), _number(r[1], f"{where}: range of {v}")
        if lo > hi:
            _fail(f"{where}: range of {v}", f"[{lo:g}, {hi:g}] is reversed (low above high)")


_NAME_CHARS = set("abcdefghijklmnopqrstuvwxyz0123456789_")


def _known(e: dict, where: str) -> tuple:
    """Variable names an entry may use: :data:`VARIABLES` (version 1), or those it declares and holds fixed (2)."""
    if "fixed" not in e:
        return VARIABLES
    fixed = _mapping(e["fixed"], f"{where}: fixed")
    for k, v in fixed.items():
        _number(v, f"{where}: fixed {str(k)[:40]}")
    names = list(e["variables"]) if isinstance(e["variables"], (dict, list)) else []
    for v in names + list(fixed):
        if not isinstance(v, str) or not v or len(v) > 64 or not set(v) <= _NAME_CHARS or v[0].isdigit():
            _fail(f"{where}: variables", f"name {str(v)[:40]!r}, not a plain variable name (a-z, 0-9, _)")
    return tuple(dict.fromkeys(names + list(fixed)))


def check_card(card) -> dict:
    """Refuse, with a one-line ``ValueError`` naming the field, a card that is not a well-formed price card.

    Schema and version, a level in (0, 1), and per entry: text names, terms whose factors are known
    variables, finite non-negative coefficients, draws of equal length, positive integer batch sizes,
    ordered ranges. Returns the card.
    """
    if not isinstance(card, dict):
        _fail("a price card", f"must be a JSON object; got {type(card).__name__}")
    if card.get("schema") != SCHEMA or card.get("schema_version") not in SCHEMA_VERSIONS:
        _fail("the card", f"is not an energykit price card of version {' or '.join(map(str, SCHEMA_VERSIONS))} (schema "
              f"{str(card.get('schema'))[:40]!r}, version {str(card.get('schema_version'))[:20]!r})")
    if "level" not in card:
        _fail("the price card", "lacks 'level' (the interval's confidence level)")
    level = card["level"]
    if isinstance(level, bool) or not isinstance(level, (int, float)) or not 0 < level < 1:
        _fail("the price card's level", f"must be a number in (0, 1), e.g. 0.95; got {str(level)[:40]}")
    models = _mapping(card.get("models"), "the price card's models", list)
    if not models:
        _fail("the price card's models", "is empty")
    for k, e in enumerate(models):
        _check_entry(e, k)
    return card


def load_card(path) -> dict:
    """Read a price card and check it whole (:func:`check_card`); a one-line ``ValueError`` when it is not one."""
    try:
        st = os.stat(path)
    except OSError as e:
        raise ValueError(f"{path}: cannot read the price card ({e.strerror}); check the path") from None
    if not stat.S_ISREG(st.st_mode):
        raise ValueError(f"{path}: not a regular file (a folder, FIFO or device); give the card's JSON file")
    if st.st_size > MAX_CARD_BYTES:
        raise ValueError(f"{path}: {st.st_size} bytes is over the {MAX_CARD_BYTES} bytes of a price card; "
                         "check that this is the right file")
    try:
        with open(path, "rb") as f:
            card = json.loads(f.read(MAX_CARD_BYTES + 1).decode("utf-8"))
    except (ValueError, RecursionError) as e:  # JSONDecodeError, UnicodeDecodeError and too long integers
        raise ValueError(f"{path}: not a JSON price card ({type(e).__name__}); write it again with: "
                         "energykit export DATA -o card.json") from None
    try:
        return check_card(card)
    except ValueError as e:
        raise ValueError(f"{path}: {e}") from None


def _count(v, what: str) -> int:
    """``v`` as an integer from 1 to :data:`MAX_TOKENS` (not a bool, not a float), else a one-line ``ValueError``."""
    if isinstance(v, bool) or type(v).__name__ in ("bool_", "bool"):
        raise ValueError(f"{what} must be an integer from 1 to {MAX_TOKENS}; got the boolean {v!r}")
    try:
        n = operator.index(v)
    except TypeError:
        raise ValueError(f"{what} must be an integer from 1 to {MAX_TOKENS}; got {str(v)[:40]!r} "
                         f"({type(v).__name__}) — round it to a whole number of tokens or requests") from None
    if not 1 <= n <= MAX_TOKENS:
        raise ValueError(f"{what} must be an integer from 1 to {MAX_TOKENS}; got {str(n)[:40]}")
    return n


def entry(card: dict, model: str, gpu: str | None = None, engine: str | None = None) -> dict:
    """The card's entry of ``model`` (narrowed by ``gpu``/``engine`` when the card holds several), checked.

    The card's top level and the entry found are checked as :func:`check_card` does (a card built by
    hand, not read by :func:`load_card`, is refused in one line too).
    """
    for what, v in (("model", model), ("gpu", gpu), ("engine", engine)):
        if v is not None and not isinstance(v, str) or (what == "model" and v is None):
            raise ValueError(f"{what} must be text (a name as in the card); got {str(v)[:40]!r}")
    if not isinstance(card, dict) or not isinstance(card.get("models"), list):
        check_card(card)  # raises, naming what is wrong
    level = card.get("level")
    if card.get("schema") != SCHEMA or card.get("schema_version") not in SCHEMA_VERSIONS or isinstance(level, bool) or not isinstance(level, (int, float)) \
            or not 0 < level < 1:
        check_card(card)
    found = [(k, e) for k, e in enumerate(card["models"]) if isinstance(e, dict) and e.get("model") == model
             and gpu in (None, e.get("gpu")) and engine in (None, e.get("engine"))]
    if not found:
        check_card(card)  # a damaged entry is named before the model is said to be missing
        have = sorted({str(e.get("model")) for e in card["models"] if isinstance(e, dict)})
        raise KeyError(f"model {model[:60]!r} is not in the price card; it prices {', '.join(have)}")
    if len(found) > 1:
        raise KeyError(f"model {model[:60]!r} is priced on several GPUs/engines "
                       f"{[(e.get('gpu'), e.get('engine')) for _, e in found]}; pass gpu= and engine=")
    k, e = found[0]
    _check_entry(e, k)
    return e


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


def _values(e: dict, input_len, output_len, batch, others: dict) -> dict:
    """The entry's variables at this request; a one-line ``ValueError`` for one its fit holds at another value."""
    values = {"input_len": float(_count(input_len, "input_len")), "output_len": float(_count(output_len, "output_len"))}
    given = {"batch_size": _count(batch, "batch"), **others}
    fixed = e.get("fixed", {} if "batch_size" in e["variables"] else {"batch_size": e["batch_sizes"][0]})
    unknown = [k for k in others if k not in e["variables"] and k not in fixed]
    if unknown:
        raise ValueError(f"{str(unknown[0])[:40]!r} is not a variable of {e['model']}'s card; it takes "
                         f"{', '.join(e['variables'])}")
    for v in e["variables"]:
        if v in values:
            continue
        if v not in given:
            raise ValueError(f"{e['model']} is priced by {v} too; pass {v}=VALUE")
        values[v] = float(given[v]) if v == "batch_size" else _number(given[v], v)
    for v, at in fixed.items():
        if v in given and float(given[v]) != float(at):
            what = "batch" if v == "batch_size" else v
            raise ValueError(f"{e['model']} was measured at {v.replace('_', ' ')} {at:g} only; the card cannot "
                             f"price {what} {given[v]}: measure two or more {v.replace('_', ' ')}s for a model "
                             f"of it, or use {what}={at:g}")
    return values


def price(card: dict, model: str, input_len, output_len, batch: int = 1, gpu: str | None = None,
          engine: str | None = None, **variables) -> tuple[float, float, float, bool]:
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
    **variables
        Any other variable the entry declares (e.g. ``power_cap_w=300``), by name.

    Returns
    -------
    (joules, low, high, extrapolated)
        Energy per request :math:`E(i, o, B) / B` [J], the card's interval (level in
        ``card["level"]``), and whether a variable lies outside the ranges measured.
    """
    e = entry(card, model, gpu, engine)
    values = _values(e, input_len, output_len, batch, variables)
    b = float(_count(batch, "batch"))
    est = energy(e, e["coefficients"], values)
    names = [t["name"] for t in e["terms"]]
    n = len(e["draws"][names[0]])
    samples = sorted(energy(e, {k: e["draws"][k][j] for k in names}, values) for j in range(n))
    tail = (1 - card["level"]) / 2
    low, high = min(_quantile(samples, tail), est), max(_quantile(samples, 1 - tail), est)
    if not all(map(math.isfinite, (est, low, high))):
        raise ValueError(f"the energy of {model[:60]!r} at input_len {input_len}, output_len {output_len}, batch "
                         f"{batch} overflows (the card's coefficients are too large); write the card again with: "
                         "energykit export DATA -o card.json")
    checked = {**{k: float(v) for k, v in e.get("fixed", {}).items()}, **values, "batch_size": b}
    outside = any(not (lo <= checked[v] <= hi) for v, (lo, hi) in e["ranges"].items() if v in checked)
    return est / b, low / b, high / b, outside


def o_star(card: dict, model: str, input_len, batch: int = 1, gpu: str | None = None,
           engine: str | None = None, **variables) -> float:
    """Output length that minimises energy per output token at this input length and batch [tokens].

    :math:`o^* = \\sqrt{A / C}` with ``A`` the terms without and ``C`` the coefficient of the terms with
    ``o²``; ``inf`` where ``C = 0``. Cap ``max_tokens`` at it to stay near the sweet spot.
    """
    e = entry(card, model, gpu, engine)
    values = _values(e, input_len, 1, batch, variables)
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
