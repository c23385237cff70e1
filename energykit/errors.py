"""Typed errors of energykit.

Every error a user can cause is one of these, with a one-line message that names the bad value
and how to fix it. The CLI prints that line on stderr and exits with code 2.
"""

__all__ = ["EnergykitError", "DataError", "ParamsError", "FitError", "MissingExtraError", "MeterError",
           "EngineError"]


class EnergykitError(Exception):
    """Base class: a problem the user can fix; its message is one line."""


class DataError(EnergykitError):
    """A measurement file or dataset is malformed."""


class ParamsError(EnergykitError):
    """A parameter file or argument is invalid."""


class FitError(EnergykitError):
    """A model cannot be fitted to the data given (too few cells, non-finite values)."""


class MissingExtraError(EnergykitError):
    """An optional dependency (a pip extra) is not installed."""

    def __init__(self, module: str, extra: str, hint: str = ""):
        msg = f"{module} is not installed; install it with: pip install 'energykit[{extra}]'"
        if hint:
            msg += f" ({hint})"
        super().__init__(msg)
        self.module = module
        self.extra = extra


class MeterError(EnergykitError):
    """The energy meter cannot measure as asked (no GPU, no NVML, unsupported counter)."""


class EngineError(EnergykitError):
    """The inference engine failed or did not produce what was asked."""
