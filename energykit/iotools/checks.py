"""Checks shared by the readers: paths as the repository reads them, regular files, outside text
(control characters, plain model names, Markdown escaping), geometries, and numeric columns."""

from __future__ import annotations

import json
import os
import re
import stat
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

from ..errors import DataError, ParamsError
from ..schema import DIMS

__all__ = ["KEY", "MAX_INT", "REPO_ROOT", "resolve", "check_regular_file", "TRACE_COLUMNS", "MAX_VOCAB", "MIN_ENERGY_J", "MAX_ENERGY_J", "MAX_WINDOW_ENERGY_J", "MATH", "escape_markdown", "check_text", "check_model_name", "check_geometry", "json_lines"]

KEY = DIMS
MAX_INT = 10**7
"""Largest batch size, length or repeat index accepted [1e7]: beyond it a value is a typo or an overflow."""
REPO_ROOT = Path(__file__).resolve().parents[2]
"""The checkout that holds this package (``params/``, ``data/``, ``notebooks/``) in an editable install."""


def resolve(path: str | Path) -> Path:
    """``path`` as the working directory reads it, else relative to the repository root.

    Parameter files name data relative to the repository root, while JupyterLab starts a notebook's
    kernel in ``notebooks/``; this lets a notebook find its data from any working directory. An
    absolute path, or one that exists from the working directory, is returned unchanged; one found
    nowhere is returned unchanged too, so the reader's "no such file" error names what was given.

    >>> resolve("params/report.yaml").is_file()
    True
    """
    path = Path(path)
    if path.is_absolute() or path.exists():
        return path
    candidate = REPO_ROOT / path
    return candidate if candidate.exists() else path


def check_regular_file(path: Path, what: str = "the file", max_bytes: int | None = None) -> Path:
    """Refuse, in one line, a path that is not a regular file (a FIFO would block a reader forever, a device
    never end) or is larger than ``max_bytes``; a symbolic link to a regular file is read as that file."""
    path = Path(path)
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise DataError(f"{path}: no such file; check the path") from None
    except OSError as e:
        raise DataError(f"{path}: cannot be read ({e.strerror}); check the path") from None
    if stat.S_ISDIR(st.st_mode):
        raise DataError(f"{path}: is a folder, not {what}; give the file")
    if not stat.S_ISREG(st.st_mode):
        raise DataError(f"{path}: is not a regular file (a FIFO, socket or device), not {what}; give a file")
    if max_bytes is not None and st.st_size > max_bytes:
        raise DataError(f"{path}: {st.st_size} bytes is over the {max_bytes} bytes {what} may have; "
                        "check that this is the right file")
    return path



TRACE_COLUMNS = {"ContextTokens": "input_len", "GeneratedTokens": "output_len"}
MAX_VOCAB = 1 << 22
"""Largest plausible vocabulary [tokens]; released models use 32k to 256k."""
MIN_ENERGY_J, MAX_ENERGY_J = 1e-3, 1e7
"""Plausible median energy of one measured window [J]: outside it the column's unit is likely wrong."""
MAX_WINDOW_ENERGY_J = 1e12
"""Largest energy of any one window accepted [J] (278 MWh): beyond it a value is garbage and overflows the fit."""
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029\u061c\u200b-\u200f\u202a-\u202e\u2060-\u2069\ufeff]")
"""Control characters, and the invisible ones that reorder or hide text (bidirectional overrides and isolates,
zero-width spaces and joiners, the byte-order mark): a name holding one prints as another name."""
_PLAIN_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,127}$")


MATH = re.compile(r"\$\$(.+?)\$\$|(?<![\\$])\$([^$\n]+?)\$", re.S)
"""``$$display$$`` and ``$inline$`` LaTeX in markdown cells."""


def escape_markdown(text: str) -> str:
    """Markdown whose text can hold no HTML: ``<``, ``&`` and ``>`` (but a blockquote's ``>``) outside
    ``$math$`` become entities, and ``javascript:`` links are dropped. Model names and file names reach the reports through here.

    >>> escape_markdown("**<img src=x onerror=alert(1)>**: $o < o^*$")
    '**&lt;img src=x onerror=alert(1)&gt;**: $o < o^*$'
    >>> escape_markdown("> **Simulated only.** a > b")  # a blockquote stays one
    '> **Simulated only.** a &gt; b'
    """
    out, last = [], 0
    for m in MATH.finditer(text):
        out += [_escape_text(text[last:m.start()]), m.group(0)]
        last = m.end()
    out.append(_escape_text(text[last:]))
    return "".join(out)


def _escape_text(text: str) -> str:
    text = re.sub(r"&(?!(?:lt|gt|amp|quot|#\d+);)", "&amp;", text)  # entities already escaped stay as they are
    text = text.replace("<", "&lt;")
    # a '>' opens no tag once every '<' is escaped; one at a line's start is a blockquote marker and stays
    text = re.sub(r"(?m)(?<!^)(?<!^ )(?<!^  )(?<!^   )>", "&gt;", text)
    return re.sub(r"\]\(\s*(?:javascript|data|vbscript):[^)]*\)", "](#)", text, flags=re.I)


def check_text(value: str, what: str) -> str:
    """Refuse a string with control characters (a newline would start a new line in a shell script)."""
    m = _CONTROL.search(value)
    if m:
        raise ParamsError(f"{what} {value[:60]!r} holds a control character or an invisible one "
                          f"({m.group()!r}, U+{ord(m.group()):04X}); remove it (names and paths are one line of visible text)")
    return value


def check_model_name(name: str, what: str = "model name") -> str:
    """A model name used as a folder name: letters, digits and ``. _ + -``, not starting with a dot.

    >>> check_model_name("llama3.2-1b")
    'llama3.2-1b'
    """
    if not _PLAIN_NAME.match(name):
        raise ParamsError(f"{what} {name[:60]!r} is not a plain name (letters, digits and . _ + -, at most 128, "
                          "not starting with . or -); it becomes a folder name — rename it, e.g. 'my-model-1b'")
    return name


_GEOMETRY_POSITIVE = ("num_layers", "hidden_size", "num_heads", "num_kv_heads", "head_dim", "intermediate_size")


def _as_int(v):
    """``v`` as an int when it is a whole number (not a bool), else None."""
    if isinstance(v, (bool, np.bool_)) or v is None:
        return None
    if isinstance(v, (int, np.integer)):
        return int(v)
    if isinstance(v, (float, np.floating)) and np.isfinite(v) and float(v).is_integer():
        return int(v)
    return None


def check_geometry(geom: dict, where: str) -> dict:
    """Refuse a geometry that no model has: layers, heads and sizes positive integers, KV heads dividing
    the heads, a plausible vocabulary. Missing keys and NaN (a model without geometry) are skipped.

    >>> check_geometry({"num_heads": 32, "num_kv_heads": 8}, "x")
    {'num_heads': 32, 'num_kv_heads': 8}
    """
    def present(k):
        v = geom.get(k)
        return not (v is None or (isinstance(v, (float, np.floating)) and np.isnan(v)))

    for k in _GEOMETRY_POSITIVE + ("vocab_size",):
        if present(k):
            v = _as_int(geom[k])
            hi = MAX_VOCAB if k == "vocab_size" else MAX_INT
            lo = 2 if k == "vocab_size" else 1
            if v is None or not lo <= v <= hi:
                raise ParamsError(f"{where}: {k} must be an integer from {lo} to {hi}; got {geom[k]!r} — "
                                  "copy it from the model's config.json")
    for k in ("ffn_gated", "tied_embeddings"):
        if present(k) and _as_int(geom[k]) not in (0, 1):
            raise ParamsError(f"{where}: {k} must be 0 or 1; got {geom[k]!r}")
    if present("num_heads") and present("num_kv_heads") and int(geom["num_heads"]) % int(geom["num_kv_heads"]):
        raise ParamsError(f"{where}: num_kv_heads {geom['num_kv_heads']!r} does not divide num_heads "
                          f"{geom['num_heads']!r}; every KV head serves a whole group of query heads")
    return geom


def _unit_column(df: pd.DataFrame, quantity: str, table: dict, path: str) -> str:
    """Find the one ``<quantity>_<unit>`` column and check its unit."""
    pattern = re.compile(rf"^{quantity}_([A-Za-z]+)$")
    found = [c for c in df.columns if pattern.match(c)]
    if not found:
        raise DataError(
            f"{path}: missing column '{quantity}_<unit>' (for example '{quantity}_{next(iter(table))}'); "
            f"add it with one of the units {', '.join(table)}"
        )
    if len(found) > 1:
        raise DataError(f"{path}: several {quantity} columns {found}; keep exactly one")
    unit = pattern.match(found[0]).group(1)  # case-sensitive: energy_MJ is not energy_mj
    if unit not in table:
        raise DataError(
            f"{path}: unknown unit '{unit}' in column '{found[0]}' (units are lower case and case-sensitive); use one of "
            + ", ".join(f"{quantity}_{u}" for u in table)
        )
    return found[0]


def _rows(mask: np.ndarray, first_row: int) -> str:
    idx = np.flatnonzero(mask)[:5] + first_row
    more = " …" if mask.sum() > 5 else ""
    return ", ".join(str(i) for i in idx) + more



def _number_or_nan(v) -> float:
    if isinstance(v, (bool, np.bool_)):
        return float("nan")
    try:
        return float(v)
    except OverflowError:
        return float("inf")
    except (TypeError, ValueError):
        return float("nan")


def _short(v, limit: int = 40) -> str:
    """``repr(v)``, cut to ``limit`` characters (a value of hundreds of digits stays one short line)."""
    text = repr(v)
    return text if len(text) <= limit else text[:limit] + "…"


def _numeric(col: pd.Series) -> pd.Series:
    """``pd.to_numeric(col, errors="coerce")``, with integers of hundreds of digits as ``inf`` instead of an
    OverflowError (the checks then name the row)."""
    try:
        return pd.to_numeric(col, errors="coerce")
    except OverflowError:
        return pd.Series([_number_or_nan(v) for v in col], index=col.index, dtype=float)


def _json_int(text: str):
    """A JSON integer as ``int``, or as a float (``inf`` past its range) when no int64 column could hold it, so that
    the checks name it instead of pandas overflowing."""
    n = int(text)
    if -(1 << 63) <= n < 1 << 63:
        return n
    try:
        return float(n)
    except OverflowError:
        return float("inf") if n > 0 else float("-inf")


def json_lines(path: Path, what: str, parse_int=None):
    """``(line number, object)`` of every non-blank line of a JSONL file, each a JSON object (``what``: what one
    line holds, for the error); a bad line is a one-line :class:`DataError` naming it."""
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line, parse_int=parse_int)
            except (json.JSONDecodeError, RecursionError) as e:
                raise DataError(f"{path} line {n}: not valid JSON ({getattr(e, 'msg', 'nested too deeply')}); "
                                "fix or remove that line") from None
            if not isinstance(rec, dict):
                raise DataError(f"{path} line {n}: expected a JSON object ({what}), got {type(rec).__name__}")
            yield n, rec


def _is_bool(col: pd.Series) -> np.ndarray:
    """Rows holding a boolean (JSON ``true`` is not the integer 1)."""
    if col.dtype == bool:
        return np.ones(len(col), dtype=bool)
    if col.dtype == object:
        return col.map(lambda v: isinstance(v, (bool, np.bool_))).to_numpy(dtype=bool)
    return np.zeros(len(col), dtype=bool)


def _check_model_names(models: pd.Series, name: str, first_row: int = 0) -> None:
    """Model names are one line of text, and two names may not differ only in spaces or case."""
    for m in pd.unique(models):
        try:
            check_text(str(m), "model name")
        except ParamsError as e:
            raise DataError(f"{name}: {e}") from None
    names = pd.Series(pd.unique(models)).astype(str)
    norm = names.str.strip().str.casefold()
    clash = norm.duplicated(keep=False)
    if clash.any():
        a, b = names[clash].iloc[:2]
        raise DataError(f"{name}: model names {a!r} and {b!r} differ only in spaces or case and would read as one "
                        "model; give every model one distinct name")


def _check_energy_scale(energy_j: np.ndarray, where: str) -> None:
    """Warn when the median window energy is implausible for joules (a wrong unit or a scaled column)."""
    e = energy_j[np.isfinite(energy_j) & (energy_j > 0)]
    if len(e) == 0:
        return
    med = float(np.median(e))
    if not MIN_ENERGY_J <= med <= MAX_ENERGY_J:
        warnings.warn(f"{where}: the median window energy is {med:.3g} J, outside the plausible "
                      f"{MIN_ENERGY_J:g} to {MAX_ENERGY_J:g} J of one generate() call; check the column's unit "
                      "(energy_j, energy_mj, energy_kwh, ...)", stacklevel=3)
