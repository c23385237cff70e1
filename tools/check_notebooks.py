"""Fail if a notebook is committed with outputs or execution counts (reports are build artifacts)."""

import sys

import nbformat

bad = []
for path in sys.argv[1:]:
    nb = nbformat.read(path, as_version=4)
    for cell in nb.cells:
        if cell.cell_type == "code" and (cell.get("outputs") or cell.get("execution_count")):
            bad.append(path)
            break
if bad:
    print("notebooks with outputs (strip them): " + ", ".join(bad), file=sys.stderr)
    sys.exit(1)
print(f"{len(sys.argv) - 1} notebooks clean")
