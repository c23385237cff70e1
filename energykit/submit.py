"""Submit the shards of a sweep as one Slurm array job, through submitit (``pip install 'energykit[slurm]'``).

Each array task runs one shard (:func:`energykit.sweep.run` with ``shard=(K, N)``) on its own
GPU: every task asks Slurm for ``gpus_per_task`` GPUs as a generic resource, and Slurm never gives
one GPU to two tasks. ``retry`` resubmits only the shards whose folders still miss or failed windows.
Without submitit, ``scripts/energykit_array.sbatch`` does the same with plain ``sbatch``.

Containers (TensorRT-LLM's wheels come from NVIDIA's index; clusters run NVIDIA's release image, see
``containers/``): ``container_image`` runs every shard in that image through pyxis (``srun
--container-image=IMAGE --container-mounts=… --container-workdir=…``); ``apptainer`` runs it in a
SIF image (``apptainer exec --nv --bind … SIF python3 …``). The folders a shard reads and writes (the
working directory, the params file's, the output, the logs) are mounted at the same paths; the image
must hold energykit with its ``slurm`` extra (the recipes in ``containers/`` do).
"""

from __future__ import annotations

import re
import shlex
import shutil
import textwrap
import time
from pathlib import Path

from tqdm.auto import tqdm

from .engines.hf import use_compile_cache
from .errors import EnergykitError, MissingExtraError, ParamsError
from .iotools import check_text
from .params import load_measure_params
from .shards import plan_shards, shard_folder
from .merge import status
from .sweep import run

__all__ = ["run_shard", "shard_error", "shards_to_submit", "container_mounts", "container_launch", "submit"]


def _submitit():
    try:
        import submitit
    except ImportError:
        raise MissingExtraError("submitit", "slurm") from None
    return submitit


def run_shard(params_path: str, index: int, count: int) -> str:
    """What one array task runs: shard ``index`` of ``count`` of the sweep (resumes if rerun).

    With ``compile_cache`` in the engine's options (``hf:``), every task points Inductor and Triton at
    that folder before anything compiles, so tasks on the same GPU type reuse each other's kernels.
    """
    params = load_measure_params(params_path)
    cache = getattr(params.engine_options, "compile_cache", "")
    if cache:
        use_compile_cache(cache)
    return str(run(params, params_path, progress=False, shard=(index, count)))


def shard_error(e: BaseException) -> str:
    """One line for a failed shard: its own error (the traceback's last line, which submitit's message
    buries above the log paths) and where its log is."""
    lines = [line.strip() for line in str(e).strip().splitlines() if line.strip()]
    logs = [line.lstrip("- ") for line in lines if line.startswith("- ") and line.endswith(".err")]
    cut = next((n for n, line in enumerate(lines) if line.startswith("You can check full logs")),
               len(lines))
    own = next((line for line in reversed(lines[:cut]) if re.match(r"[\w.]+(Error|Exception|Failures|Exit)\b", line)),
               lines[cut - 1] if cut else type(e).__name__)
    return textwrap.shorten(own, 300, placeholder=" …") + (f" (log: {logs[-1]})" if logs else "")


def shards_to_submit(params_path: str, count: int, retry: bool = False) -> list[int]:
    """Every shard, or with ``retry`` those whose folders miss windows or hold failed ones."""
    params = load_measure_params(params_path)
    plan = plan_shards(params, count)
    if not retry:
        return [s.index for s in plan]
    todo = []
    for s in plan:
        folder = shard_folder(params.output, s.index, count)
        if not (folder / "windows.jsonl").exists():
            todo.append(s.index)
            continue
        row = status([folder]).iloc[0]
        if row["missing"] > 0 or row["failed"] > 0:
            todo.append(s.index)
    return todo


def container_mounts(params_path: str, output: str, logs: str | Path) -> list[str]:
    """Host folders a shard needs inside a container: working directory, params file's, output, logs."""
    cwd = Path.cwd().resolve()
    wanted = [cwd, Path(params_path).resolve().parent, (cwd / output).resolve(), Path(logs).resolve()]
    out = []
    for p in sorted(set(wanted), key=lambda q: len(q.parts)):
        if not any(p == q or q in p.parents for q in out):
            out.append(p)
    return [str(p) for p in out]


def container_launch(mounts: list[str], container_image: str | None = None, apptainer: str | None = None,
                     container_python: str = "python3") -> dict:
    """submitit settings that start every shard inside a container image; ``{}`` without one.

    Returns ``slurm_srun_args`` (pyxis: ``--container-image``, ``--container-mounts``,
    ``--container-workdir``) and ``slurm_python`` (the interpreter command in the image; with Apptainer,
    ``apptainer exec --nv --bind … SIF python3``).
    """
    if container_image is not None and apptainer is not None:
        raise EnergykitError("give --container-image (pyxis) or --apptainer (a .sif), not both")
    for option, value in (("--container-image", container_image), ("--apptainer", apptainer)):
        if value is not None and not value.strip():
            raise ParamsError(f"{option} is empty; give an image (e.g. nvcr.io/nvidia/tensorrt-llm/release:TAG, or a "
                              ".sif file), or leave the option out to run on the host")
    cwd = str(Path.cwd().resolve())
    if container_image is None and apptainer is None:
        return {}
    tool = "pyxis (--container-mounts)" if container_image is not None else "apptainer (--bind)"
    for m in list(mounts) + [cwd]:  # both tools read SRC[:DST[:OPTS]] lists separated by commas
        check_text(m, "a folder to mount")
        if "," in m or ":" in m:
            raise ParamsError(f"folder {m[:120]!r} cannot be mounted by {tool}: ',' and ':' separate its mount list, "
                              "so the path would add or change a mount; measure from and into folders without them")
    if container_image is not None:
        if any(c.isspace() or c == "," for c in container_image):
            raise EnergykitError(f"container image {container_image[:80]!r} has a space or comma; pyxis takes one "
                                 "image name such as nvcr.io/nvidia/tensorrt-llm/release:TAG")
        return {"slurm_srun_args": [f"--container-image={container_image}",
                                    "--container-mounts=" + ",".join(f"{m}:{m}" for m in mounts),
                                    f"--container-workdir={cwd}"],
                "slurm_python": shlex.quote(container_python)}
    if apptainer is not None:
        if not Path(apptainer).is_file():
            raise EnergykitError(f"apptainer image {apptainer!r} is not a file; build it with "
                                 "apptainer build energykit-trtllm.sif containers/energykit-trtllm.def")
        cmd = ["apptainer", "exec", "--nv", "--bind", ",".join(mounts), "--pwd", cwd,
               str(Path(apptainer).resolve()), container_python]
        return {"slurm_python": shlex.join(cmd)}
    return {}


def submit(params_path: str, count: int, partition: str | None = None, time_min: int = 60, gpus_per_task: int = 1,
           cpus_per_task: int | None = None, folder: str | None = None, wait: bool = False, retry: bool = False,
           progress: bool = True, container_image: str | None = None, apptainer: str | None = None,
           container_python: str = "python3", on_submit=None) -> list:
    """Submit the shards as one Slurm array; returns the submitit jobs (waits for them with ``wait``).

    ``on_submit(jobs)`` is called once the array is queued, before any wait (the CLI names the job there).

    ``container_image`` (pyxis) or ``apptainer`` (a SIF file) runs every shard inside that image, whose
    ``container_python`` has energykit installed (see :func:`container_launch`).
    """
    submitit = _submitit()
    for what, value in (("--partition", partition), ("--folder", folder), ("--container-image", container_image),
                        ("--apptainer", apptainer), ("--container-python", container_python)):
        if value is not None:
            check_text(str(value), what)  # a newline would become a line of the batch script
    if partition is not None and not re.fullmatch(r"[A-Za-z0-9_.,:+-]+", partition):
        raise ParamsError(f"--partition {partition[:60]!r}: a Slurm partition name is letters, digits and _ . , - ; "
                          "list them with sinfo -s")
    if not re.fullmatch(r"[A-Za-z0-9_./+-]+", container_python):
        raise ParamsError(f"--container-python {container_python[:60]!r}: one executable (a name or a path inside the "
                          "image, e.g. python3 or /usr/bin/python3), no spaces or shell syntax")
    params = load_measure_params(params_path)
    logs = Path(folder) if folder else Path(params.output) / "slurm"
    # the image and every folder it mounts are checked before anything is submitted
    launch = container_launch(container_mounts(params_path, params.output, logs), container_image, apptainer,
                              container_python)
    indices = shards_to_submit(params_path, count, retry)
    if not indices:
        return []
    if shutil.which("srun") is None or shutil.which("sbatch") is None:
        raise EnergykitError("srun/sbatch are not on PATH: this is not a Slurm login node; run energykit submit "
                             "where Slurm is installed, or scripts/energykit_array.sbatch with sbatch")
    ex = submitit.AutoExecutor(folder=str(logs / "%j"), cluster="slurm",
                               **({"slurm_python": launch["slurm_python"]} if "slurm_python" in launch else {}))
    opts = dict(timeout_min=int(time_min), slurm_gres=f"gpu:{int(gpus_per_task)}", tasks_per_node=1,
                slurm_array_parallelism=len(indices), name="energykit")
    if partition:
        opts["slurm_partition"] = partition
    if cpus_per_task:
        opts["cpus_per_task"] = int(cpus_per_task)
    if "slurm_srun_args" in launch:
        opts["slurm_srun_args"] = launch["slurm_srun_args"]
    ex.update_parameters(**opts)
    from submitit.core.utils import FailedJobError

    try:
        with ex.batch():
            jobs = [ex.submit(run_shard, str(Path(params_path).resolve()), k, count) for k in indices]
    except FailedJobError as e:  # sbatch itself refused: no controller reachable, a bad partition, ...
        lines = [line for line in str(e).strip().splitlines() if line.strip()]
        raise EnergykitError(f"sbatch refused the array job ({lines[-1][:200] if lines else 'no message'}); "
                             "check that this node reaches a Slurm controller (sinfo) and the partition exists, "
                             "then run the same command again") from None
    if on_submit is not None:
        on_submit(jobs)
    if wait:
        bar = tqdm(total=len(jobs), desc="shards", unit="shard", disable=not progress)
        pending = list(jobs)
        while pending:
            finished = [j for j in pending if j.done()]
            for j in finished:
                pending.remove(j)
                bar.update(1)
            if pending:
                time.sleep(2)
        bar.close()
        failed = []
        for k, j in zip(indices, jobs):
            try:
                j.result()
            except Exception as e:  # a shard's own error, raised again by submitit
                failed.append(f"shard {k}: {shard_error(e)}")
        if failed:
            raise EnergykitError(f"{len(failed)} of {len(jobs)} shards failed ({'; '.join(failed)}); "
                                 "rerun with --retry to resubmit them")
    return jobs
