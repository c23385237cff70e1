"""``python -m energykit``: the command line (:func:`energykit.cli.main`).

Guarded, so that a library that starts workers by re-importing the main module (multiprocessing's
``spawn``, mpi4py's ``MPIPoolExecutor`` that TensorRT-LLM uses even for one GPU) does not run the CLI
again in each worker: there the module runs under another ``__name__`` (``__mp_main__``, ...).
"""

if __name__ == "__main__":
    import sys

    from .cli import main

    sys.exit(main())
