"""Inference engines, imported lazily: ``hf`` (transformers/PyTorch), ``trtllm`` (TensorRT-LLM LLM API) and
``serve`` (any OpenAI-compatible server, over HTTP), and any engine another distribution registers.

An engine loads one model and turns a cell (batch size, input length, output length) into a
:class:`Request`: an object that prepares fresh prompts (outside any meter window) and runs one
batch of requests per call, returning a :class:`Generation`. The sweep runner times and meters
those calls inside windows (:func:`energykit.windows.measure`).

Every call sends token ids that no earlier call sent. Engines that cache prefixes (TensorRT-LLM
reuses KV blocks by default) would otherwise skip the prefill of a repeated prompt and understate
the prefill terms θ1 and θ3 of the model.

:data:`ENGINES` is the registry: a new engine is one module with an :class:`Engine` subclass and
one line here, or, in a distribution of its own, one entry point of the group ``energykit.engines``
(``NAME = package.module:NameEngine``; read when the registry is first asked, as xarray finds its
backends), so that the kit needs no line for it. The core looks engines up by name and asks the class
everything else.
"""

from __future__ import annotations

from collections.abc import Iterator, MutableMapping
from importlib.metadata import entry_points

from ..errors import ParamsError
from .base import Engine, Generation, NoOptions, Request
from .hf import HFEngine
from .trtllm import TrtLlmEngine
from .serve import ServeEngine

__all__ = ["ENGINES", "ENTRY_POINT_GROUP", "Registry", "Engine", "Generation", "NoOptions", "Request", "HFEngine",
           "TrtLlmEngine", "ServeEngine", "engine_class", "make_engine", "caveat", "label_owner"]

ENTRY_POINT_GROUP = "energykit.engines"
"""The entry-point group through which another distribution registers an engine (name = ``module:Class``)."""


class Registry(MutableMapping):
    """Engines by name: the built-in ones, then those of the :data:`ENTRY_POINT_GROUP` entry points.

    The entry points are read when the registry is first asked (never at import); a name that clashes with
    another engine's, an entry point that cannot be loaded, or one that is no :class:`Engine` of that name is a
    one-line :class:`~energykit.errors.ParamsError` naming it. :meth:`reload` reads them again.
    """

    def __init__(self, builtin: dict[str, type[Engine]]):
        self._builtin = dict(builtin)
        self._engines: dict[str, type[Engine]] | None = None

    def reload(self) -> None:
        """Forget the engines of entry points (and any added by hand); read the entry points on the next ask."""
        self._engines = None

    def _all(self) -> dict[str, type[Engine]]:
        if self._engines is None:
            engines = dict(self._builtin)
            for ep in entry_points(group=ENTRY_POINT_GROUP):
                engines[ep.name] = _plugin(ep, engines)
            self._engines = engines
        return self._engines

    def __getitem__(self, name: str) -> type[Engine]:
        return self._all()[name]

    def __setitem__(self, name: str, cls: type[Engine]) -> None:
        self._all()[name] = cls

    def __delitem__(self, name: str) -> None:
        del self._all()[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._all())

    def __len__(self) -> int:
        return len(self._all())

    def __repr__(self) -> str:
        return f"Registry({self._all()!r})"


def _plugin(ep, engines: dict[str, type[Engine]]) -> type[Engine]:
    """The engine class of one entry point, checked: loadable, an :class:`Engine`, named as its entry, no clash."""
    where = f"entry point {ep.name} = {ep.value} (group {ENTRY_POINT_GROUP}"
    where += f", distribution {ep.dist.name})" if getattr(ep, "dist", None) is not None else ")"
    if ep.name in engines:
        raise ParamsError(f"{where} clashes with the engine {ep.name!r} of {engines[ep.name].__module__}; rename the "
                          "entry point or uninstall one of the two distributions")
    try:
        cls = ep.load()
    except Exception as e:  # any error of a third-party import: named, in one line
        raise ParamsError(f"{where} cannot be loaded: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}; "
                          "fix or uninstall that distribution") from None
    if not (isinstance(cls, type) and issubclass(cls, Engine)) or cls.name != ep.name:
        raise ParamsError(f"{where} is not an energykit.engines.Engine subclass named {ep.name!r} (got {cls!r}); "
                          "point it at the engine class and give the entry point the class's name")
    return cls


ENGINES: Registry = Registry({
    HFEngine.name: HFEngine,
    TrtLlmEngine.name: TrtLlmEngine,
    ServeEngine.name: ServeEngine,
})
"""Registered engines by the name a params file gives in ``engine:`` (built-in, then entry points)."""


def engine_class(kind: str) -> type[Engine]:
    """The registered engine class of a name, or a one-line :class:`ParamsError` listing the names."""
    try:
        return ENGINES[kind]
    except (KeyError, TypeError):
        raise ParamsError(f"unknown engine {kind!r}; use one of {', '.join(ENGINES)}") from None


def make_engine(kind: str, **kwargs) -> Engine:
    """An engine by name; its heavy libraries are imported when it loads."""
    return engine_class(kind)(**kwargs)


def label_owner(label: str) -> tuple[type[Engine], dict] | None:
    """The registered engine that wrote a dataset's engine ``label``, with the versions it reads back from it
    (:meth:`Engine.from_label`); ``None`` when no engine claims it."""
    for cls in ENGINES.values():
        versions = cls.from_label(str(label))
        if versions is not None:
            return cls, versions
    return None


def caveat(label: str) -> str:
    """The caveat on comparing attention kinds that the engine which wrote ``label`` gives ("" if none)."""
    owner = label_owner(label)
    return owner[0].caveat(label) if owner else ""
