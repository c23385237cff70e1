"""The layer rules of ARCHITECTURE.md, enforced on the source (AST), and the public API."""

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ROOT

PKG = ROOT / "energykit"
LAYERS = {
    "schema": 0, "errors": 0, "paper": 0,
    "iotools": 1, "state": 1, "findings": 1, "physics": 1, "model": 1, "intervals": 1, "price": 0,
    "presets": 2, "dataset": 2, "meters": 2, "engines": 2,
    "fit": 3, "windows": 3, "params": 3,
    "uncertainty": 4, "shards": 4, "provenance": 4, "merge": 5,
    "sweetspots": 5, "design": 5, "hardware": 5,
    "workloads": 6, "summary": 6, "notebook": 6, "replay": 6,
    "plots": 7, "report": 7, "sweep": 7, "replay_run": 7,
    "testing": 8, "submit": 8,
    "cli": 9, "__main__": 10,
}
LAZY_ALLOWED = {"torch", "transformers", "tensorrt_llm", "submitit", "pynvml", "httpx"}
"""Heavy or hardware libraries that may be imported inside a function (everywhere)."""


def _modules():
    for p in sorted(PKG.rglob("*.py")):
        rel = p.relative_to(PKG).with_suffix("")
        parts = rel.parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        yield p, ".".join(parts)


def _targets(node, own: str):
    """energykit modules (dotted, relative to the package) an import statement reaches."""
    if isinstance(node, ast.Import):
        return [a.name.removeprefix("energykit.") for a in node.names if a.name.startswith("energykit")]
    if node.level == 0:
        return [node.module.removeprefix("energykit.")] if (node.module or "").startswith("energykit") else []
    base = own.split(".") if own else []
    is_pkg = (PKG / Path(*base) / "__init__.py").exists() if base else True
    anchor = base if is_pkg else base[:-1]
    anchor = anchor[: len(anchor) - (node.level - 1)] if node.level > 1 else anchor
    if node.module:
        return [".".join(anchor + node.module.split("."))]
    return [".".join(anchor + [a.name]) for a in node.names]


def _layer(mod: str) -> int:
    top = mod.split(".")[0] if mod else ""
    return LAYERS[top]


def test_every_module_has_a_layer():
    missing = [m for _, m in _modules() if m and m.split(".")[0] not in LAYERS]
    assert not missing, f"give these modules a layer in ARCHITECTURE.md and this test: {missing}"


def test_imports_run_one_way():
    bad = []
    for path, mod in _modules():
        if not mod:
            continue  # the package's __init__ (lazy re-exports only)
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if not isinstance(node, (ast.Import, ast.ImportFrom)):
                continue
            for target in _targets(node, mod):
                if target in ("", "__version__") or target.endswith(".__version__"):
                    continue  # the version constant of the package
                if target.split(".")[0] == mod.split(".")[0] and "." in target + mod:
                    continue  # inside a sub-package (engines/*)
                if _layer(target) >= _layer(mod):
                    bad.append(f"{mod} (layer {_layer(mod)}) imports {target} (layer {_layer(target)})")
    assert not bad, "\n".join(bad)


def test_no_imports_inside_functions_except_heavy_libraries_and_the_cli():
    bad = []
    for path, mod in _modules():
        if mod.split(".")[0] == "cli":
            continue
        tree = ast.parse(path.read_text())
        for fn in ast.walk(tree):
            if not isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            for node in ast.walk(fn):
                if isinstance(node, ast.Import):
                    roots = {a.name.split(".")[0] for a in node.names}
                elif isinstance(node, ast.ImportFrom):
                    roots = {"." if node.level else (node.module or "").split(".")[0]}
                else:
                    continue
                if not roots <= LAZY_ALLOWED:
                    bad.append(f"{path.relative_to(ROOT)}:{node.lineno} in {fn.name}: {sorted(roots)}")
    assert not bad, "\n".join(bad)


def test_o_star_is_computed_in_one_place():
    hits = [str(p.relative_to(ROOT)) for p, _ in _modules() if "np.sqrt(num" in p.read_text()]
    assert hits == ["energykit/model.py"]


def test_modules_state_their_public_api():
    missing = [m for p, m in _modules() if m not in ("", "__main__") and "__all__" not in p.read_text()]
    assert not missing


def test_import_is_light_and_the_api_is_lazy():
    code = ("import sys, energykit; assert 'xarray' not in sys.modules and 'numpy' not in sys.modules; "
            "import energykit as ek; f = ek.o_star; assert 'numpy' in sys.modules; print(sorted(ek.__all__)[:3])")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=3600)
    assert p.returncode == 0, p.stderr
    import energykit

    for name in energykit.__all__:
        assert getattr(energykit, name) is not None


def test_help_imports_no_science_stack():
    code = ("import sys; sys.argv = ['energykit', '--help']\nimport runpy\ntry:\n    runpy.run_module('energykit', "
            "run_name='__main__')\nexcept SystemExit:\n    pass\nheavy = [m for m in ('numpy', 'xarray', 'lmfit', "
            "'pydantic', 'matplotlib') if m in sys.modules]\nassert not heavy, heavy\n")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=3600)
    assert p.returncode == 0, p.stderr


def test_the_core_never_branches_on_an_engine_name():
    """Outside its own module, no registered engine's name, nor the name of an attention kernel an engine runs, is
    compared, switched on or used as a key (ask engines.ENGINES and the engine class)."""
    from energykit.engines import ENGINES

    names = set(ENGINES) | {a for cls in ENGINES.values() for a in cls.attentions}
    assert {"hf", "trtllm", "serve", "sdpa", "flex_attention"} <= names  # what the check covers
    own = {f"engines.{cls.__module__.rsplit('.', 1)[-1]}" for cls in ENGINES.values()}
    bad = []
    for path, mod in _modules():
        if mod in own or mod.split(".")[0] == "testing":  # an engine's own module; the fakes of its library
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.Compare, ast.Dict, ast.MatchValue, ast.Subscript)):
                hits = [c.value for c in ast.walk(node) if isinstance(c, ast.Constant) and c.value in names]
                bad += [f"{path.relative_to(ROOT)}:{node.lineno}: {h!r}" for h in hits]
    assert not bad, "\n".join(bad)


def test_no_package_module_imports_the_fakes():
    """The fakes of hardware libraries (``energykit.testing``) are for tests: no package module outside them imports them."""
    bad = []
    for path, mod in _modules():
        if not mod or mod.split(".")[0] == "testing":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                bad += [f"{path.relative_to(ROOT)}:{node.lineno}: {t}" for t in _targets(node, mod)
                        if t.split(".")[0] == "testing"]
    assert not bad, "\n".join(bad)



MAX_MODULE_LINES = 500
MAX_FUNCTION_LINES = 80
"""Sizes past which a module or a function is split (ARCHITECTURE.md, "Sizes")."""


def _sizes():
    """(module path, lines) and (path:line function, lines) of every package module and function."""
    modules, functions = [], []
    for path, _ in _modules():
        text = path.read_text()
        modules.append((str(path.relative_to(ROOT)), text.count("\n")))
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                where = f"{path.relative_to(ROOT)}:{node.lineno} {node.name}()"
                functions.append((where, node.end_lineno - node.lineno + 1))
    return modules, functions


def test_no_module_over_500_lines_and_no_function_over_80():
    modules, functions = _sizes()
    bad = [f"module {p}: {n} lines (over {MAX_MODULE_LINES})" for p, n in modules if n > MAX_MODULE_LINES]
    bad += [f"function {w}: {n} lines (over {MAX_FUNCTION_LINES})" for w, n in functions if n > MAX_FUNCTION_LINES]
    assert not bad, "split these into named pieces:\n" + "\n".join(bad)


def test_the_size_check_names_what_it_finds(tmp_path, monkeypatch):
    body = "\n".join(f"    x{k} = {k}" for k in range(90))
    (tmp_path / "big.py").write_text(f"def long_one():\n{body}\n" + "\n" * 450)
    monkeypatch.setattr(sys.modules[__name__], "_modules", lambda: [(tmp_path / "big.py", "big")])
    monkeypatch.setattr(sys.modules[__name__], "ROOT", tmp_path)
    with pytest.raises(AssertionError) as e:
        test_no_module_over_500_lines_and_no_function_over_80()
    assert "module big.py: 541 lines" in str(e.value) and "big.py:1 long_one(): 91 lines" in str(e.value)


def _documented_layers(text: str) -> dict[str, int]:
    """``{module: layer}`` from ARCHITECTURE.md's layer table (rows ``| N | `a`, `b/` | ... |``)."""
    out = {}
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) >= 2 and cells[0].isdigit():
            for name in re.findall(r"`([\w.]+)/?`", cells[1]):
                out[name] = int(cells[0])
    return out


def test_the_documented_layer_table_is_the_tested_one():
    documented = _documented_layers((ROOT / "ARCHITECTURE.md").read_text())
    differ = sorted(f"{m}: ARCHITECTURE.md {documented.get(m)}, LAYERS {LAYERS.get(m)}"
                    for m in set(documented) | set(LAYERS) if documented.get(m) != LAYERS.get(m))
    assert not differ, "the layer table and LAYERS differ:\n" + "\n".join(differ)
    assert _documented_layers("| 3 | `fit/`, `windows` | x |\n| layer | `a` | y |") == {"fit": 3, "windows": 3}


def test_the_gpu_path_imports_nothing_the_device_image_lacks():
    """A sweep on the lent GPU runs with the image's packages and the carried wheels only
    (scripts/device_image.txt): its modules must import without lmfit, papermill or the notebook stack.
    (The rehearsal in .ci/run checks the same end to end; this finds it in seconds.)"""
    spec = dict(line.split(None, 1) for line in (ROOT / "scripts" / "device_image.txt").read_text().splitlines()
                if line.strip() and not line.startswith("#"))
    carried = {s.split("==")[0] for s in spec["carry"].split()}
    missing = sorted({m.replace("-", "_") for m in spec["lacks"].split()} - {c.replace("-", "_") for c in carried})
    code = ("import sys\nimport energykit.sweep, energykit.merge, energykit.engines, energykit.engines.hf, "
            "energykit.engines.hf_decode, energykit.meters, energykit.windows, energykit.shards, energykit.cli\n"
            f"print(sorted(m for m in {missing!r} if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]", f"the GPU path imports what the device image lacks: {out.stdout.strip()}"
    assert "lmfit" in missing and "pydantic" not in missing
