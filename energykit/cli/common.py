"""Shared pieces of the sub-commands: strict JSON, argparse types for counts and cells."""

from __future__ import annotations

import argparse
import json
import math


__all__ = ["strict_json", "MAX_COUNT", "positive_int"]


def _finite(x: float):
    return x if math.isfinite(x) else None


def strict_json(obj, indent: int = 2) -> str:
    """``obj`` as strict JSON (RFC 8259): NaN and infinities become null, numpy scalars plain numbers.

    >>> json.loads(strict_json({"a": float("nan"), "b": [1.5, float("inf")]}))
    {'a': None, 'b': [1.5, None]}
    """
    def clean(v):
        if isinstance(v, dict):
            return {str(k): clean(x) for k, x in v.items()}
        if isinstance(v, (list, tuple)):
            return [clean(x) for x in v]
        if hasattr(v, "item") and not isinstance(v, (str, bytes)):
            v = v.item()
        if isinstance(v, float) and not math.isfinite(v):
            return None
        return v

    return json.dumps(clean(obj), indent=indent, allow_nan=False, default=str)


MAX_COUNT = 10**7
"""Largest length, batch size or count a command takes (the readers' ``iotools.MAX_INT``)."""


def positive_int(text: str) -> int:
    """argparse type: a positive integer, else argparse's one-line usage error (exit 2)."""
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer; use values such as 16, 64, 256") from None
    if v <= 0:
        raise argparse.ArgumentTypeError(f"{v} is not positive; use values such as 16, 64, 256")
    if v > MAX_COUNT:
        raise argparse.ArgumentTypeError(f"{text[:20]}… is over {MAX_COUNT:.0e}; use values such as 16, 64, 256"
                                         if len(text) > 20 else f"{v} is over {MAX_COUNT:.0e}; use values such as 16, 64, 256")
    return v


def _cell(text: str) -> tuple[int, int]:
    """``INPUT:OUTPUT`` of a command-line cell."""
    try:
        i, o = (int(x) for x in text.split(":"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"cell {text[:40]!r} is not INPUT:OUTPUT, e.g. 256:32") from None
    if not (0 < i <= MAX_COUNT and 0 < o <= MAX_COUNT):
        raise argparse.ArgumentTypeError(f"cell {text!r} needs positive lengths, e.g. 256:32")
    return i, o


def _one_line(text: str, limit: int = 2000) -> str:
    """A message as one printable line (values from files may hold newlines), at most ``limit`` characters."""
    text = " ".join(str(text).split())
    text = "".join(c if c.isprintable() else f"\\u{ord(c):04x}" for c in text)  # no bidi override reorders it
    return text if len(text) <= limit else text[:limit] + "…"
