"""Submit the shards of a sweep as one Slurm array job, through submitit (``pip install 'energykit[slurm]'``).

Each array task runs one shard (:func:`energykit.sweep.run` with ``shard=(K, N)``) on its own
GPU: every task asks Slurm for ``gpus_per_task`` GPUs as a generic resource, and Slurm never gives
one GPU to two tasks. ``retry`` resubmits only the shards whose folders still miss or failed windows.
Without submitit, ``scripts/energykit_array.sbatch`` does the same with plain ``sbatch``.
"""

from __future__ import annotations

import time
from pathlib import Path

from tqdm.auto import tqdm

from .engines.hf import use_compile_cache
from .errors import EnergykitError, MissingExtraError
from .params import load_measure_params
from .shards import plan_shards, shard_folder
from .sweep import run, status

__all__ = ["run_shard", "shards_to_submit", "submit"]


def _submitit():
    try:
        import submitit
    except ImportError:
        raise MissingExtraError("submitit", "slurm") from None
    return submitit


def run_shard(params_path: str, index: int, count: int) -> str:
    """What one array task runs: shard ``index`` of ``count`` of the sweep (resumes if rerun).

    With ``compile_cache`` in the params, every task points Inductor and Triton at that folder before
    anything compiles, so tasks on the same GPU type reuse each other's kernels.
    """
    params = load_measure_params(params_path)
    if params.compile_cache:
        use_compile_cache(params.compile_cache)
    return str(run(params, params_path, progress=False, shard=(index, count)))


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


def submit(params_path: str, count: int, partition: str | None = None, time_min: int = 60, gpus_per_task: int = 1,
           cpus_per_task: int | None = None, folder: str | None = None, wait: bool = False, retry: bool = False,
           progress: bool = True) -> list:
    """Submit the shards as one Slurm array; returns the submitit jobs (waits for them with ``wait``)."""
    submitit = _submitit()
    indices = shards_to_submit(params_path, count, retry)
    if not indices:
        return []
    params = load_measure_params(params_path)
    logs = Path(folder) if folder else Path(params.output) / "slurm"
    ex = submitit.AutoExecutor(folder=str(logs / "%j"), cluster="slurm")
    opts = dict(timeout_min=int(time_min), slurm_gres=f"gpu:{int(gpus_per_task)}", tasks_per_node=1,
                slurm_array_parallelism=len(indices), name="energykit")
    if partition:
        opts["slurm_partition"] = partition
    if cpus_per_task:
        opts["cpus_per_task"] = int(cpus_per_task)
    ex.update_parameters(**opts)
    with ex.batch():
        jobs = [ex.submit(run_shard, str(Path(params_path).resolve()), k, count) for k in indices]
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
                failed.append(f"shard {k}: {str(e).strip().splitlines()[-1][:200] if str(e).strip() else type(e).__name__}")
        if failed:
            raise EnergykitError(f"{len(failed)} of {len(jobs)} shards failed ({'; '.join(failed)}); "
                                 "rerun with --retry to resubmit them")
    return jobs
