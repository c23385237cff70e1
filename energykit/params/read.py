"""Reading a params file: bounded, UTF-8, plain YAML without repeated keys, every string checked, and pydantic's
first error as one line naming the file, the key and the fix (shared by the measure, report and replay params)."""

from __future__ import annotations

from pathlib import Path

import yaml
from pydantic import BaseModel, ValidationError

from ..errors import ParamsError
from ..iotools import check_text

__all__ = ["MAX_PARAMS_BYTES", "MAX_PARAMS_NODES", "read_yaml", "one_line", "validate"]


MAX_PARAMS_BYTES = 1 << 20
"""Largest params file [bytes] (1 MiB): the shipped ones are under 2 KiB."""
MAX_PARAMS_NODES = 100_000
"""Most values a params file may hold once its YAML aliases are expanded (a "billion laughs" stops here)."""


def _walk(data, source: str) -> None:
    """Count the values of ``data`` as if its aliases were expanded (stopping at the limit) and refuse
    strings with control characters."""
    stack, seen = [data], 0
    while stack:
        v = stack.pop()
        seen += 1
        if seen > MAX_PARAMS_NODES:
            raise ParamsError(f"{source}: more than {MAX_PARAMS_NODES} values once YAML aliases (&/*) are expanded; "
                              "write the values out, without nested aliases")
        if isinstance(v, dict):
            stack += list(v.keys()) + list(v.values())
        elif isinstance(v, (list, tuple)):
            stack += list(v)
        elif isinstance(v, str):
            try:
                check_text(v, "value")
            except ParamsError as e:
                raise ParamsError(f"{source}: {e}") from None
        elif not isinstance(v, (int, float, bool)) and v is not None:
            raise ParamsError(f"{source}: a value of type {type(v).__name__} ({str(v)[:40]!r}); "
                              "params hold text, numbers, true/false, lists and mappings only")


class _UniqueKeyLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that refuses a key written twice in one mapping (PyYAML keeps the last silently)."""

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            if isinstance(key_node, yaml.ScalarNode) and key_node.tag != "tag:yaml.org,2002:merge":
                if key_node.value in seen:
                    raise yaml.constructor.ConstructorError(None, None, f"key {key_node.value[:60]!r} is written twice; "
                                                            "keep one", key_node.start_mark)
                seen.add(key_node.value)
        return super().construct_mapping(node, deep=deep)


def read_yaml(path: str | Path) -> dict:
    """Read a YAML mapping; a missing, oversized, non-UTF-8 or non-mapping file is a :class:`ParamsError`.

    The file is bounded: at most :data:`MAX_PARAMS_BYTES`, and :data:`MAX_PARAMS_NODES` values once
    aliases are expanded; no string may hold a control character.
    """
    path = Path(path)
    check_text(str(path), "params path")
    if not path.exists():
        raise ParamsError(f"{path}: no such params file; check the path")
    if not path.is_file():
        raise ParamsError(f"{path}: not a file; give a YAML params file")
    if path.stat().st_size > MAX_PARAMS_BYTES:
        raise ParamsError(f"{path}: {path.stat().st_size} bytes is over the {MAX_PARAMS_BYTES} bytes a params file "
                          "may have; check that this is the right file")
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError:
        raise ParamsError(f"{path}: not UTF-8 text (UTF-16 or binary?); save it as UTF-8") from None
    try:
        data = yaml.load(text, Loader=_UniqueKeyLoader)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        problem = str(getattr(e, "problem", None) or e).splitlines()[0][:120]
        raise ParamsError(f"{path}:{where} is not valid YAML ({problem}); fix the syntax") from None
    except (RecursionError, ValueError, TypeError, OverflowError) as e:  # deep nesting, odd scalars (!!binary, dates)
        raise ParamsError(f"{path}: cannot be read as params ({type(e).__name__}: {str(e)[:80]}); "
                          "use plain YAML values") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ParamsError(f"{path}: expected a mapping of key: value, got {type(data).__name__}")
    _walk(data, str(path))
    return data


def one_line(err: ValidationError, source: str) -> str:
    """The first pydantic error as one line: ``file: key: problem (got value)``."""
    e = err.errors()[0]
    loc = ".".join(str(x) for x in e["loc"]) or "(top level)"
    if e["type"] == "extra_forbidden":
        return f"{source}: unknown key '{loc}'; remove it or check its spelling"
    if e["type"] == "missing":
        return f"{source}: missing key '{loc}'; add it"
    msg = e["msg"].removeprefix("Value error, ")
    got = repr(e.get("input"))
    got = got if len(got) <= 80 else got[:80] + "…"
    return f"{source}: {loc[:80]}: {msg} (got {got})"


def validate(model: type[BaseModel], data: dict, source: str) -> BaseModel:
    try:
        return model.model_validate(data)
    except ValidationError as e:
        raise ParamsError(one_line(e, source)) from None
