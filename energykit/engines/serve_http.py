"""The HTTP side of the ``serve`` engine, the same for every server family: one ``/v1/completions`` request
sent, streamed and timed (:func:`post_completion`), the server's JSON endpoints read (:func:`get_json`),
and the local process listening on a URL's port (:func:`listening_pid`, for ``meter: process_cpu``).

What differs between servers (the dialects: the request fields that ask for exact lengths, and the
checks of each response) lives with the engine in :mod:`energykit.engines.serve`. ``httpx`` (the
``serve`` extra) is imported when a request is made, never at import time. Every failure of the server or
the network is a one-line :class:`~energykit.errors.EngineError`.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from urllib.parse import urlparse

from ..errors import EngineError, MissingExtraError, ParamsError

__all__ = ["COMPLETIONS", "require_httpx", "get_json", "listening_pid", "post_completion"]

COMPLETIONS = "/v1/completions"
"""The OpenAI-compatible completions endpoint every dialect is asked through."""


def require_httpx():
    """The ``httpx`` module, or a one-line :class:`MissingExtraError` naming the ``serve`` extra."""
    try:
        import httpx
    except ImportError:
        raise MissingExtraError("httpx", "serve") from None
    return httpx


def get_json(client, url: str):
    """GET ``url`` as JSON, or None where the server has no such endpoint; one-line errors otherwise."""
    httpx = require_httpx()
    try:
        r = client.get(url)
    except httpx.ConnectError as e:
        raise EngineError(f"cannot connect to the server at {url} ({e}); start it or fix serve.url") from None
    except httpx.TimeoutException:
        raise EngineError(f"the server at {url} did not answer in time; check it is up") from None
    if r.status_code in (404, 405):
        return None
    if r.status_code >= 400:
        raise EngineError(f"the server answered {r.status_code} to GET {url}: {r.text.strip()[:300]!r}")
    try:
        return r.json()
    except ValueError:
        return {"text": r.text.strip()[:200]}


def listening_pid(url: str) -> int:
    """The local process listening on ``url``'s port (Linux ``/proc``), for ``meter: process_cpu``."""
    u = urlparse(url)
    port = u.port or (443 if u.scheme == "https" else 80)
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            f = line.split()
            if len(f) > 9 and f[3] == "0A" and int(f[1].rsplit(":", 1)[1], 16) == port:  # 0A: LISTEN
                inodes.add(f[9])
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            for fd in (proc / "fd").iterdir():
                target = fd.readlink().as_posix() if hasattr(fd, "readlink") else ""
                if target.startswith("socket:[") and target[8:-1] in inodes:
                    return int(proc.name)
        except OSError:
            continue
    raise ParamsError(f"no local process listens on port {port} of {url}; meter: process_cpu needs the server on "
                      "this machine (or give serve.server_pid)")


async def post_completion(client, base_url: str, body: dict, stream: bool, timeout_s: float, rec: dict):
    """POST ``body`` to ``/v1/completions`` of ``client`` (an ``httpx.AsyncClient`` on ``base_url``).

    Records in ``rec`` when the first and last token arrived (``first_token_s``, ``last_token_s``,
    ``time.perf_counter`` [s]; a reply that is not streamed arrives in one piece, so both are its arrival)
    and returns the server's ``(usage, finish_reason)``. ``timeout_s`` [s] is the client's, named in the
    error when a request exceeds it.
    """
    httpx = require_httpx()
    url = base_url + COMPLETIONS
    try:
        if not stream:
            r = await client.post(COMPLETIONS, json=body)
            _raise_for(r.status_code, r.text, url)
            data = r.json()
            rec["first_token_s"] = rec["last_token_s"] = time.perf_counter()
            return data.get("usage"), (data.get("choices") or [{}])[0].get("finish_reason")
        return await _streamed(client, url, body, rec)
    except httpx.ConnectError as e:
        raise EngineError(f"cannot connect to the server at {url} ({e}); is it still running? rerun to resume")
    except httpx.TimeoutException:
        raise EngineError(f"a request to {url} took over serve.timeout_s {timeout_s:g} s; raise "
                          "it or check the server")
    except (httpx.RemoteProtocolError, httpx.ReadError) as e:
        raise EngineError(f"the server at {url} dropped the connection ({type(e).__name__}); it may have died; "
                          "rerun to resume")
    except ValueError as e:  # a chunk that is not JSON
        raise EngineError(f"the server at {url} sent a stream chunk that is not JSON ({e})")


async def _streamed(client, url: str, body: dict, rec: dict):
    """The server-sent events of one streamed completion: token times into ``rec``, ``(usage, finish_reason)``."""
    usage, finish = None, None
    async with client.stream("POST", COMPLETIONS, json=body) as r:
        if r.status_code >= 400:
            _raise_for(r.status_code, (await r.aread()).decode(errors="replace"), url)
        async for line in r.aiter_lines():
            if not line.startswith("data:"):
                continue
            payload = line[5:].strip()
            if payload == "[DONE]":
                break
            chunk = json.loads(payload)
            if "error" in chunk:
                raise EngineError(f"the server's stream failed: {str(chunk['error'])[:300]!r}")
            now = time.perf_counter()
            for ch in chunk.get("choices") or []:
                if ch.get("text") or ch.get("token_ids"):
                    if rec["first_token_s"] != rec["first_token_s"]:
                        rec["first_token_s"] = now
                    rec["last_token_s"] = now
                if ch.get("finish_reason"):
                    finish = ch["finish_reason"]
            if chunk.get("usage"):
                usage = chunk["usage"]
    if usage is None and finish is None:
        raise EngineError(f"the stream from {url} ended before its last chunk: the server may have died; "
                          "rerun to resume")
    if rec["first_token_s"] != rec["first_token_s"]:  # no text at all: the end is the only token time
        rec["first_token_s"] = rec["last_token_s"] = time.perf_counter()
    return usage, finish


def _raise_for(status: int, text: str, url: str) -> None:
    if status >= 400:
        msg = " ".join(text.split())[:300]
        raise EngineError(f"the server answered HTTP {status} to POST {url}: {msg!r}")
