"""Every interval the kit reports: how it is computed, when it is "n/a" or "unbounded", how it reads.

One home for intervals. A quantity derived from a fit (θ, energy, ``o*``, a ratio, a saving) gets its
95 % interval as percentiles over the fit's bootstrap draws (:func:`estimate_interval`, widened to
contain the estimate); a table carries it in three columns ``x``, ``x_low``, ``x_high`` (the one
column convention); and a report shows it as ``est [low, high]`` (:func:`format_interval`), where
NaN reads "n/a" and an infinite or absurd upper bound reads "unbounded" (:func:`bounded_high`).
"""

from __future__ import annotations

import numpy as np

__all__ = ["LEVEL", "UNBOUNDED_FACTOR", "IDENTIFIED_SHARE", "interval", "around", "estimate_interval", "identified",
           "bounded_high", "fmt", "format_interval"]

UNBOUNDED_FACTOR = 1e6
"""A reported interval bound more than this factor from its estimate reads "unbounded" (tables, heatmaps)."""
IDENTIFIED_SHARE = 0.5
"""A coefficient on its θ ≥ 0 bound in the fit, or in at least this share of bootstrap draws, is not identified."""

LEVEL = 0.95
"""Confidence level of every interval the kit reports."""


def interval(samples, level: float = LEVEL, axis: int = 0):
    """Percentile interval of ``samples`` along ``axis``: (low, high).

    Quantiles are sample values (no interpolation), so infinite draws (``o*`` where θ4 = 0) stay
    infinite instead of turning into NaN.
    """
    a = (1 - level) / 2
    q = dict(axis=axis, method="inverted_cdf")
    return np.nanquantile(samples, a, **q), np.nanquantile(samples, 1 - a, **q)


def identified(estimate: float, draws) -> bool:
    """Whether a coefficient under θ ≥ 0 is identified: fitted off its bound, and off it in most draws.

    >>> identified(0.3, [0.2, 0.4, 0.0]), identified(0.0, [0.2, 0.4, 0.5]), identified(0.3, [0.0, 0.0, 0.4])
    (True, False, False)
    """
    return bool(estimate > 0.0 and np.mean(np.asarray(draws) <= 0.0) < IDENTIFIED_SHARE)


def bounded_high(estimate, low, high):
    """The upper bound of an interval, NaN where it is infinite or more than :data:`UNBOUNDED_FACTOR`
    times the estimate (or the lower bound, when that is larger): such a bound is reported as "unbounded".

    >>> bounded_high(np.array([4.2, 0.0, 4.2]), np.array([3.4, 0.0, 3.4]), np.array([5.0, 3.0, 1.02e15]))
    array([ 5.,  3., nan])
    """
    est, lo, hi = (np.asarray(x, dtype=float) for x in (estimate, low, high))
    scale = np.maximum(np.abs(est), np.where(np.isfinite(lo), np.abs(lo), 0.0))
    absurd = ~np.isfinite(hi) | ((scale > 0) & (hi > UNBOUNDED_FACTOR * scale))
    return np.where(absurd, np.nan, hi)


def around(estimate, low, high):
    """Extend a percentile interval to contain the point estimate.

    Where a coefficient sits on its θ ≥ 0 bound the bootstrap distribution is one-sided and its
    percentile interval can miss the estimate; the reported interval then reaches the estimate.
    """
    return np.minimum(low, estimate), np.maximum(high, estimate)




def estimate_interval(estimate, samples, level: float = LEVEL, axis: int = 0):
    """``(estimate, low, high)``: the percentile interval of ``samples`` along ``axis``, widened to
    contain the estimate (:func:`interval`, :func:`around`) — the interval of every reported quantity.

    >>> [float(x) for x in estimate_interval(1.0, np.array([2.0, 3.0, 4.0]), level=0.5)]
    [1.0, 1.0, 4.0]
    """
    return (estimate, *around(estimate, *interval(samples, level, axis)))


def fmt(value, digits: int = 4) -> str:
    """One number for a report table: ``digits`` significant figures, "n/a" for NaN, "unbounded" for ±inf.

    >>> fmt(1234.5678), fmt(0.000123456), fmt(float("nan")), fmt(float("inf")), fmt(16)
    ('1235', '0.0001235', 'n/a', 'unbounded', '16')
    """
    if isinstance(value, (bool, np.bool_)):
        return "yes" if value else "no"
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    if not isinstance(value, (float, np.floating)):
        return str(value)
    v = float(value)
    if np.isnan(v):
        return "n/a"
    if np.isinf(v):
        return "unbounded"
    return f"{v:.{digits}g}"


def format_interval(est, low, high, digits: int = 4) -> str:
    """``est [low, high]`` as a report reads it: "n/a" for a NaN estimate, "unbounded" for an upper
    bound that :func:`bounded_high` rejects.

    >>> format_interval(0.0, 0.0, 3.015), format_interval(4.2, 3.4, 1.02e15), format_interval(float("nan"), 1, 2)
    ('0 [0, 3.015]', '4.2 [3.4, unbounded]', 'n/a')
    """
    if not np.isfinite(est):
        return fmt(est, digits)
    top = float(bounded_high(est, low, high))  # NaN where the bound is absurd
    return f"{fmt(est, digits)} [{fmt(low, digits)}, {'unbounded' if np.isnan(top) else fmt(top, digits)}]"
