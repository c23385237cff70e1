"""Crash-safe state of a sweep's output folder: atomic files, the append-only log, one writer.

- :func:`atomic_write_text` writes a temp file, fsyncs it, renames it over the target and fsyncs
  the folder: a reader sees the old file or the new one, never a torn one.
- :class:`RawLog` appends one JSON line per window and fsyncs it. A crash mid-line leaves a torn
  tail, which the next run cuts off with one ``ftruncate`` (the log is never rewritten in place).
- :class:`WriterLock` is an advisory ``flock`` on ``OUTPUT/.lock``: one ``measure`` per folder; the
  kernel releases it when the process dies.
- :func:`fault_point` is the fault-injection hook of the reliability tests: with
  ``ENERGYKIT_FAULT_KILL_AT=N`` the process kills itself (SIGKILL) at its N-th write point, with
  ``ENERGYKIT_FAULT_KILL_AT=LABEL@N`` at the N-th write point whose label contains LABEL.

A full disk is reported in one line; every window already in the log stays there.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import signal
import socket
import time
from pathlib import Path

from .errors import DataError, EnergykitError

__all__ = ["FAULT_ENV", "fault_point", "DiskFullError", "atomic_write_text", "atomic_write_json",
           "fsync_dir", "jsonable", "read_json", "RawLog", "WriterLock"]

FAULT_ENV = "ENERGYKIT_FAULT_KILL_AT"
_writes = 0


def fault_point(label: str) -> None:
    """A write point: the fault-injection hook kills the process here when its turn comes."""
    global _writes
    at = os.environ.get(FAULT_ENV)
    if not at:
        return
    want, _, n = at.rpartition("@")
    if want and want not in label:
        return
    _writes += 1
    if _writes == int(n):
        os.kill(os.getpid(), signal.SIGKILL)


class DiskFullError(EnergykitError):
    """No space left to write a state file; what is already on disk is kept."""


def _disk_error(path: Path, e: OSError) -> EnergykitError:
    if e.errno in (errno.ENOSPC, errno.EDQUOT):
        return DiskFullError(f"{path}: no space left on the device; free space and rerun the same command "
                             "(every finished window is kept)")
    return EnergykitError(f"{path}: cannot write ({e.strerror}); check the output folder's permissions and space")


def atomic_write_text(path: Path, text: str) -> None:
    """Replace ``path`` by ``text`` atomically (temp file, fsync, rename, fsync of the folder)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            half = len(text) // 2
            f.write(text[:half])
            f.flush()
            fault_point(f"write {path.name}")  # a kill here leaves only a torn temp file
            f.write(text[half:])
            f.flush()
            os.fsync(f.fileno())
        tmp.replace(path)
        fsync_dir(path.parent)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise _disk_error(path, e) from None


def atomic_write_json(path: Path, obj) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, default=jsonable) + "\n")


def fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def jsonable(v):
    if hasattr(v, "item"):
        return v.item()
    return str(v)


def read_json(path: Path) -> dict:
    """A state file written by :func:`atomic_write_json`, or ``{}`` when there is none."""
    if not path.exists():
        return {}
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise DataError(f"{path}: not valid JSON; it was edited by hand or damaged — restore it or "
                        "measure into a new output folder") from None
    if not isinstance(data, dict):
        raise DataError(f"{path}: expected a JSON object; restore it or measure into a new output folder")
    return data


class RawLog:
    """Append-only JSONL log, flushed and fsynced after every record."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self._drop_torn_tail()
        try:
            self.f = open(self.path, "a", encoding="utf-8")
        except OSError as e:
            raise _disk_error(self.path, e) from None

    def _drop_torn_tail(self):
        """Cut a torn last line off with one truncate; complete lines are never rewritten."""
        if not self.path.exists():
            return
        size = self.path.stat().st_size
        if size == 0:
            return
        with open(self.path, "rb+") as f:
            f.seek(max(0, size - 1))
            if f.read(1) == b"\n":
                return
            # find the last newline, reading backwards in chunks
            end = size
            keep = 0
            while end > 0:
                start = max(0, end - 65536)
                f.seek(start)
                chunk = f.read(end - start)
                i = chunk.rfind(b"\n")
                if i >= 0:
                    keep = start + i + 1
                    break
                end = start
            fault_point("trim windows.jsonl")
            f.truncate(keep)
            f.flush()
            os.fsync(f.fileno())

    def append(self, rec: dict):
        line = json.dumps(rec, default=jsonable) + "\n"
        try:
            half = len(line) // 2
            self.f.write(line[:half])
            self.f.flush()
            fault_point("append windows.jsonl")  # a kill here leaves a torn last line
            self.f.write(line[half:])
            self.f.flush()
            os.fsync(self.f.fileno())
        except OSError as e:
            raise _disk_error(self.path, e) from None

    def close(self):
        try:
            self.f.close()
        except OSError:
            pass


class WriterLock:
    """An advisory lock on ``folder/.lock``: one writer per output folder, released when the process dies."""

    def __init__(self, folder: Path):
        self.path = Path(folder) / ".lock"
        self.fd = None

    def acquire(self) -> "WriterLock":
        """Take the lock at once, or raise naming the process that holds it."""
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as e:
            raise _disk_error(self.path, e) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 4096, 0).decode(errors="replace").strip() or "another process"
            os.close(fd)
            raise EnergykitError(f"{self.path.parent} is being measured by {holder}; wait for it to finish, "
                                 "or measure into another output folder") from None
        self.fd = fd
        return self

    def claim(self) -> None:
        """Write who holds the lock into the lock file (after the run is known to go ahead)."""
        info = f"pid {os.getpid()} on {socket.gethostname()} since {time.strftime('%Y-%m-%dT%H:%M:%S')}"
        os.ftruncate(self.fd, 0)
        os.pwrite(self.fd, info.encode(), 0)

    def release(self) -> None:
        if self.fd is not None:
            fcntl.flock(self.fd, fcntl.LOCK_UN)
            os.close(self.fd)
            self.fd = None
