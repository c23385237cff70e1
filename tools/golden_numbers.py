"""Capture or check the JSON numbers of `energykit fit`, `design`, `predict` and the price card of `export` on the bundled data.

The energy model's home (energykit/model.py) must leave every number unchanged on single-batch
data: ``python tools/golden_numbers.py --write`` stored these outputs before the reshape, and
``python tools/golden_numbers.py`` (and tests/test_model.py, marked slow) checks them now: the same
JSON keys, texts and integers, and every other number equal to ``REL_TOL`` relative. Byte-identical
holds only on the machine and environment that wrote them: numpy/scipy/BLAS builds move lmfit's
standard errors by about 1e-7 to 1.5e-6 relative (seen between two venvs of this project), and the
least digits of everything else (``--exact`` compares bytes).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import math
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
GOLDEN = ROOT / "tests" / "golden"
COMMANDS = {
    "fit_h200_hf.json": ["fit", "data/h200_hf_energykit/measurements.nc", "--json"],
    "fit_h200_compiled_b16.json": ["fit", "data/h200_transformers_compiled_b16.csv", "--json"],
    "fit_h100_pilot.json": ["fit", "data/h100_paper_families_pilot/measurements.nc", "--json"],
    "design_h200_hf.json": ["design", "data/h200_hf_energykit/measurements.nc", "--budget", "8", "--json"],
    "design_h200_compiled_b16.json": ["design", "data/h200_transformers_compiled_b16.csv", "--budget", "8", "--json"],
    "predict_qwen2_1.5b.json": ["predict", "--calibrate", "data/h200_hf_energykit/measurements.nc",
                                "--geometry", "qwen2-1.5b", "--json"],
    "price_h200_hf.json": ["export", "data/h200_hf_energykit/measurements.nc", "-o", "{out}"],
}
"""Each golden file and the command whose JSON it holds (``{out}``: the file a command writes, read back)."""


def run(argv: list[str]) -> str:
    """stdout of ``energykit ARGV`` run in-process from the repo root; with ``{out}`` in ARGV, the file
    the command wrote there."""
    import os
    import tempfile

    from energykit.cli import main

    out = io.StringIO()
    cwd = os.getcwd()
    os.chdir(ROOT)
    with tempfile.TemporaryDirectory() as tmp:
        written = Path(tmp) / "out.json"
        argv = [str(written) if a == "{out}" else a for a in argv]
        try:
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(io.StringIO()):
                rc = main(argv)
        finally:
            os.chdir(cwd)
        if rc != 0:
            raise RuntimeError(f"energykit {' '.join(argv)} exited {rc}")
        return written.read_text() if str(written) in argv else out.getvalue()


REL_TOL = 1e-5
"""Numbers of a golden output may move by this much, relative, across machines and environments."""


def _first_difference(new, old, path: str = "", rel_tol: float = REL_TOL) -> str | None:
    """Where two parsed JSON values differ beyond ``rel_tol`` (numbers) or at all (anything else); None if nowhere.

    >>> _first_difference({"a": [1.0, "x"]}, {"a": [1.0000001, "x"]}) is None
    True
    >>> _first_difference({"a": [1.0, "x"]}, {"a": [1.001, "x"]})
    '/a[0]: 1.0 vs 1.001'
    >>> _first_difference({"a": 1}, {"b": 1})
    "/: keys ['a'] vs ['b']"
    """
    if isinstance(new, dict) and isinstance(old, dict):
        if list(new) != list(old):
            return f"{path or '/'}: keys {list(new)} vs {list(old)}"
        return next((d for k in new if (d := _first_difference(new[k], old[k], f"{path}/{k}", rel_tol))), None)
    if isinstance(new, list) and isinstance(old, list):
        if len(new) != len(old):
            return f"{path}: {len(new)} items vs {len(old)}"
        return next((d for k, (a, b) in enumerate(zip(new, old))
                     if (d := _first_difference(a, b, f"{path}[{k}]", rel_tol))), None)
    if isinstance(new, float) and isinstance(old, float):
        same = (math.isnan(new) and math.isnan(old)) or math.isclose(new, old, rel_tol=rel_tol, abs_tol=0.0)
        return None if same else f"{path}: {new!r} vs {old!r}"
    return None if (type(new), new) == (type(old), old) else f"{path}: {new!r} vs {old!r}"


def differences(names=None, exact: bool = False) -> dict[str, str]:
    """``{name: where it differs}`` for the golden outputs that differ now (bytes with ``exact``, else to
    :data:`REL_TOL` relative)."""
    out = {}
    for n in names or COMMANDS:
        new, old = run(COMMANDS[n]), (GOLDEN / n).read_text()
        if new == old:
            continue
        if exact:
            out[n] = "not byte-identical"
        elif (d := _first_difference(json.loads(new), json.loads(old))) is not None:
            out[n] = d
    return out


def differing(names=None, exact: bool = False) -> list[str]:
    """Names of the golden outputs that differ now (see :func:`differences`)."""
    return list(differences(names, exact))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--write", action="store_true", help="store the current outputs as the reference")
    p.add_argument("--only", action="append", choices=list(COMMANDS), help="with --write: store only this one "
                   "(a golden file added later; never rewrite one to make a check pass)")
    p.add_argument("--exact", action="store_true", help="byte for byte (the machine that wrote them), not to REL_TOL")
    args = p.parse_args()
    if args.write:
        GOLDEN.mkdir(parents=True, exist_ok=True)
        for name, argv in COMMANDS.items():
            if args.only and name not in args.only:
                continue
            (GOLDEN / name).write_text(run(argv))
            print(f"wrote tests/golden/{name}")
        return 0
    bad = differences(exact=args.exact)
    for name in COMMANDS:
        print(f"DIFFERS  {name}: {bad[name]}" if name in bad else f"{'identical' if args.exact else 'equal'}  {name}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
