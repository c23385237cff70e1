"""The container launch of ``energykit submit``: the srun line pyxis gets, the Apptainer command, the sbatch template.

Pyxis and Apptainer do not run here; ``tests/test_slurm.py`` submits to a real Slurm and reads the script.
"""

import shlex
import subprocess
from pathlib import Path

import pytest

from energykit.errors import EnergykitError
from energykit import submit
from energykit.submit import container_launch, container_mounts

from conftest import ROOT

IMAGE = "nvcr.io/nvidia/tensorrt-llm/release:1.2.0"


def test_pyxis_srun_line_runs_the_shard_in_the_image(tmp_path, monkeypatch):
    submitit = pytest.importorskip("submitit")
    from submitit.slurm import slurm

    monkeypatch.setattr(slurm.SlurmExecutor, "affinity", classmethod(lambda cls: 1))  # no srun on this machine
    monkeypatch.chdir(tmp_path)
    (tmp_path / "p").mkdir()
    mounts = container_mounts(str(tmp_path / "p" / "sweep.yaml"), "runs/out", "runs/out/slurm")
    assert mounts == [str(tmp_path.resolve())]  # everything lies under the working directory: one mount
    launch = container_launch(mounts, container_image=IMAGE)
    ex = submitit.AutoExecutor(folder=str(tmp_path / "logs"), cluster="slurm", slurm_python=launch["slurm_python"])
    ex.update_parameters(slurm_srun_args=launch["slurm_srun_args"], slurm_gres="gpu:1", timeout_min=5)
    text = ex._executor._make_submission_file_text(ex._executor._submitit_command_str, "uid")
    srun = [line for line in text.splitlines() if line.startswith("srun ")][0]
    words = shlex.split(srun)
    assert f"--container-image={IMAGE}" in words
    assert f"--container-mounts={tmp_path.resolve()}:{tmp_path.resolve()}" in words
    assert f"--container-workdir={tmp_path.resolve()}" in words
    assert words[words.index(f"--container-workdir={tmp_path.resolve()}") + 1:][:4] == \
        ["python3", "-u", "-m", "submitit.core._submit"]


def test_apptainer_command_wraps_the_interpreter(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    sif = tmp_path / "energykit trtllm.sif"  # a space in the path survives the quoting
    sif.write_text("")
    launch = container_launch([str(tmp_path), "/scratch/out"], apptainer=str(sif))
    words = shlex.split(launch["slurm_python"])
    assert words == ["apptainer", "exec", "--nv", "--bind", f"{tmp_path},/scratch/out", "--pwd", str(tmp_path.resolve()),
                     str(sif.resolve()), "python3"]
    assert "slurm_srun_args" not in launch


def test_container_mistakes_are_one_line(tmp_path):
    with pytest.raises(EnergykitError, match="not both"):
        container_launch([str(tmp_path)], container_image=IMAGE, apptainer="x.sif")
    with pytest.raises(EnergykitError, match="'missing.sif' is not a file; build it with apptainer build"):
        container_launch([str(tmp_path)], apptainer="missing.sif")
    with pytest.raises(EnergykitError, match="space or comma"):
        container_launch([str(tmp_path)], container_image="a b")
    with pytest.raises(EnergykitError, match="cannot be mounted by pyxis"):
        container_launch(["/data/a,b"], container_image=IMAGE)


def test_sbatch_template_runs_the_shard_in_the_container(tmp_path):
    """The template's srun line, with srun and apptainer replaced by stand-ins that print their arguments."""
    bin_ = tmp_path / "bin"
    bin_.mkdir()
    for tool in ("srun", "apptainer"):
        (bin_ / tool).write_text(f'#!/bin/sh\necho "{tool}" "$@"\n')
        (bin_ / tool).chmod(0o755)
    env = {"PATH": f"{bin_}:/usr/bin:/bin", "ENERGYKIT_CONTAINER_IMAGE": IMAGE}
    script = Path(ROOT) / "scripts" / "energykit_array.sbatch"
    p = subprocess.run(["bash", str(script), "sweep.yaml"], capture_output=True, text=True, cwd=tmp_path, env=env)
    assert p.returncode == 0, p.stderr
    assert shlex.split(p.stdout) == ["srun", f"--container-image={IMAGE}", f"--container-mounts={tmp_path}:{tmp_path}",
                                     f"--container-workdir={tmp_path}", "python3", "-m", "energykit", "measure",
                                     "sweep.yaml", "--no-progress"]
    env = {"PATH": f"{bin_}:/usr/bin:/bin", "ENERGYKIT_APPTAINER": "img.sif"}
    p = subprocess.run(["bash", str(script), "sweep.yaml"], capture_output=True, text=True, cwd=tmp_path, env=env)
    assert shlex.split(p.stdout) == ["srun", "apptainer", "exec", "--nv", "--bind", str(tmp_path), "--pwd",
                                     str(tmp_path), "img.sif", "python3", "-m", "energykit", "measure", "sweep.yaml",
                                     "--no-progress"]


def test_a_failed_shard_is_named_by_its_own_error_not_by_the_log_path():
    """submitit's message (submitit/core/core.py, Job.exception, 1.5.4) ends with the log paths; the error
    the shard raised is the traceback's last line above them."""
    utils = pytest.importorskip("submitit.core.utils")

    trace = ("Traceback (most recent call last):\n  File \"energykit/sweep.py\", line 288, in _finish\n"
             "energykit.sweep.SweepFailures: 1 of 5 windows failed (1x implausible window)")
    e = utils.FailedJobError(f"Job (task=0) failed during processing with trace:\n----------------------\n{trace}\n"
                             "----------------------\nYou can check full logs with 'job.stderr(0)' and "
                             "'job.stdout(0)'or at paths:\n  - /logs/1_0_0_log.err\n  - /logs/1_0_0_log.out")
    line = submit.shard_error(e)
    assert line.startswith("energykit.sweep.SweepFailures: 1 of 5 windows failed") and "(log: /logs/1_0_0_log.err)" in line
    lost = utils.UncompletedJobError("Job 1_0 (task: 0) with path /logs/r.pkl\nhas not produced any output (state: "
                                     "NODE_FAIL)\nNo output/error stream produced ! Check: /logs/1_0_0_log.out")
    assert submit.shard_error(lost) == "No output/error stream produced ! Check: /logs/1_0_0_log.out"
