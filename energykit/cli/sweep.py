"""``energykit measure``, ``plan``, ``submit``, ``status`` and ``merge``: sweeps and their shards."""

from __future__ import annotations

import sys

from .common import _one_line, positive_int, strict_json

__all__ = ["cmd_measure", "cmd_plan", "cmd_status", "cmd_merge", "cmd_submit", "add_parsers"]


def cmd_measure(args) -> int:
    from ..params import load_measure_params
    from ..sweep import SweepFailures, run

    from ..shards import shard_from_env

    params = load_measure_params(args.params)  # validated before anything is loaded or written
    shard = shard_from_env(args.shard)
    try:
        path = run(params, args.params, progress=not args.no_progress, shard=shard)
    except SweepFailures as e:
        if e.dataset is not None:
            print(f"dataset written to {e.dataset}", flush=True)
        print(f"energykit: error: {_one_line(str(e))}", file=sys.stderr)
        return 1
    print(f"dataset written to {path}")
    return 0


def cmd_plan(args) -> int:
    from ..params import load_measure_params
    from ..shards import plan_shards

    params = load_measure_params(args.params)
    shards = plan_shards(params, args.shards)
    if args.json:
        print(strict_json({"shards": [{"index": s.index, "models": s.models, "windows": len(s.windows),
                                       "cost": s.cost, "cells": [list(w) for w in s.windows]} for s in shards]}))
        return 0
    total = sum(s.cost for s in shards) or 1.0
    for s in shards:
        print(f"shard {s.index}/{s.count}: {len(s.windows)} windows, {100 * s.cost / total:.1f} % of the cost, "
              f"models {', '.join(s.models)}")
    return 0


def cmd_status(args) -> int:
    from ..merge import status

    print(status(args.outputs).to_string(index=False))
    return 0


def cmd_merge(args) -> int:
    from ..merge import merge
    from ..params import load_measure_params

    params = load_measure_params(args.params) if args.params else None
    path, report = merge(args.outputs, args.o, params)
    print(f"merged {report['windows']} windows from {report['folders']} folder(s) into {path} "
          f"({report['retried']} retried window(s) kept at their last good attempt"
          + (f"; {report['missing']} of {report['planned']} planned windows missing" if params else "") + ")")
    if report.get("missing"):
        print(f"energykit: error: {report['missing']} planned windows are missing; run the missing shards "
              "(energykit status lists them)", file=sys.stderr)
        return 1
    return 0


def cmd_submit(args) -> int:
    from ..submit import submit

    def announce(jobs):  # before the wait: a failed shard's error then follows the job's number
        print(f"submitted {len(jobs)} shard(s) as Slurm array job {jobs[0].job_id.split('_')[0]}"
              + ("; waiting for them" if args.wait else "; follow with: energykit status OUTPUT"), flush=True)

    jobs = submit(args.params, args.shards, partition=args.partition, time_min=args.time,
                  gpus_per_task=args.gpus_per_task, cpus_per_task=args.cpus_per_task, folder=args.folder,
                  wait=args.wait, retry=args.retry, progress=not args.no_progress,
                  container_image=args.container_image, apptainer=args.apptainer,
                  container_python=args.container_python, on_submit=announce)
    if not jobs:
        print("nothing to submit: every shard is complete")
        return 0
    if args.wait:
        print(f"all {len(jobs)} shard(s) finished")
    if args.container_image is not None or args.apptainer is not None:
        array = jobs[0].job_id.split("_")[0]
        script = jobs[0].paths.folder.parent / array / f"{array}_submission.sh"  # submitit: one script per array
        print(f"each shard runs in {args.container_image or args.apptainer}; script: {script}")
    return 0


def add_parsers(sub) -> None:
    """The sub-commands ``measure``, ``plan``, ``submit``, ``status``, ``merge``."""
    m = sub.add_parser("measure", help="run (or resume) a measurement sweep from a params file")
    m.add_argument("params", help="YAML file: engine, models, dtype, batch_sizes, input_lens, output_lens, ...")
    m.add_argument("--no-progress", action="store_true", help="no progress bar")
    m.add_argument("--shard", help="measure shard K of N (K/N, 0-based); default from SLURM_ARRAY_TASK_ID/COUNT "
                                   "or JOB_COMPLETION_INDEX with ENERGYKIT_SHARDS")
    m.set_defaults(func=cmd_measure)

    pl = sub.add_parser("plan", help="split a sweep into N shards (disjoint, covering, grouped by model, balanced)")
    pl.add_argument("params", help="the sweep's YAML file")
    pl.add_argument("--shards", type=positive_int, required=True, help="number of shards (GPUs)")
    pl.add_argument("--json", action="store_true", help="one JSON object on stdout")
    pl.set_defaults(func=cmd_plan)

    sb = sub.add_parser("submit", help="submit the shards as one Slurm array job (submitit), one GPU each")
    sb.add_argument("params", help="the sweep's YAML file")
    sb.add_argument("--shards", type=positive_int, required=True, help="number of shards (array tasks)")
    sb.add_argument("--partition", help="Slurm partition")
    sb.add_argument("--time", type=positive_int, default=60, help="time limit per shard [min] (default 60)")
    sb.add_argument("--gpus-per-task", type=positive_int, default=1, help="GPUs per shard (default 1)")
    sb.add_argument("--cpus-per-task", type=positive_int, help="CPUs per shard")
    sb.add_argument("--folder", help="submitit's log folder (default OUTPUT/slurm)")
    sb.add_argument("--wait", action="store_true", help="wait for every shard, with a progress bar")
    sb.add_argument("--retry", action="store_true", help="resubmit only shards with missing or failed windows")
    sb.add_argument("--no-progress", action="store_true", help="no progress bar")
    sb.add_argument("--container-image", help="run every shard in this image through pyxis (srun --container-image), "
                    "e.g. a build of containers/Dockerfile.trtllm FROM nvcr.io/nvidia/tensorrt-llm/release:TAG")
    sb.add_argument("--apptainer", metavar="SIF", help="run every shard in this Apptainer image "
                    "(apptainer exec --nv SIF), e.g. built from containers/energykit-trtllm.def")
    sb.add_argument("--container-python", default="python3",
                    help="the Python inside the image that has energykit (default python3)")
    sb.set_defaults(func=cmd_submit)

    st = sub.add_parser("status", help="done, failed and missing windows per shard folder")
    st.add_argument("outputs", nargs="+", help="sweep output folders (or shard folders)")
    st.set_defaults(func=cmd_status)

    mg = sub.add_parser("merge", help="merge shard folders into one dataset (one record per cell and repeat)")
    mg.add_argument("outputs", nargs="+", help="sweep output folders (or shard folders)")
    mg.add_argument("-o", required=True, help="the merged NetCDF file")
    mg.add_argument("--params", help="the sweep's YAML file, to report missing windows")
    mg.set_defaults(func=cmd_merge)
