"""Check the notebook sources: jupytext percent scripts with one parameters cell whose defaults equal
params/report.yaml, and no committed .ipynb with outputs (executed notebooks are build artifacts)."""

import subprocess
import sys
from pathlib import Path

import yaml

from energykit.report import notebook_defaults

root = Path(__file__).resolve().parent.parent
report = yaml.safe_load((root / "params" / "report.yaml").read_text())
bad = []
for path in map(Path, sys.argv[1:]):
    defaults = notebook_defaults(path)
    if path.stem != "01_measure":
        differ = {k: (v, report[k]) for k, v in defaults.items() if k in report and report[k] != v}
        if differ:
            bad.append(f"{path.name}: defaults differ from params/report.yaml: {differ}")
tracked = subprocess.run(["git", "ls-files", "notebooks/*.ipynb"], capture_output=True, text=True, cwd=root).stdout
if tracked.strip():
    bad.append(f"executed or paired .ipynb files are tracked (build artifacts): {tracked.split()}")
if bad:
    print("\n".join(bad), file=sys.stderr)
    sys.exit(1)
print(f"{len(sys.argv) - 1} notebook sources clean")
