"""Command line: ``python -m energykit {fit,report,measure,plan,submit,status,merge,design,predict,export,attribute}``.

The one thin layer over the package: every sub-command lives in this package (one module per group of commands) and imports its module only when
it runs, so ``energykit --help`` starts without numpy, xarray or lmfit. User mistakes (bad files,
bad params, missing extras) print one line on stderr and exit with code 2, without a traceback.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
import warnings

from ..errors import EnergykitError
from . import fit, predict, replay, report, sweep
from .common import _one_line, strict_json

__all__ = ["main", "build_parser", "strict_json"]


def build_parser() -> argparse.ArgumentParser:
    from .. import __version__

    p = argparse.ArgumentParser(prog="energykit", description="Energy-efficiency sweet spots of LLM inference.")
    p.add_argument("--version", action="version", version=f"energykit {__version__}")
    sub = p.add_subparsers(dest="command", required=True)

    for group in GROUPS:
        group.add_parsers(sub)
    return p


GROUPS = (fit, report, sweep, replay, predict)
"""The modules of the sub-commands, each adding its parsers (``add_parsers(sub)``)."""


def _one_line_warning(message, category, filename, lineno, file=None, line=None):
    return f"energykit: warning: {_one_line(str(message))}\n"


class Interrupted(KeyboardInterrupt):
    """SIGINT or SIGTERM: raised where the command is, so that its ``finally`` blocks remove what is half-written."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum


_SIGNALLED: list[int] = []
"""The signal that stopped the command: a library may turn the exception into its own (nbclient: a dead kernel)."""


def _on_signal(signum, frame):
    for s in (signal.SIGINT, signal.SIGTERM):  # a second Ctrl-C must not break the cleanup under way
        signal.signal(s, signal.SIG_IGN)
    _SIGNALLED.append(signum)
    raise Interrupted(signum)


def main(argv=None) -> int:
    warnings.formatwarning = _one_line_warning
    parser = build_parser()
    args = parser.parse_args(argv)
    handlers = {}
    _SIGNALLED.clear()
    if threading.current_thread() is threading.main_thread():
        handlers = {s: signal.signal(s, _on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        return _run(args)
    finally:
        for s, h in handlers.items():
            signal.signal(s, h)


def _run(args) -> int:
    try:
        return _errors_as_lines(args)
    except BaseException as e:  # Ctrl-C may surface as another error (asyncio's CancelledError, a dead kernel)
        if not (_SIGNALLED or isinstance(e, KeyboardInterrupt) or type(e).__name__ == "CancelledError"):
            raise
        signum = _SIGNALLED[0] if _SIGNALLED else getattr(e, "signum", None)
        name = f" ({signal.Signals(signum).name})" if signum else ""
        print(f"energykit: interrupted{name}; nothing half-written was left — run the same command again to finish",
              file=sys.stderr)
        return 128 + int(signum or signal.SIGINT)


def _errors_as_lines(args) -> int:
    try:
        return args.func(args)
    except EnergykitError as e:
        if _SIGNALLED:
            raise
        print(f"energykit: error: {_one_line(str(e))}", file=sys.stderr)
        return 2
    except OSError as e:  # a path the system refuses (missing folder, read-only, name too long): one line
        where = f"{e.filename}: " if e.filename else ""
        print(f"energykit: error: {_one_line(where)}{e.strerror or e}; check the path, its folder and permissions",
              file=sys.stderr)
        return 2
    except RecursionError:
        print("energykit: error: an input is nested too deeply to read; check the files given", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
