"""Capture or check the JSON numbers of `energykit fit`, `design` and `predict` on the bundled data.

The energy model's home (energykit/model.py) must leave every number unchanged on single-batch
data: ``python tools/golden_numbers.py --write`` stored these outputs before the reshape, and
``python tools/golden_numbers.py`` (and tests/test_model.py, marked slow) checks they are
byte-identical now.
"""

from __future__ import annotations

import argparse
import contextlib
import io
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
}


def run(argv: list[str]) -> str:
    """stdout of ``energykit ARGV`` run in-process from the repo root."""
    import os

    from energykit.cli import main

    out = io.StringIO()
    cwd = os.getcwd()
    os.chdir(ROOT)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(io.StringIO()):
            rc = main(argv)
    finally:
        os.chdir(cwd)
    if rc != 0:
        raise RuntimeError(f"energykit {' '.join(argv)} exited {rc}")
    return out.getvalue()


def differing(names=None) -> list[str]:
    """Names of the golden outputs that are no longer byte-identical."""
    return [n for n in (names or COMMANDS) if run(COMMANDS[n]) != (GOLDEN / n).read_text()]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--write", action="store_true", help="store the current outputs as the reference")
    args = p.parse_args()
    if args.write:
        GOLDEN.mkdir(parents=True, exist_ok=True)
        for name, argv in COMMANDS.items():
            (GOLDEN / name).write_text(run(argv))
            print(f"wrote tests/golden/{name}")
        return 0
    bad = differing()
    for name in COMMANDS:
        print(f"{'DIFFERS' if name in bad else 'identical'}  {name}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
