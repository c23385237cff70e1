"""Interface of an engine: :class:`Engine`, :class:`Request` (fresh prompts per call) and :class:`Generation`.

An engine class is the one home of everything about its engine, as xarray's ``BackendEntrypoint``
is of a backend: its params section (:attr:`Engine.Options`), its checks, its libraries and install
hint, its GPU count, its fingerprint fields, its label and caveats. The sweep, the params and the
summary ask the registry (:data:`energykit.engines.ENGINES`) and never test an engine's name.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections import deque
from dataclasses import dataclass, field
import importlib.util
import os
import sys
from typing import Any, Callable, ClassVar

from pydantic import BaseModel, ConfigDict

from ..errors import EngineError, MissingExtraError, ParamsError

__all__ = ["NoOptions", "Generation", "Request", "Engine"]


class NoOptions(BaseModel):
    """The params section of an engine without options: empty, and any key in it is refused."""

    model_config = ConfigDict(extra="forbid")


@dataclass
class Generation:
    """Result of one batch of requests."""

    output_tokens: int
    """New tokens per sequence (verified equal for every sequence)."""
    ttft_s: float = float("nan")
    """Mean time to first token [s], where the engine reports it."""
    extra: dict = field(default_factory=dict)
    """Scalars the engine records with the window (e.g. trtllm: ``ttft_spread_s``, ``decode_graphed``)."""
    steps: int = 0
    """Forward steps the call ran on the device, where the engine can tell (0: one per new token)."""
    queue_waits: int = 0
    """Decode steps of this call that waited in the engine's request queue (where the engine can tell);
    the window protocol fails a window with any (:func:`energykit.windows.measure`)."""


class Request:
    """One cell's batch of requests, with fresh prompt token ids for every call.

    Parameters
    ----------
    make_prompts : callable
        Returns one batch of new random prompts (called by :meth:`prepare`, never inside a window).
    run : callable
        Runs one batch of prompts and returns a :class:`Generation`.
    """

    def __init__(self, make_prompts: Callable[[], Any], run: Callable[[Any], Generation]):
        self._make = make_prompts
        self._run = run
        self._ready: deque = deque()

    def prepare(self, n: int) -> None:
        """Draw ``n`` batches of fresh prompts now, so that the random generator is not metered."""
        for _ in range(int(n)):
            self._ready.append(self._make())

    @property
    def prepared(self) -> int:
        """Batches of prompts drawn and not yet sent."""
        return len(self._ready)

    def __call__(self) -> Generation:
        if not self._ready:
            raise EngineError("no fresh prompts are prepared for this call; call prepare(n) before the window opens")
        return self._run(self._ready.popleft())


class Engine(ABC):
    """Interface of an engine, and the one home of what the core needs to know about it.

    A subclass sets the class attributes below and, where its defaults do not fit, overrides the
    class methods; register it in :data:`energykit.engines.ENGINES` under :attr:`name`. A sweep
    then builds it with :meth:`from_params`; nothing else names it.
    """

    name: ClassVar[str] = ""
    """The value of ``engine:`` in a params file, and the key of its own section."""
    Options: ClassVar[type[BaseModel]] = NoOptions
    """The pydantic model of the engine's params section (``extra="forbid"``). Its keys may also be
    written at the top level of a params file, as they were before engines had sections."""
    requires: ClassVar[tuple[str, ...]] = ()
    """Modules that must be importable before a sweep starts."""
    extra: ClassVar[str] = ""
    """The pip extra that installs :attr:`requires` (``pip install 'energykit[EXTRA]'``)."""
    install_hint: ClassVar[str] = ""
    """Added to the missing-extra error, e.g. where the wheels come from."""
    archs: ClassVar[tuple[str, ...] | None] = None
    """Architectures (a geometry's ``arch``) the engine runs; ``None``: every one."""
    loads_per_batch_size: ClassVar[bool] = False
    """True for an engine that loads its executor for one batch size at a time: the sweep then measures
    each batch size's windows together (shuffled within it)."""
    attentions: ClassVar[tuple[str, ...]] = ()
    """The attention kernels it can run (their names, as :meth:`attention` gives them)."""
    gpus = 1
    """GPUs the engine runs on (tensor parallelism); the meter reads that many."""

    @classmethod
    def check_installed(cls) -> None:
        """Fail in one line, naming the pip extra, when a module of :attr:`requires` is missing."""
        for mod in cls.requires:
            present = sys.modules[mod] is not None if mod in sys.modules else importlib.util.find_spec(mod) is not None
            if not present:
                raise MissingExtraError(mod, cls.extra, cls.install_hint)

    @classmethod
    def check_model(cls, params, name: str, geometry: dict, checkpoint: str | None) -> None:
        """Refuse, with a one-line :class:`ParamsError`, a model this engine cannot run with ``params``.

        Runs while the params are validated, before anything is loaded. ``params`` is the
        :class:`energykit.params.MeasureParams` (its section: ``params.engine_options``).
        """
        if cls.archs is not None and geometry.get("arch") not in cls.archs:
            raise ParamsError(f"model {name!r}: engine {cls.name} has no model for arch {geometry.get('arch')!r} "
                              f"(it runs {', '.join(cls.archs)}); choose another engine")

    @classmethod
    def preflight(cls, params) -> None:
        """Checks of this machine that must pass before a sweep writes anything (e.g. the device)."""

    @classmethod
    def from_params(cls, params, name: str, geometry: dict, checkpoint: str | None) -> "Engine":
        """The engine of one model of a sweep: the common arguments plus :meth:`engine_kwargs`."""
        return cls(name=name, geometry=geometry, checkpoint=checkpoint, dtype=params.dtype, max_len=params.max_len,
                   seed=params.seed, **cls.engine_kwargs(params))

    @classmethod
    def engine_kwargs(cls, params) -> dict:
        """Keyword arguments of the constructor taken from the params: by default, the section's values."""
        return params.engine_options.model_dump()

    @classmethod
    def gpu_count(cls, options: BaseModel) -> int:
        """GPUs one engine with these options runs on, which the meter reads and sums."""
        return 1

    @classmethod
    def metered_gpus(cls, options: BaseModel):
        """The NVML devices (indices or UUIDs) the meter reads; ``None``: those ``CUDA_VISIBLE_DEVICES`` shows."""
        return None

    @classmethod
    def metered_pid(cls, options: BaseModel) -> int:
        """The process ``meter: process_cpu`` meters; engines that run elsewhere (a server) name it."""
        return os.getpid()

    @classmethod
    def fingerprint(cls, options: BaseModel) -> dict:
        """The options that change what a window measures (by default, all of them), for ``fingerprint.json``."""
        return options.model_dump()

    @classmethod
    def label(cls, versions: dict) -> str:
        """A readable label of the engine from the versions it recorded (:meth:`versions`)."""
        return cls.name

    @classmethod
    def caveat(cls, label: str) -> str:
        """A caveat on comparing attention kinds (GQA vs MHA) for data with this engine label; "" if none."""
        return ""

    @classmethod
    def paper_difference(cls, label: str) -> str:
        """Why this engine's data with this label may differ from the paper's figures, in plain words; "" if
        nothing the engine knows of (the landing page's verdicts name it)."""
        return ""

    @classmethod
    def attention(cls, versions: dict) -> str:
        """The attention kernel the recorded ``versions`` (:meth:`versions`, or :meth:`from_label`) ran."""
        return str(versions.get("attention") or "not recorded")

    @classmethod
    def from_label(cls, label: str) -> dict | None:
        """The versions this engine reads back from a label it wrote (:meth:`label`), for data that recorded no
        versions (a CSV); ``None`` when the label is not this engine's."""
        return {"engine": cls.name} if label == cls.name or label.startswith(f"{cls.name} ") else None

    @abstractmethod
    def load(self) -> None:
        """Load the model onto the device."""

    @abstractmethod
    def request(self, batch_size: int, input_len: int, output_len: int) -> Request:
        """The :class:`Request` of one cell; nothing runs until it is prepared and called."""

    def synchronize(self) -> None:
        """Wait for the device to finish queued work (before a meter reads its counter)."""

    def recover(self) -> None:
        """Release what a failed request left behind (e.g. CUDA memory after an OOM)."""

    def versions(self) -> dict:
        return {}

    def energy_counter(self):
        """A factory of the engine library's own energy counter (each a context manager over one window
        whose ``total_energy`` is in J), or None where the library has none."""
        return None

    def close(self) -> None:
        pass
