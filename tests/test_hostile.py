"""Hostile input (issue 18): nothing a params file, a dataset or a model name holds can run code,
overwrite a file or silently change a result. One class per class of attack; each case ends in
exit 0 or 2 with one line, and nothing outside the output folder is written.
"""

import json
import os
import sys
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from energykit import cli
from energykit.errors import DataError, EnergykitError, FitError, ParamsError

from conftest import TINY, synthetic_frame, tiny_params as _params

def _write(path, obj):
    path.write_text(obj if isinstance(obj, str) else yaml.safe_dump(obj))
    return path


def _run(argv, capsys):
    """The CLI in-process: (exit code, stderr); a traceback would fail the test by propagating."""
    rc = cli.main([str(a) for a in argv])
    err = capsys.readouterr().err
    return rc, err


def _one_line_error(rc, err):
    assert rc == 2, err
    lines = [l for l in err.splitlines() if l.startswith("energykit: error:")]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def _files(root: Path) -> dict:
    return {p: p.read_bytes() for p in root.rglob("*") if p.is_file() and not p.is_symlink()}


class TestShellInjection:
    """A newline in a params value or a CLI value never reaches the Slurm batch script."""

    @pytest.mark.parametrize("over", [{"output": "out\ntouch /tmp/pwned"}, {"plan_timing": "x\rnohup"},
                                      {"models": ["tiny\n"]}])
    def test_params_with_control_characters_are_refused(self, tmp_path, capsys, over):
        path = _write(tmp_path / "p.yaml", _params(**over))
        line = _one_line_error(*_run(["plan", path, "--shards", "1"], capsys))
        assert "control character" in line

    @pytest.mark.parametrize("opt", [["--partition", "gpu\n#SBATCH --wrap=id"], ["--partition", "a;id"],
                                     ["--folder", "logs\nid"], ["--container-python", "python3; touch pwned"]])
    def test_submit_values_are_checked_before_anything_is_submitted(self, tmp_path, capsys, opt):
        pytest.importorskip("submitit")
        path = _write(tmp_path / "p.yaml", _params(output=str(tmp_path / "out")))
        line = _one_line_error(*_run(["submit", path, "--shards", "2", *opt], capsys))
        assert opt[0] in line
        assert not (tmp_path / "out").exists()

    def test_submitit_quotes_what_remains_allowed(self, tmp_path):
        """Shell metacharacters (not control characters) in a folder stay text: submitit 1.5's
        ``_make_sbatch_string`` shlex-quotes every value (submitit/slurm/slurm.py); run its script with a fake srun."""
        import shlex
        import subprocess

        slurm = pytest.importorskip("submitit.slurm.slurm")
        folder = tmp_path / "logs $(touch pwned) `touch pwned2`"
        command = " ".join([shlex.quote(sys.executable), "-u -m submitit.core._submit", shlex.quote(str(folder))])
        script = tmp_path / "job.sh"
        script.write_text(slurm._make_sbatch_string(command=command, folder=folder, partition="gpu"))
        (tmp_path / "bin").mkdir()
        (tmp_path / "bin" / "srun").write_text("#!/bin/sh\nexit 0\n")
        (tmp_path / "bin" / "srun").chmod(0o755)
        subprocess.run(["bash", str(script)], cwd=tmp_path, capture_output=True,
                       env=dict(os.environ, PATH=f"{tmp_path / 'bin'}:{os.environ['PATH']}"))
        assert not (tmp_path / "pwned").exists() and not (tmp_path / "pwned2").exists()

    def test_submit_without_slurm_is_one_line(self, tmp_path, capsys, monkeypatch):
        pytest.importorskip("submitit")
        monkeypatch.setenv("PATH", str(tmp_path))  # no srun, no sbatch
        path = _write(tmp_path / "p.yaml", _params(output=str(tmp_path / "out")))
        assert "srun/sbatch are not on PATH" in _one_line_error(*_run(["submit", path, "--shards", "2"], capsys))

    def test_submit_where_sbatch_fails_is_one_line(self, tmp_path, capsys, monkeypatch):
        """Slurm installed but no controller reachable: sbatch's own message, one line, exit 2 (was a traceback)."""
        pytest.importorskip("submitit")
        from submitit.slurm import slurm

        monkeypatch.setattr(slurm.SlurmExecutor, "affinity", classmethod(lambda cls: 1))
        (tmp_path / "bin").mkdir()
        for name, body in (("srun", "exit 0"),
                           ("sbatch", "echo 'sbatch: fatal: Could not establish a configuration source' >&2; exit 1")):
            (tmp_path / "bin" / name).write_text(f"#!/bin/sh\n{body}\n")
            (tmp_path / "bin" / name).chmod(0o755)
        monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}:{os.environ['PATH']}")
        path = _write(tmp_path / "p.yaml", _params(output=str(tmp_path / "out")))
        line = _one_line_error(*_run(["submit", path, "--shards", "2",
                                      "--container-image", "nvcr.io/nvidia/tensorrt-llm/release:1.2.0"], capsys))
        assert "sbatch refused" in line and "Could not establish a configuration source" in line


class TestHtmlEscaping:
    """A model named like HTML shows as text in the key-results boxes and in index.html."""

    EVIL = "<img src=x onerror=alert(1)>"

    def test_markdown_is_escaped_outside_math(self):
        from energykit.iotools import escape_markdown

        out = escape_markdown(f"**{self.EVIL}** [x](javascript:alert(1)) $o < o^*$ &amp;")
        assert "<img" not in out and "javascript:" not in out
        assert "$o < o^*$" in out and "&amp;" in out and "&amp;amp;" not in out

    def test_index_shows_the_name_as_text(self, tmp_path):
        import nbformat

        from energykit.report import write_index

        nb = nbformat.v4.new_notebook()
        cell = nbformat.v4.new_code_cell("")
        cell.outputs = [nbformat.v4.new_output("display_data", data={"text/markdown": f"### Key results\n- {self.EVIL}: 3 J"},
                                               metadata={"energykit_key_results": {}})]
        nb.cells.append(cell)
        nbformat.write(nb, tmp_path / "02_fit.ipynb")
        page = write_index(tmp_path, [("02_fit", "fits")], Path("params/report.yaml")).read_text()
        assert "<img src=x" not in page and "&lt;img src=x onerror=alert(1)&gt;" in page

    def test_report_pages_show_displayed_names_as_text(self, tmp_path):
        import nbformat

        from energykit.report import to_html

        nb = nbformat.v4.new_notebook()
        cell = nbformat.v4.new_code_cell("")
        cell.outputs = [nbformat.v4.new_output("display_data", data={"text/markdown": f"**{self.EVIL}**: $o < 2$"})]
        nb.cells.append(cell)
        nbformat.write(nb, tmp_path / "06_x.ipynb")
        for page in to_html(tmp_path / "06_x.ipynb", tmp_path):
            assert "<img src=x" not in page.read_text()

    def test_key_results_box_escapes(self, monkeypatch):
        from energykit import summary

        shown = []
        monkeypatch.setattr(summary, "display", lambda obj, metadata=None: shown.append(obj.data))
        summary.show(f"- model {self.EVIL}", {})
        assert "<img" not in shown[0] and "&lt;img" in shown[0]


class TestPathTraversal:
    """A model name becomes a folder name only when it is plain, and the folder stays under the output."""

    @pytest.mark.parametrize("name", ["../..", "/abs/dir", "a/b", ".hidden", "x\ny"])
    def test_inline_names_must_be_plain(self, name):
        from energykit.presets import resolve

        with pytest.raises(ParamsError, match="plain name|control character"):
            resolve(dict(TINY, name=name))

    @pytest.mark.parametrize("output", [".", "..", "notes", "./notes/"])
    def test_output_is_a_new_empty_or_kit_folder(self, tmp_path, capsys, monkeypatch, output):
        """``output: .`` (the spelling of "" the empty check missed), ``..`` or a folder of the user's files
        would get windows.jsonl, .lock and measurements.nc among them (``output: /`` wrote them into /)."""
        (tmp_path / "work" / "notes").mkdir(parents=True)
        (tmp_path / "work" / "notes" / "measurements.nc").write_text("mine")
        monkeypatch.chdir(tmp_path / "work")
        path = _write(tmp_path / "work" / "p.yaml", _params(output=output))
        before = _files(tmp_path)
        line = _one_line_error(*_run(["measure", path, "--no-progress"], capsys))
        assert "did not write" in line and _files(tmp_path) == before

    def test_trtllm_config_dir_stays_under_its_workdir(self, tmp_path):
        from energykit.engines.trtllm import TrtLlmEngine

        victim = tmp_path / "victim"
        victim.mkdir()
        eng = TrtLlmEngine("../victim", dict(TINY), workdir=str(tmp_path / "out" / "checkpoints"))
        with pytest.raises(ParamsError, match="outside"):
            eng._config_dir()
        assert not (victim / "config.json").exists()


class TestSymlinks:
    """A lock, log or temp file planted as a symlink is never written through."""

    @pytest.fixture
    def planted(self, tmp_path):
        """A victim file outside an empty output folder: (victim, out)."""
        victim = tmp_path / "victim.txt"
        victim.write_text("precious")
        out = tmp_path / "out"
        out.mkdir()
        return victim, out

    def test_symlinked_lock_is_refused_and_the_target_kept(self, planted):
        from energykit.state import WriterLock

        victim, out = planted
        (out / ".lock").symlink_to(victim)
        with pytest.raises(EnergykitError, match="symbolic link"):
            WriterLock(out).acquire()
        assert victim.read_text() == "precious"

    def test_state_temp_files_and_log_do_not_follow_links(self, planted):
        from energykit.state import RawLog, atomic_write_json

        victim, out = planted
        (out / ".provenance.json.tmp").symlink_to(victim)
        atomic_write_json(out / "provenance.json", {"a": 1})
        assert json.loads((out / "provenance.json").read_text()) == {"a": 1}
        (out / "windows.jsonl").symlink_to(victim)
        with pytest.raises(EnergykitError, match="symbolic link"):
            RawLog(out / "windows.jsonl")
        assert victim.read_text() == "precious"


    @pytest.mark.parametrize("target", ["secret", "missing"])
    def test_links_in_a_previous_reports_folder_are_left_out(self, tmp_path, target):
        """A link in the reports folder: its target's content was copied into the new pages (a secret published),
        or, dangling, stopped the build with a Python list as its message."""
        from energykit.report import copy_previous

        (tmp_path / "secret").write_text("ssh key")
        out = tmp_path / "reports"
        (out / "sub").mkdir(parents=True)
        (out / "02_fit.html").write_text("old page")
        (out / "notes.html").symlink_to(tmp_path / target)
        (out / "sub" / "index.html").symlink_to(tmp_path / target)
        copy_previous(out, tmp_path / "stage")
        assert (tmp_path / "stage" / "02_fit.html").read_text() == "old page"
        assert not (tmp_path / "stage" / "notes.html").exists() and not (tmp_path / "stage" / "notes.html").is_symlink()
        assert not (tmp_path / "stage" / "sub" / "index.html").is_symlink()
        assert not (tmp_path / "stage" / "sub" / "index.html").exists()


class TestBoundedParams:
    """Params files are bounded in size, alias expansion and planned windows; odd encodings are one line."""

    def test_billion_laughs(self, tmp_path, capsys):
        lol = ["a: &a [lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
        for k in range(1, 9):
            prev = chr(ord("a") + k - 1)
            lol.append(f"{chr(ord('a') + k)}: &{chr(ord('a') + k)} [{', '.join(['*' + prev] * 9)}]")
        path = _write(tmp_path / "p.yaml", "\n".join(lol) + "\nengine: hf\n")
        line = _one_line_error(*_run(["plan", path, "--shards", "1"], capsys))
        assert "aliases" in line and len(line) < 400

    @pytest.mark.parametrize("over, match", [({"repeats": 10**11}, "over"), ({"repeats": 300_000}, "windows"),
                                             ({"input_lens": list(range(1, 3001)), "output_lens": list(range(1, 3001))},
                                              "windows"),
                                             ({"warmup": 10**6}, "warmup")])
    def test_planned_windows_are_bounded(self, tmp_path, capsys, over, match):
        line = _one_line_error(*_run(["plan", _write(tmp_path / "p.yaml", _params(**over)), "--shards", "1"], capsys))
        assert match in line

    @pytest.mark.parametrize("content", [
        "engine: hf\n".encode("utf-16"),
        b"engine: !!binary aGVsbG8=\n",
        b"engine: " + b"[" * 5000 + b"]" * 5000 + b"\n",
        b"engine: 2020-01-01\n",
        b"# " + b"x" * (1 << 20) + b"\n",
    ], ids=["utf16", "binary", "deep", "date", "huge"])
    def test_odd_files_are_one_line(self, tmp_path, capsys, content):
        path = tmp_path / "p.yaml"
        path.write_bytes(content)
        _one_line_error(*_run(["plan", path, "--shards", "1"], capsys))

    @pytest.mark.parametrize("text, match", [
        ("repeats: 3\n", "written twice"),  # PyYAML kept the last 'repeats' silently
        ("seed: 1" + "0" * 40 + "\n", "seed"),  # failed only after the model loaded ('model failed to load')
        ("min_window_s: 1.0e+300\n", "min_window_s"),  # a window that never ends
    ], ids=["duplicate-key", "huge-seed", "huge-min-window"])
    def test_duplicate_keys_and_huge_numbers(self, tmp_path, capsys, text, match):
        p = {k: v for k, v in _params().items() if k not in ("seed", "min_window_s")} | {"repeats": 2}
        path = _write(tmp_path / "p.yaml", yaml.safe_dump(p) + text)
        assert match in _one_line_error(*_run(["plan", path, "--shards", "1"], capsys))

    def test_long_validation_values_are_cut(self, tmp_path, capsys):
        line = _one_line_error(*_run(["plan", _write(tmp_path / "p.yaml", _params(dtype="x" * 100_000)), "--shards",
                                      "1"], capsys))
        assert len(line) < 500


class TestNoOverwrite:
    """No command replaces its own input or a file the kit did not write."""

    def test_fit_save_onto_its_data(self, synthetic_csv, capsys):
        before = synthetic_csv.read_bytes()
        line = _one_line_error(*_run(["fit", synthetic_csv, "--save", synthetic_csv], capsys))
        assert "input" in line and synthetic_csv.read_bytes() == before

    def test_fit_save_onto_a_foreign_file_or_into_a_missing_folder(self, synthetic_csv, tmp_path, capsys):
        notes = tmp_path / "notes.nc"
        notes.write_text("my notes")
        assert "not a NetCDF" in _one_line_error(*_run(["fit", synthetic_csv, "--save", notes], capsys))
        assert notes.read_text() == "my notes"
        assert "does not exist" in _one_line_error(*_run(["fit", synthetic_csv, "--save", tmp_path / "no" / "f.nc"],
                                                         capsys))

    def test_merge_onto_a_shard_log(self, tmp_path, capsys):
        out = _shard(tmp_path / "out", "m", 0)
        before = (out / "windows.jsonl").read_bytes()
        _one_line_error(*_run(["merge", out, "-o", out / "windows.jsonl"], capsys))
        assert (out / "windows.jsonl").read_bytes() == before

    @pytest.mark.parametrize("case", ["fit-onto-measurements", "merge-onto-fits", "input-by-repo-root-spelling"])
    def test_other_kinds_and_other_spellings_are_kept(self, synthetic_csv, tmp_path, capsys, monkeypatch, case):
        """A fit never replaces a measurements NetCDF (nor merge a fit file), and the data named relative to the
        repository root (as the readers find it) is the same input as its absolute path."""
        from energykit import iotools
        from energykit.dataset import from_frame, write_netcdf

        meas = write_netcdf(from_frame(synthetic_frame(repeats=1)), tmp_path / "repo" / "data" / "m.nc")
        if case == "fit-onto-measurements":
            victim, argv = meas, ["fit", synthetic_csv, "--save", meas, "--cv-folds", "2"]
        elif case == "merge-onto-fits":
            victim = tmp_path / "fits.nc"
            assert cli.main(["fit", str(synthetic_csv), "--save", str(victim), "--cv-folds", "2"]) == 0
            capsys.readouterr()
            victim, argv = victim, ["merge", _shard(tmp_path / "out", "m", 0), "-o", victim]
        else:
            monkeypatch.setattr(iotools.checks, "REPO_ROOT", tmp_path / "repo")
            (tmp_path / "elsewhere").mkdir()
            monkeypatch.chdir(tmp_path / "elsewhere")
            victim, argv = meas, ["fit", "data/m.nc", "--save", meas, "--cv-folds", "2"]
        before = victim.read_bytes()
        _one_line_error(*_run(argv, capsys))
        assert victim.read_bytes() == before

    def test_report_out_onto_a_file(self, tmp_path, capsys):
        victim = tmp_path / "victim.txt"
        victim.write_text("precious")
        line = _one_line_error(*_run(["report", "--out", victim], capsys))
        assert "--out" in line and victim.read_text() == "precious"


def _shard(folder: Path, model: str, k: int, num_layers: int = 2, engine="hf", transformers="5.0", windows=2,
           shard_name=None) -> Path:
    """A shard folder as the sweep writes it: log, fingerprint and provenance (no GPU, no torch)."""
    f = folder if shard_name is None else folder / shard_name
    f.mkdir(parents=True, exist_ok=True)
    geom = {k_: v for k_, v in dict(TINY, num_layers=num_layers).items() if k_ != "name"}
    setup = {"engine": engine, "dtype": "float32", "meter": "none", "min_window_s": 0.0, "device": "cpu",
             "compile": True, "attention": "sdpa", "backend": "pytorch", "chunked_prefill": False,
             "tensor_parallel_size": 1, "gpu_uuids": [f"GPU-{k}"], "libraries": {"torch": "2.0"}, "max_len": 20}
    (f / "fingerprint.json").write_text(json.dumps({"setup": setup, "models": {model: {"geometry": geom,
                                                                                       "checkpoint": None}}}))
    prov = {"meter": {"gpu_uuid": f"GPU-{k}"}, "energykit_commit": "abc",
            "engines": {model: {"engine": engine, "transformers": transformers, "compile": True, "attention": "sdpa"}}}
    (f / "provenance.json").write_text(json.dumps(prov))
    with open(f / "windows.jsonl", "a") as log:
        for r in range(windows):
            log.write(json.dumps({"model": model, "batch_size": 2, "input_len": 8, "output_len": 4, "repeat": r,
                                  "energy_j": 10.0 + r, "duration_s": 0.1, "output_tokens": 4, "engine": engine,
                                  "gpu": "none", "dtype": "float32", "status": "ok",
                                  "time": f"2026-01-01T00:00:0{k}{r}"}) + "\n")
    return f


class TestMergeIdentity:
    """merge refuses shards of different setups, naming the field, and keeps every shard's provenance."""

    def test_different_geometry_is_refused_naming_the_field(self, tmp_path, capsys):
        _shard(tmp_path / "out", "m", 0, num_layers=2, shard_name="shard-0-of-2")
        _shard(tmp_path / "out", "m", 1, num_layers=4, shard_name="shard-1-of-2")
        line = _one_line_error(*_run(["merge", tmp_path / "out", "-o", tmp_path / "m.nc"], capsys))
        assert "num_layers 2 -> 4" in line and not (tmp_path / "m.nc").exists()

    @pytest.mark.parametrize("case", ["power-limit", "field-only-in-the-first-shard"])
    def test_fields_beyond_the_fingerprint_are_compared(self, tmp_path, capsys, case):
        """Shards at different power limits (the merged attrs kept only the first's), and a setup field that the
        second shard lacks (the comparison ran one way only), merged with exit 0."""
        a = _shard(tmp_path / "out", "a", 0, shard_name="shard-0-of-2")
        b = _shard(tmp_path / "out", "b", 1, shard_name="shard-1-of-2")
        if case == "power-limit":
            for f, watts in ((a, 700.0), (b, 400.0)):
                prov = json.loads((f / "provenance.json").read_text())
                prov["meter"].update(gpu_name="NVIDIA H200", power_limit_w=watts)
                (f / "provenance.json").write_text(json.dumps(prov))
            field = "power_limit_w"
        else:
            fp = json.loads((b / "fingerprint.json").read_text())
            del fp["setup"]["attention"]
            (b / "fingerprint.json").write_text(json.dumps(fp))
            field = "attention"
        line = _one_line_error(*_run(["merge", tmp_path / "out", "-o", tmp_path / "m.nc"], capsys))
        assert field in line and not (tmp_path / "m.nc").exists()

    @pytest.mark.parametrize("line", [b'"<img src=x onerror=alert(1)>"', b'"caf\xe9"', b'"m2"'],
                             ids=["html", "latin1", "other-model"])
    def test_windows_of_a_model_the_fingerprint_does_not_list(self, tmp_path, capsys, line):
        """A log line of a model absent from the folder's fingerprint (pasted from another sweep, edited, or not
        UTF-8) merged with exit 0: its setup was never checked."""
        f = _shard(tmp_path / "out", "m", 0)
        with open(f / "windows.jsonl", "ab") as log:
            log.write(b'{"model": ' + line + b', "batch_size": 2, "input_len": 8, "output_len": 4, "repeat": 0, '
                      b'"energy_j": 1.0, "duration_s": 0.1, "status": "ok", "time": "t"}\n')
        line = _one_line_error(*_run(["merge", f, "-o", tmp_path / "m.nc"], capsys))
        assert "does not list" in line and not (tmp_path / "m.nc").exists()

    def test_different_dtype_against_the_params_is_refused(self, tmp_path, capsys):
        _shard(tmp_path / "out", "tiny", 0, shard_name="shard-0-of-1")
        params = _write(tmp_path / "p.yaml", _params(dtype="bfloat16", attention="sdpa", output=str(tmp_path / "out"),
                                                     input_lens=[8, 16], output_lens=[4]))
        line = _one_line_error(*_run(["merge", tmp_path / "out", "-o", tmp_path / "m.nc", "--params", params], capsys))
        assert "dtype: 'float32' -> 'bfloat16'" in line

    def test_merge_equals_the_unsharded_run_in_data_and_provenance(self, tmp_path):
        from energykit import dataset, sweep

        _shard(tmp_path / "sharded", "a", 0, shard_name="shard-0-of-2")
        _shard(tmp_path / "sharded", "b", 1, transformers="5.0", shard_name="shard-1-of-2")
        whole = tmp_path / "whole"
        _shard(whole, "a", 0)
        _shard(whole, "b", 1)  # one folder, both models: the provenance holds both engines
        prov = json.loads((whole / "provenance.json").read_text())
        prov["engines"]["a"] = json.loads((tmp_path / "sharded" / "shard-0-of-2" / "provenance.json").read_text()
                                          )["engines"]["a"]
        (whole / "provenance.json").write_text(json.dumps(prov))
        merged = dataset.load(sweep.merge([tmp_path / "sharded"], tmp_path / "m.nc")[0])
        unsharded = dataset.load(sweep.finalize(whole))
        assert merged.attrs["engine_versions"] == unsharded.attrs["engine_versions"]
        assert set(merged.attrs["engine_versions"]) == {"a", "b"}
        assert list(merged["engine"].values) == list(unsharded["engine"].values)
        np.testing.assert_array_equal(dataset.to_frame(merged)["energy_j"], dataset.to_frame(unsharded)["energy_j"])


class TestStaleFit:
    """A fit file is tied to its data's content: a changed data file refuses the stale fit."""

    def test_changed_data_refuses_the_fit(self, tmp_path, monkeypatch):
        from energykit.dataset import load
        from energykit.fit import fit_dataset, load_fits

        monkeypatch.chdir(tmp_path)
        df = synthetic_frame(repeats=1)
        df.to_csv("d.csv", index=False)
        fit_dataset(load("d.csv"), cv_folds=2).save("f.nc", n_draws=20, source={"data": ["d.csv"]})
        load_fits("f.nc", data=["d.csv"])  # unchanged: accepted
        df.assign(energy_j=df["energy_j"] * 3).to_csv("d.csv", index=False)
        with pytest.raises(FitError, match="other data"):
            load_fits("f.nc", data=["d.csv"])

    @pytest.mark.parametrize("case", ["fit-of-one-model", "same-size-other-content", "touched-same-content"])
    def test_report_fit_file_routes(self, tmp_path, monkeypatch, case):
        """The report's fit_file: a fit made with --model of one model (the other model vanished from every page,
        exit 0), data rewritten at the same size (refused), data touched with its content unchanged (accepted)."""
        from energykit.dataset import load_many
        from energykit.params import ReportParams
        from energykit.report import fit_once

        monkeypatch.chdir(tmp_path)
        df = pd.concat([synthetic_frame(repeats=1, model="a"), synthetic_frame(repeats=1, model="b", seed=1)])
        df.to_csv("d.csv", index=False)
        argv = ["fit", "d.csv", "--save", "f.nc", "--cv-folds", "2"] + (["--model", "a"] if case == "fit-of-one-model"
                                                                         else [])
        assert cli.main(argv) == 0
        if case == "same-size-other-content":
            text = Path("d.csv").read_text()
            Path("d.csv").write_text(text.replace("\na,", "\nA,"))  # same size, one model renamed
            assert len(Path("d.csv").read_text()) == len(text) and Path("d.csv").read_text() != text
        elif case == "touched-same-content":
            os.utime("d.csv", (1, 1))
        params = ReportParams(data=["d.csv"], cv_folds=2, fit_file="f.nc")
        run = lambda: fit_once(params, load_many(params.data), tmp_path / "staged.nc", tmp_path)
        if case == "touched-same-content":
            run()
        else:
            with pytest.raises(FitError, match="other data|no fit of model 'b'"):
                run()

    def test_fit_file_without_draws_is_one_line(self, tmp_path):
        import xarray as xr

        from energykit.fit import FITS_FORMAT, FITS_VERSION, load_fits

        xr.Dataset(attrs={"format": FITS_FORMAT, "version": FITS_VERSION}).to_netcdf(tmp_path / "f.nc",
                                                                                   engine="h5netcdf")
        with pytest.raises(FitError, match="lacks"):
            load_fits(tmp_path / "f.nc")


class TestSchemas:
    """Lengths, energies, names and geometries are checked where they enter: tidy files, NetCDF, presets,
    config.json; --json is strict JSON; the fingerprint holds the static-cache size."""

    def _csv(self, tmp_path, **cols):
        df = synthetic_frame(repeats=1)
        for k, v in cols.items():
            df[k] = v
        path = tmp_path / "d.csv"
        df.to_csv(path, index=False)
        return path

    def test_lengths_must_be_positive_integers_not_booleans(self, tmp_path):
        from energykit.dataset import load

        rows = synthetic_frame(repeats=1).to_dict("records")
        rows[0]["input_len"] = True
        path = tmp_path / "d.jsonl"
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
        with pytest.raises(DataError, match="input_len"):
            load(path)

    def test_netcdf_lengths_and_energies(self, tmp_path):
        from energykit.dataset import from_frame, load, write_netcdf

        ds = from_frame(synthetic_frame(repeats=1))
        for change, match in ((lambda d: d.assign_coords(input_len=-d["input_len"]), "input_len"),
                              (lambda d: d.assign_coords(output_len=d["output_len"] + 0.5), "output_len"),
                              (lambda d: d.assign(energy_j=d["energy_j"] * 0), "not positive")):
            path = write_netcdf(change(ds), tmp_path / "d.nc")
            with pytest.raises(DataError, match=match):
                load(path)

    def test_zero_energy_is_refused_and_scale_is_warned(self, tmp_path):
        from energykit.dataset import load

        with pytest.raises(DataError, match="not positive"):
            load(self._csv(tmp_path, energy_j=0.0))
        df = synthetic_frame(repeats=1)
        df["energy_j"] *= 1e-16
        df.to_csv(tmp_path / "s.csv", index=False)
        with pytest.warns(UserWarning, match="median window energy"):
            load(tmp_path / "s.csv")

    @pytest.mark.parametrize("fmt", ["csv", "nc"])
    def test_one_enormous_window_is_refused(self, tmp_path, fmt):
        """One window of 1e308 J overflowed the fit's squares (theta1 off by 30 %), exit 0 with numpy warnings."""
        from energykit.dataset import from_frame, load, write_netcdf

        df = synthetic_frame(repeats=1)
        df.loc[3, "energy_j"] = 1e308
        path = tmp_path / f"d.{fmt}"
        df.to_csv(path, index=False) if fmt == "csv" else write_netcdf(from_frame(df), path)
        with pytest.raises(DataError, match="1e\\+308"):
            load(path)

    def test_model_names_are_one_per_model(self, tmp_path):
        from energykit.dataset import load

        df = pd.concat([synthetic_frame(repeats=1, model="llama"), synthetic_frame(repeats=1, model="Llama ")])
        df.to_csv(tmp_path / "d.csv", index=False)
        with pytest.raises(DataError, match="differ only"):
            load(tmp_path / "d.csv")

    @pytest.mark.parametrize("change, match", [({"num_layers": -4}, "num_layers"), ({"num_kv_heads": 0}, "num_kv_heads"),
                                               ({"num_kv_heads": 3}, "divide"), ({"hidden_size": 32.5}, "hidden_size"),
                                               ({"num_heads": True}, "num_heads"), ({"vocab_size": 10**9}, "vocab")])
    def test_geometries_everywhere(self, tmp_path, change, match):
        from energykit.dataset import from_frame, load, write_netcdf
        from energykit.presets import resolve

        geom = dict(TINY, **change)
        with pytest.raises(ParamsError, match=match):
            resolve(geom)
        cfg = {"model_type": "llama", "hidden_size": geom["hidden_size"], "num_attention_heads": geom["num_heads"],
               "num_key_value_heads": geom["num_kv_heads"], "num_hidden_layers": geom["num_layers"],
               "vocab_size": geom["vocab_size"], "intermediate_size": 64}
        (tmp_path / "m").mkdir()
        (tmp_path / "m" / "config.json").write_text(json.dumps(cfg))
        with pytest.raises(ParamsError, match=match):
            resolve(str(tmp_path / "m"))
        if isinstance(change.get("num_heads"), bool):
            return  # a CSV has no booleans
        cols = {k: v for k, v in geom.items() if k not in ("name", "max_position_embeddings")}
        with pytest.raises(DataError, match=match):
            load(self._csv(tmp_path, **cols))
        df = synthetic_frame(repeats=1).assign(**{k: v for k, v in cols.items() if k != "arch"})
        path = write_netcdf(from_frame(df), tmp_path / "g.nc")
        with pytest.raises(DataError, match=match):
            load(path)

    def test_fit_json_is_strict(self, tmp_path, capsys):
        rc = cli.main(["fit", str(self._csv(tmp_path)), "--json", "--cv-folds", "2"])
        out = capsys.readouterr().out
        assert rc == 0
        json.loads(out, parse_constant=lambda c: pytest.fail(f"{c} is not JSON"))

    def test_params_cells_output_and_cache_size(self, tmp_path):
        from energykit.params import MeasureParams
        from energykit.sweep import fingerprint

        with pytest.raises(ValueError, match="listed twice"):
            MeasureParams.model_validate(_params(cells=[[8, 2], [8, 2]]))
        with pytest.raises(ValueError, match="empty"):
            MeasureParams.model_validate(_params(output=""))
        short = fingerprint(MeasureParams.model_validate(_params()), {})
        longer = fingerprint(MeasureParams.model_validate(_params(input_lens=[8, 16, 32])), {})
        assert short["setup"]["max_len"] == 20 and longer["setup"]["max_len"] == 36
        # a folder written before the cache size was recorded: its params.json tells it
        from energykit.sweep import allocation_of, fingerprint_difference

        old = {"setup": {k: v for k, v in short["setup"].items() if k != "max_len"}, "models": short["models"]}
        assert fingerprint_difference(old, longer) == []  # unknown: not refused blindly
        old["setup"].update(allocation_of(_params()))
        assert fingerprint_difference(old, longer) == ["max_len: 20 -> 36"]


class TestOneLineErrors:
    """What used to be a traceback is one line that says what to do."""

    def test_slurm_task_id_not_a_number(self, monkeypatch):
        from energykit.shards import shard_from_env

        monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "abc")
        monkeypatch.setenv("SLURM_ARRAY_TASK_COUNT", "4")
        with pytest.raises(ParamsError, match="SLURM_ARRAY_TASK_ID"):
            shard_from_env()

    def test_log_lines_without_dimensions(self, tmp_path, capsys):
        out = _shard(tmp_path / "out", "m", 0)
        with open(out / "windows.jsonl", "a") as f:
            f.write(json.dumps({"model": "m", "status": "ok", "energy_j": 1}) + "\n")
        assert "lacks batch_size" in _one_line_error(*_run(["merge", out, "-o", tmp_path / "m.nc"], capsys))

    def test_long_paths_and_deep_json(self, tmp_path, capsys):
        _one_line_error(*_run(["fit", tmp_path / ("x" * 300 + ".csv")], capsys))
        deep = tmp_path / "d.jsonl"
        deep.write_text("[" * 100_000 + "]" * 100_000 + "\n")
        _one_line_error(*_run(["fit", deep], capsys))


# --- fuzz ---------------------------------------------------------------------------------------

TEXT = st.text(alphabet=st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=12)
VALUE = st.recursive(st.none() | st.booleans() | st.integers(-10**12, 10**12) | st.floats(allow_nan=True) | TEXT,
                     lambda inner: st.lists(inner, max_size=4) | st.dictionaries(TEXT, inner, max_size=3),
                     max_leaves=8)
KEYS = ["engine", "models", "dtype", "batch_sizes", "input_lens", "output_lens", "cells", "repeats", "output",
        "min_window_s", "meter", "warmup", "plan_timing", "device", "attention", "seed"]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(over=st.dictionaries(st.sampled_from(KEYS), VALUE, max_size=4), drop=st.sets(st.sampled_from(KEYS), max_size=2))
def test_fuzz_params_exit_0_or_2_and_write_nothing_outside(tmp_path_factory, over, drop):
    root = tmp_path_factory.mktemp("fuzz")
    p = _params(output=str(root / "out"))
    p.update(over)
    for k in drop:
        p.pop(k, None)
    path = root / "p.yaml"
    path.write_text(yaml.safe_dump(p, allow_unicode=True))
    before = _files(root)
    rc = cli.main(["plan", str(path), "--shards", "2", "--json"])
    assert rc in (0, 2)
    assert _files(root) == before


ROW = st.fixed_dictionaries({
    "model": st.one_of(st.sampled_from(["a", "b"]), TEXT, st.integers(), st.booleans()),
    "batch_size": st.one_of(st.integers(-2, 64), st.booleans(), st.floats(allow_nan=True), TEXT),
    "input_len": st.one_of(st.sampled_from([64, 256, 1024, 4096]), st.integers(-5, 10**9), st.booleans(),
                           st.floats(allow_nan=True)),
    "output_len": st.one_of(st.sampled_from([16, 64, 256]), st.integers(-5, 10**9), st.floats(allow_nan=True)),
    "repeat": st.integers(-1, 3),
    "energy_j": st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.integers(-1, 10**6), TEXT),
    "duration_s": st.one_of(st.floats(min_value=-1, max_value=100), st.just(float("nan")), st.just(1.0)),
})


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rows=st.lists(ROW, min_size=1, max_size=12), fmt=st.sampled_from(["csv", "jsonl"]))
def test_fuzz_dataset_rows_exit_0_or_2_and_write_nothing(tmp_path_factory, rows, fmt):
    root = tmp_path_factory.mktemp("fuzz")
    good = synthetic_frame(repeats=1).to_dict("records")
    data = root / f"d.{fmt}"
    allrows = good + rows
    if fmt == "csv":
        pd.DataFrame(allrows).to_csv(data, index=False)
    else:
        data.write_text("".join(json.dumps(r, default=str) + "\n" for r in allrows))
    before = _files(root)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        rc = cli.main(["fit", str(data), "--json", "--cv-folds", "2"])
    assert rc in (0, 2)
    assert _files(root) == before


# --- issue 27: the price card, merge, NetCDF readers, container submission and reports -----------------------------

def _card(n_draws=5):
    """A small well-formed price card, as ``energykit export`` writes it (energykit.fit.price_card), by hand."""
    terms = [("theta1", ["input_len", "input_len"]), ("theta2", ["input_len", "output_len"]), ("theta3", ["input_len"]),
             ("theta4", ["output_len", "output_len"]), ("theta5", ["output_len"]), ("theta0", [])]
    coef = {"theta1": 1e-6, "theta2": 2e-5, "theta3": 1e-3, "theta4": 1e-5, "theta5": 0.05, "theta0": 5.0}
    return {"schema": "energykit-price-card", "schema_version": 1, "level": 0.95, "loss": "l1", "models": [{
        "model": "m", "gpu": "H200", "engine": "hf", "kind": "sweetspot",
        "variables": {"input_len": {}, "output_len": {}},
        "terms": [{"name": n, "factors": f} for n, f in terms],
        "coefficients": coef, "draws": {k: [v * (1 + 0.01 * j) for j in range(n_draws)] for k, v in coef.items()},
        "batch_sizes": [16], "ranges": {"input_len": [64.0, 4096.0], "output_len": [16.0, 1024.0],
                                        "batch_size": [16.0, 16.0]}}]}


def _set(card, path, value):
    obj = card
    for k in path[:-1]:
        obj = obj[k]
    obj[path[-1]] = value
    return card


class TestPriceCard:
    """price.py checks a card whole in load_card, and every price/o_star argument; one-line ValueErrors."""

    @pytest.mark.parametrize("path,value,field", [
        (("models", 0, "coefficients", "theta1"), float("nan"), "theta1"),
        (("models", 0, "coefficients", "theta0"), -1.0, "theta0"),
        (("models", 0, "coefficients", "theta2"), "1e-5", "theta2"),
        (("models", 0, "coefficients", "theta2"), True, "theta2"),
        (("models", 0, "draws", "theta3"), [1e-3] * 4, "draws of theta3"),
        (("models", 0, "draws", "theta4"), [1e-5, float("inf"), 1e-5, 1e-5, 1e-5], "draws of theta4"),
        (("level",), 1.5, "level"), (("level",), 0, "level"), (("level",), "0.95", "level"),
        (("models", 0, "ranges", "input_len"), [4096.0, 64.0], "reversed"),
        (("models", 0, "ranges", "tokens"), [1.0, 2.0], "unknown variable"),
        (("models", 0, "terms", 0, "factors"), ["input_len", "heads"], "unknown factor"),
        (("models", 0, "terms", 0, "factors"), "input_len", "factors"),
        (("models", 0, "batch_sizes"), [0], "batch_sizes"), (("models", 0, "batch_sizes"), [], "batch_sizes"),
        (("models", 0, "model"), 7, "model"), (("models",), "m", "models"), (("models",), [], "models"),
        (("models", 0), ["m"], r"models\[0\]"), (("schema_version",), 3, "version"),
    ])
    def test_a_bad_card_is_refused_naming_the_field(self, tmp_path, path, value, field):
        from energykit import price

        card = _set(_card(), path, value)
        (tmp_path / "card.json").write_text(json.dumps(card))
        with pytest.raises(ValueError, match=field) as e:
            price.load_card(tmp_path / "card.json")
        assert "\n" not in str(e.value)
        with pytest.raises(ValueError, match=field):  # a card built by hand, never loaded, is checked too
            price.price(card, "m", 512, 128, 16)

    @pytest.mark.parametrize("text", ["[1, 2]", '"card"', "{", "\xff\xfe", "{\"schema\": \"energykit-price-card\", "
                                      "\"schema_version\": 1}", "1" * 5000, "[" * 100000])
    def test_a_malformed_file_is_one_value_error(self, tmp_path, text):
        from energykit import price

        (tmp_path / "card.json").write_bytes(text.encode("latin-1"))
        with pytest.raises(ValueError, match="card"):
            price.load_card(tmp_path / "card.json")

    def test_a_fifo_card_is_refused_without_blocking(self, tmp_path):
        from energykit import price

        os.mkfifo(tmp_path / "card.json")
        with pytest.raises(ValueError, match="not a regular file"):
            price.load_card(tmp_path / "card.json")

    @pytest.mark.parametrize("args", [(-1, 128, 16), (512, -5, 16), (512, 128, -16), (512, 128, 0), (512, 128, 1.5),
                                      (512, 128, True), (float("nan"), 128, 16), (float("inf"), 1, 16),
                                      (10**400, 1, 16), (512.0, 128, 16), ("512", 128, 16), (512, None, 16),
                                      (np.bool_(True), 1, 16), (512, 10**7 + 1, 16)])
    def test_price_arguments_are_integers_from_one(self, args):
        from energykit import price

        card = _card()
        with pytest.raises(ValueError, match="must be an integer from 1"):
            price.price(card, "m", *args)
        if not (type(args[0]) is int and args[0] == 512 and type(args[2]) is int and args[2] == 16):
            with pytest.raises(ValueError, match="must be an integer from 1"):
                price.o_star(card, "m", args[0], args[2])

    def test_numpy_integers_price_as_ints(self):
        from energykit import price

        card = _card()
        assert price.price(card, "m", np.int64(512), np.int32(128), np.int64(16)) == price.price(card, "m", 512, 128, 16)

    @settings(max_examples=150, deadline=None)
    @given(where=st.sampled_from([("level",), ("models", 0, "coefficients", "theta1"), ("models", 0, "draws", "theta0"),
                                  ("models", 0, "ranges", "output_len"), ("models", 0, "terms", 1),
                                  ("models", 0, "variables"), ("models", 0, "batch_sizes"), ("models", 0, "gpu")]),
           value=st.recursive(st.none() | st.booleans() | st.floats() | st.integers() | st.text(max_size=5),
                              lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=5), c, max_size=3),
                              max_leaves=6),
           i=st.integers(1, 10**7), o=st.integers(1, 10**7))
    def test_fuzz_a_card_either_is_refused_or_prices_finite(self, where, value, i, o):
        from energykit import price

        card = _set(_card(), where, value)
        try:
            price.check_card(card)
        except ValueError as e:
            assert "\n" not in str(e)
            return
        j, lo, hi, _ = price.price(card, "m", i, o, 16)
        assert all(np.isfinite([j, lo, hi])) and 0 <= lo <= j <= hi


def _nc(tmp_path, name, mutate):
    import xarray as xr

    ds = xr.load_dataset(Path(__file__).resolve().parents[1] / "data" / "h200_hf_energykit" / "measurements.nc")
    ds = mutate(ds)
    ds.to_netcdf(tmp_path / name, engine="h5netcdf")
    return tmp_path / name


class TestReadersBoundAndValidate:
    """Every reader checks sizes, duplicates, dtypes and the file's kind before it allocates or blocks."""

    def test_huge_compressed_arrays_are_refused_from_the_header(self, tmp_path, capsys):
        import h5py

        with h5py.File(tmp_path / "big.nc", "w") as f:
            f.create_dataset("energy_j", shape=(30000, 30000), dtype="f8", compression="gzip", chunks=(1000, 1000))
        assert (tmp_path / "big.nc").stat().st_size < 100_000
        for argv in (["fit", tmp_path / "big.nc"], ["design", tmp_path / "big.nc", "--budget", "8"]):
            assert "header declares" in _one_line_error(*_run(argv, capsys))
        from energykit.fit import load_fits

        with pytest.raises(FitError, match="header declares"):
            load_fits(tmp_path / "big.nc")

    @pytest.mark.parametrize("dim", ["input_len", "output_len", "model"])
    def test_a_repeated_coordinate_value_is_refused(self, tmp_path, capsys, dim):
        def dup(ds):
            v = ds[dim].values.copy()
            v[1] = v[0]
            return ds.assign_coords({dim: v})

        line = _one_line_error(*_run(["fit", _nc(tmp_path, "dup.nc", dup)], capsys))
        assert "twice" in line

    @pytest.mark.parametrize("var,kind", [("energy_j", str), ("energy_j", bool), ("duration_s", str)])
    def test_energies_and_durations_must_be_numbers(self, tmp_path, capsys, var, kind):
        def retype(ds):
            units = ds[var].attrs["units"]
            ds[var] = (ds[var] > 0) if kind is bool else ds[var].astype(str)
            ds[var].attrs["units"] = units
            return ds

        line = _one_line_error(*_run(["fit", _nc(tmp_path, "t.nc", retype)], capsys))
        assert var in line and ("text" in line or "booleans" in line)

    @pytest.mark.parametrize("suffix,argv", [
        (".nc", ["fit", "{}"]), (".csv", ["fit", "{}"]), (".jsonl", ["design", "{}", "--budget", "8"]),
        (".csv", ["export", "{}", "-o", "card.json"]), ("config.json", ["predict", "--calibrate", "DATA",
                                                                         "--geometry", "{}"])])
    def test_a_fifo_is_refused_by_every_reader(self, tmp_path, capsys, suffix, argv):
        fifo = tmp_path / f"data{suffix}" if suffix.startswith(".") else tmp_path / suffix
        os.mkfifo(fifo)
        data = Path(__file__).resolve().parents[1] / "data" / "h200_hf_energykit" / "measurements.nc"
        argv = [str(a).replace("{}", str(fifo)).replace("DATA", str(data)) for a in argv]
        argv = [str(tmp_path / a) if a == "card.json" else a for a in argv]
        line = _one_line_error(*_run(argv, capsys))
        assert "not a regular file" in line

    def test_a_fifo_as_plan_timing_or_window_log_is_refused(self, tmp_path, capsys):
        os.mkfifo(tmp_path / "timing.csv")
        path = _write(tmp_path / "p.yaml", _params(output=str(tmp_path / "out"), plan_timing=str(tmp_path / "timing.csv")))
        assert "not a regular file" in _one_line_error(*_run(["plan", path, "--shards", "2"], capsys))
        (tmp_path / "sweep").mkdir()
        os.mkfifo(tmp_path / "sweep" / "windows.jsonl")
        assert "not a regular file" in _one_line_error(*_run(["status", tmp_path / "sweep"], capsys))

    @pytest.mark.parametrize("text", ['"num_key_value_heads": NaN', '"num_hidden_layers": Infinity',
                                      '"max_position_embeddings": 1e400', '"vocab_size": -Infinity'])
    def test_non_finite_geometry_in_a_config_is_refused(self, tmp_path, capsys, text):
        cfg = {"model_type": "llama", "hidden_size": 2048, "num_attention_heads": 32, "num_hidden_layers": 16,
               "vocab_size": 128256}
        body = json.dumps(cfg)[:-1] + ", " + text + "}"
        (tmp_path / "m").mkdir()
        (tmp_path / "m" / "config.json").write_text(body)
        data = Path(__file__).resolve().parents[1] / "data" / "h200_hf_energykit" / "measurements.nc"
        line = _one_line_error(*_run(["predict", "--calibrate", data, "--geometry", tmp_path / "m"], capsys))
        assert "config.json" in line

    @pytest.mark.parametrize("fmt", ["csv", "jsonl", "log"])
    @pytest.mark.parametrize("column", ["energy_j", "batch_size", "duration_s"])
    def test_integers_of_hundreds_of_digits_are_one_line(self, tmp_path, capsys, fmt, column):
        """pandas and float() overflow on an integer of 400 digits; the checks name the value instead."""
        row = {"model": "a", "batch_size": 1, "input_len": 64, "output_len": 16, "repeat": 0, "energy_j": 5,
               "duration_s": 1}
        huge = "1" + "0" * 400
        if fmt == "log":
            f = _shard(tmp_path / "out", "m", 0)
            text = (f / "windows.jsonl").read_text()
            key = {"energy_j": '"energy_j": 10.0', "duration_s": '"duration_s": 0.1', "batch_size": '"batch_size": 2'}[column]
            (f / "windows.jsonl").write_text(text.replace(key, key.split(":")[0] + ": " + huge, 1))
            argv = ["merge", f, "-o", tmp_path / "m.nc"]
        else:
            body = (",".join(row) + "\n" + ",".join(huge if k == column else str(v) for k, v in row.items()) + "\n"
                    if fmt == "csv" else json.dumps(row).replace(f'"{column}": {row[column]}', f'"{column}": {huge}') + "\n")
            (tmp_path / f"d.{fmt}").write_text(body)
            argv = ["fit", tmp_path / f"d.{fmt}"]
        line = _one_line_error(*_run(argv, capsys))
        assert column in line and len(line) < 400

    @pytest.mark.parametrize("argv", [["--input-lens", "1" + "0" * 400], ["--output-lens", "100000000"],
                                      ["--batch-size", "1" + "0" * 30]])
    def test_lengths_beyond_ten_million_are_usage_errors(self, capsys, argv):
        data = Path(__file__).resolve().parents[1] / "data" / "h200_hf_energykit" / "measurements.nc"
        with pytest.raises(SystemExit) as e:
            cli.main(["predict", str(data), *argv])
        assert e.value.code == 2 and "over 1e+07" in capsys.readouterr().err


class TestMergeValidatesRecords:
    """merge and status check every completed window as the readers do, and refuse damaged state in one line."""

    @pytest.mark.parametrize("field,value,what", [("energy_j", -5.0, "not positive"), ("energy_j", 0, "not positive"),
                                                  ("energy_j", "12", "not a number"), ("energy_j", True, "not a number"),
                                                  ("energy_j", 1e13, "over"), ("energy_j", None, "not a number"),
                                                  ("duration_s", -1, "duration_s"), ("duration_s", "1", "duration_s"),
                                                  ("output_tokens", -3, "output_tokens")])
    def test_a_bad_window_is_refused_naming_its_line(self, tmp_path, capsys, field, value, what):
        f = _shard(tmp_path / "out", "m", 0)
        lines = (f / "windows.jsonl").read_text().splitlines()
        rec = json.loads(lines[1])
        rec[field] = value
        lines[1] = json.dumps(rec)
        (f / "windows.jsonl").write_text("\n".join(lines) + "\n")
        line = _one_line_error(*_run(["merge", f, "-o", tmp_path / "m.nc"], capsys))
        assert "line 2" in line and what in line and not (tmp_path / "m.nc").exists()

    @pytest.mark.parametrize("name,text", [("fingerprint.json", "[1]"), ("fingerprint.json", '{"setup": 1, "models": {}}'),
                                           ("fingerprint.json", '{"setup": {}, "models": {"m": []}}'),
                                           ("fingerprint.json", '{"setup": {"libraries": 3}, "models": {}}'),
                                           ("provenance.json", '{"meter": "x"}'),
                                           ("provenance.json", '{"engines": {"m": 1}}'),
                                           ("provenance.json", '{"meter": {"power_limit_w": "700"}}'),
                                           ("provenance.json", "{\"meter"), ("provenance.json", "\xff")])
    def test_damaged_state_files_are_one_line_in_merge(self, tmp_path, capsys, name, text):
        f = _shard(tmp_path / "out", "m", 0)
        (f / name).write_bytes(text.encode("latin-1"))
        line = _one_line_error(*_run(["merge", f, "-o", tmp_path / "m.nc"], capsys))
        assert name in line and not (tmp_path / "m.nc").exists()

    @pytest.mark.parametrize("text", ['{"windows": [1, 2]}', '{"windows": "abc"}', '{"windows": [["m", 2, 8]]}',
                                      '{"windows": [["m", true, 8, 4, 0]]}', "[]"])
    def test_damaged_shard_json_is_one_line_in_status(self, tmp_path, capsys, text):
        f = _shard(tmp_path / "out", "m", 0)
        (f / "shard.json").write_text(text)
        assert "shard.json" in _one_line_error(*_run(["status", f], capsys))


class TestOutputMarkers:
    """The kit replaces only files carrying its own marker; each writer has its own temp file."""

    @pytest.mark.parametrize("text", ['{"schema": "mine"}', '{"schema": null, "x": 1}', '["schema"]',
                                      '{"notes": "schema"}', '{"schema": "energykit-price-card-v2"}'])
    def test_export_never_replaces_a_json_that_is_not_a_card(self, tmp_path, capsys, text, synthetic_csv):
        victim = tmp_path / "card.json"
        victim.write_text(text)
        line = _one_line_error(*_run(["export", synthetic_csv, "-o", victim], capsys))
        assert "not a price card" in line and victim.read_text() == text

    def test_export_replaces_its_own_card(self, tmp_path, capsys, synthetic_csv):
        card = tmp_path / "card.json"
        card.write_text(json.dumps(_card()))
        assert _run(["export", synthetic_csv, "-o", card], capsys)[0] == 0
        assert json.loads(card.read_text())["models"][0]["model"] != "m"

    @pytest.mark.parametrize("argv", [["fit", "DATA", "--save", "OUT"]])
    def test_an_hdf5_file_without_the_kit_marker_is_never_replaced(self, tmp_path, capsys, argv, synthetic_csv):
        import h5py

        victim = tmp_path / "mine.nc"
        with h5py.File(victim, "w") as f:
            f.attrs["title"] = "energykit energy_j fits"  # words in the text are no marker
            f["x"] = np.arange(3)
        before = victim.read_bytes()
        argv = [str(synthetic_csv) if a == "DATA" else str(victim) if a == "OUT" else a for a in argv]
        assert "not a NetCDF file written by energykit" in _one_line_error(*_run(argv, capsys))
        assert victim.read_bytes() == before

    def test_merge_never_replaces_a_foreign_hdf5(self, tmp_path, capsys):
        import h5py

        f = _shard(tmp_path / "out", "m", 0)
        with h5py.File(tmp_path / "m.nc", "w") as h:
            h["x"] = np.arange(3)
        before = (tmp_path / "m.nc").read_bytes()
        _one_line_error(*_run(["merge", f, "-o", tmp_path / "m.nc"], capsys))
        assert (tmp_path / "m.nc").read_bytes() == before

    def test_each_writer_has_its_own_temp_file_and_leaves_none(self, tmp_path):
        import threading

        from energykit.state import atomic_write_text, temp_path

        a, b = temp_path(tmp_path / "x.json"), temp_path(tmp_path / "x.json")
        assert a != b and a.name.startswith(".x.json.") and a.name.endswith(".tmp")
        a.unlink()
        b.unlink()
        texts = [json.dumps({"writer": k, "pad": "x" * 200_000}) for k in range(8)]
        threads = [threading.Thread(target=atomic_write_text, args=(tmp_path / "x.json", t)) for t in texts]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert (tmp_path / "x.json").read_text() in texts  # one writer's whole text, never a mix
        assert [p.name for p in tmp_path.iterdir()] == ["x.json"]

    def test_a_full_disk_is_one_line_before_h5py_writes(self, tmp_path, capsys, synthetic_csv, monkeypatch):
        import shutil as _shutil

        from energykit import state

        monkeypatch.setattr(state.shutil, "disk_usage", lambda p: _shutil._ntuple_diskusage(10**9, 10**9 - 10, 10))
        line = _one_line_error(*_run(["fit", synthetic_csv, "--save", tmp_path / "f.nc"], capsys))
        assert "free" in line and sorted(p.name for p in tmp_path.iterdir()) == ["synthetic.csv"]

    def test_the_catalog_lists_finished_sets_and_never_replaces_a_users_index(self, tmp_path):
        from energykit import report

        reports = tmp_path / "reports"
        done, building, foreign = reports / "a", reports / ".b.building-1-x", reports / "c"
        for d in (done, building, foreign):
            d.mkdir(parents=True)
        for d in (done, building):
            (d / report.BUILD_FILE).write_text(json.dumps({"format": report.REPORT_FORMAT, "label": d.name}))
            (d / "index.html").write_text("pages")
        (foreign / report.BUILD_FILE).write_text('{"label": "not ours"}')
        (foreign / "index.html").write_text("x")
        page = report.write_catalog(reports).read_text()
        assert 'href="a/index.html"' in page and "building" not in page and 'href="c/' not in page
        (reports / "index.html").write_text("<h1>my own index, energykit reports</h1>")
        assert report.write_catalog(reports) is None
        assert (reports / "index.html").read_text() == "<h1>my own index, energykit reports</h1>"

    def test_report_out_refuses_a_folder_the_kit_did_not_build(self, tmp_path, capsys):
        (tmp_path / "site").mkdir()
        (tmp_path / "site" / "index.html").write_text("my site")
        line = _one_line_error(*_run(["report", "--out", tmp_path / "site", "--only", "02_fit"], capsys))
        assert "did not build" in line and (tmp_path / "site" / "index.html").read_text() == "my site"


class TestContainerPaths:
    """Every folder reaching apptainer --bind or pyxis --container-mounts is checked for their separators."""

    @pytest.mark.parametrize("tool", ["container_image", "apptainer"])
    @pytest.mark.parametrize("folder", ["/tmp/out,/etc:/mnt", "/tmp/o:x", "/tmp/a,b", "/tmp/x\u202eq"])
    def test_a_separator_in_a_mounted_folder_is_refused(self, tmp_path, tool, folder):
        from energykit.submit import container_launch

        sif = tmp_path / "img.sif"
        sif.write_text("")
        kw = {"container_image": "nvcr.io/nvidia/tensorrt-llm/release:1.0"} if tool == "container_image" \
            else {"apptainer": str(sif)}
        with pytest.raises(EnergykitError, match="cannot be mounted|control character"):
            container_launch([str(tmp_path), folder], **kw)

    @pytest.mark.parametrize("opt", [["--container-image", ""], ["--apptainer", ""], ["--container-image", " "]])
    def test_an_empty_image_is_refused_not_run_on_the_host(self, tmp_path, capsys, opt):
        pytest.importorskip("submitit")
        path = _write(tmp_path / "p.yaml", _params(output=str(tmp_path / "out")))
        line = _one_line_error(*_run(["submit", path, "--shards", "2", *opt], capsys))
        assert "empty" in line and not (tmp_path / "out").exists()

    def test_the_apptainer_bind_of_a_comma_output_is_refused_end_to_end(self, tmp_path, capsys):
        pytest.importorskip("submitit")
        (tmp_path / "img.sif").write_text("")
        (tmp_path / "params").mkdir()  # the output is outside the params folder and the working directory
        path = _write(tmp_path / "params" / "p.yaml", _params(output=str(tmp_path / "o,") + "/etc:/mnt"))
        line = _one_line_error(*_run(["submit", path, "--shards", "2", "--apptainer", tmp_path / "img.sif"], capsys))
        assert "apptainer (--bind)" in line


class TestDesignScales:
    """design scores every candidate at once beyond a size, with the same choices as the reference search."""

    @pytest.mark.parametrize("n,budget,seed", [(300, 30, 0), (500, 12, 1), (200, 40, 2)])
    def test_the_scalable_search_chooses_as_the_reference(self, monkeypatch, n, budget, seed):
        from energykit import design

        rng = np.random.default_rng(seed)
        cells = np.unique(np.c_[rng.integers(16, 8192, n), rng.integers(16, 4096, n)], axis=0)
        exact = design.d_optimal(cells, budget)
        monkeypatch.setattr(design, "EXACT_SEARCH_LIMIT", 0)
        fast = design.d_optimal(cells, budget)

        def logdet(chosen):
            cand = np.asarray(sorted({tuple(c) for c in cells}))
            rows = design._rows(np.asarray(chosen), design.DECODE_TO_PREFILL_COST)
            scale = cand.max(axis=0) / np.asarray(chosen).max(axis=0)
            return design._logdet(rows), scale

        assert logdet(fast)[0] >= logdet(exact)[0] - 1e-6 * abs(logdet(exact)[0])

    @pytest.mark.slow
    def test_sixty_thousand_cells_at_budget_one_hundred_finish(self, tmp_path, capsys):
        i = np.repeat(np.arange(16, 16 + 300 * 16, 16), 200)
        o = np.tile(np.arange(8, 8 + 200 * 8, 8), 300)
        e = 1e-6 * i ** 2 + 2e-5 * i * o + 1e-3 * i + 1e-5 * o ** 2 + 0.05 * o + 5
        pd.DataFrame(dict(model="big", batch_size=1, input_len=i, output_len=o, repeat=0, energy_j=e,
                          duration_s=0.1)).to_csv(tmp_path / "big.csv", index=False)
        rc = cli.main(["design", str(tmp_path / "big.csv"), "--budget", "100", "--json"])
        out = json.loads(capsys.readouterr().out)
        assert rc == 0 and len(out["models"]["big"]["cells"]) == 100


class TestInterrupts:
    """SIGINT/SIGTERM end a command with one line, and what was half-written is removed."""

    @pytest.mark.parametrize("signum", [2, 15])
    def test_a_signal_while_saving_fits_leaves_no_temp_file(self, tmp_path, capsys, monkeypatch, signum,
                                                              synthetic_csv):
        import signal

        import xarray as xr

        real = xr.Dataset.to_netcdf

        def interrupted(self, path, *a, **k):
            real(self, path, *a, **k)
            os.kill(os.getpid(), signum)

        monkeypatch.setattr(xr.Dataset, "to_netcdf", interrupted)
        rc, err = _run(["fit", synthetic_csv, "--save", tmp_path / "f.nc"], capsys)
        assert rc == 128 + signum and f"interrupted ({signal.Signals(signum).name})" in err
        assert len(err.strip().splitlines()) == 1 and sorted(p.name for p in tmp_path.iterdir()) == ["synthetic.csv"]
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # the handlers are given back


class TestReportPaths:
    """A relative --params is the working directory's file, and a build touches nothing beside --out."""

    def test_a_relative_params_from_another_folder_is_that_folders_file(self, tmp_path, capsys, monkeypatch):
        (tmp_path / "params").mkdir()
        (tmp_path / "params" / "report.yaml").write_text("label: [unclosed\n")  # the repository's file is valid
        monkeypatch.chdir(tmp_path)
        line = _one_line_error(*_run(["report", "--params", "params/report.yaml", "--out", "x"], capsys))
        assert str(tmp_path / "params" / "report.yaml") in line and not (tmp_path / "x").exists()

    @pytest.mark.slow
    @pytest.mark.parametrize("signame", ["SIGINT", "SIGTERM"])
    def test_a_signal_during_a_build_is_one_line_and_leaves_no_temporary_folder(self, tmp_path, signame):
        """nbclient kills the kernel on a signal while a notebook runs (a DeadKernelError): still one line."""
        import signal
        import subprocess
        import time

        reports = tmp_path / "reports"
        reports.mkdir()
        (reports / "index.html").write_text("<h1>mine</h1>")
        root = Path(__file__).resolve().parents[1]
        p = subprocess.Popen([sys.executable, "-m", "energykit", "report", "--out", str(reports / "new"), "--only",
                              "02_fit"], cwd=root, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             start_new_session=True)
        for line in p.stdout:  # the fit is done and the notebook runs
            if line.startswith("fitted once"):
                break
        time.sleep(3)
        p.send_signal(getattr(signal, signame))
        _, err = p.communicate(timeout=120)
        lines = [l for l in err.splitlines() if l.startswith("energykit:")]
        assert p.returncode in (130, 128 + getattr(signal, signame)) and len(lines) == 1, err
        assert "interrupted" in lines[0] and "Traceback" not in err
        assert sorted(x.name for x in reports.iterdir()) == ["index.html"]
        assert (reports / "index.html").read_text() == "<h1>mine</h1>"


def test_the_kits_files_are_readable_as_any_new_file(tmp_path):
    """Each writer's own temp file (mkstemp, mode 0600) gets the usual mode before it becomes the target."""
    from energykit.state import atomic_write_text

    atomic_write_text(tmp_path / "card.json", "{}")
    mask = os.umask(0)
    os.umask(mask)
    assert (tmp_path / "card.json").stat().st_mode & 0o777 == 0o666 & ~mask


@pytest.mark.parametrize("folder", ["h100_paper_families_pilot", "h200_hf_energykit"])
def test_the_bundled_real_sweeps_pass_every_new_check(folder):
    """The stricter record, state and NetCDF checks accept what real sweeps on H100/H200 wrote."""
    from energykit import dataset, sweep
    from energykit.iotools import read_window_log

    f = Path(__file__).resolve().parents[1] / "data" / folder
    assert read_window_log(f / "windows.jsonl")[1]["records"] > 0
    if (f / "fingerprint.json").exists():
        sweep.read_fingerprint(f), sweep.read_provenance(f), sweep.read_shard(f)
    assert dataset.load(f / "measurements.nc").sizes["model"] == 2
