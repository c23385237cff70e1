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
import hashlib
import json
import os
import shutil
import signal
import socket
import stat
import tempfile
import time
from pathlib import Path

import h5py

from .errors import DataError, EnergykitError
from .price import SCHEMA

__all__ = ["FAULT_ENV", "fault_point", "DiskFullError", "atomic_write_text", "atomic_write_json",
           "fsync_dir", "jsonable", "read_json", "temp_path", "atomic_write_netcdf", "kit_netcdf_kind", "RawLog", "WriterLock", "open_no_follow", "file_sha256",
           "check_output"]

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


def open_no_follow(path: Path, flags: int, mode: int = 0o644) -> int:
    """``os.open`` that never follows a symlink at ``path``: a symlinked state file is refused in one line.

    A lock or state file planted as a symlink to another file would otherwise truncate that file.
    """
    try:
        return os.open(path, flags | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0), mode)
    except OSError as e:
        if e.errno == errno.ELOOP or Path(path).is_symlink():
            raise EnergykitError(f"{path} is a symbolic link; energykit never writes through one — remove it "
                                 "(rm the link, not its target) and rerun") from None
        raise


def temp_path(path: Path) -> Path:
    """A new, unique temporary file beside ``path`` (``.NAME.<random>.tmp``), created empty with ``O_EXCL``.

    Each writer gets its own name, so two processes writing one path never share (and tear) a temp
    file, and a symlink planted at a guessable temp name is never written through.
    """
    path = Path(path)
    try:
        fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as e:
        raise _disk_error(path, e) from None
    try:
        os.fchmod(fd, 0o666 & ~_UMASK)  # mkstemp makes it 0600: the kit's files are readable as any new file is
    finally:
        os.close(fd)
    return Path(name)


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


_UMASK = _umask()


def atomic_write_text(path: Path, text: str) -> None:
    """Replace ``path`` by ``text`` atomically (own temp file, fsync, rename, fsync of the folder)."""
    path = Path(path)
    tmp = temp_path(path)
    try:
        with os.fdopen(open_no_follow(tmp, os.O_WRONLY | os.O_TRUNC), "w", encoding="utf-8") as f:
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
        raise _disk_error(path, e) from None
    finally:  # also on Ctrl-C: no temp file is left behind
        tmp.unlink(missing_ok=True)


def atomic_write_netcdf(ds, path: Path, what: str = "every finished window is kept in the log") -> Path:
    """Write the xarray Dataset ``ds`` to ``path`` (h5netcdf) through its own temp file, then rename.

    The free space is checked first (h5py can crash on a full disk); a failure or an interrupt leaves
    the old file and no temp file.
    """
    path = Path(path)
    need = 2 * ds.nbytes + (1 << 20)
    free = shutil.disk_usage(path.parent).free
    if free < need:
        raise DiskFullError(f"{path}: {free / 1e6:.1f} MB free, about {need / 1e6:.1f} MB needed; free space and "
                            f"rerun the same command ({what})")
    tmp = temp_path(path)
    try:
        ds.to_netcdf(tmp, engine="h5netcdf")
        fault_point(f"write {path.name}")  # a kill here leaves only the temp file
        tmp.replace(path)
    except OSError as e:
        raise DiskFullError(f"{path}: cannot write ({e.strerror or e}); free space and rerun") from None
    finally:
        tmp.unlink(missing_ok=True)
    return path


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
    path = Path(path)
    if not path.exists() and not path.is_symlink():
        return {}
    st = os.stat(path)
    if not stat.S_ISREG(st.st_mode) or st.st_size > MAX_STATE_BYTES:
        raise DataError(f"{path}: not a regular file (a FIFO, device or folder) or over {MAX_STATE_BYTES} bytes; "
                        "restore the kit's state file or measure into a new output folder")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise DataError(f"{path}: not valid JSON; it was edited by hand or damaged — restore it or "
                        "measure into a new output folder") from None
    if not isinstance(data, dict):
        raise DataError(f"{path}: expected a JSON object; restore it or measure into a new output folder")
    return data


MAX_STATE_BYTES = 256 << 20
"""Largest JSON state file read [256 MiB] (a shard's plan of a large sweep is a few MB)."""


class RawLog:
    """Append-only JSONL log, flushed and fsynced after every record."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self._drop_torn_tail()
        try:
            self.f = os.fdopen(open_no_follow(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT), "a",
                               encoding="utf-8")
        except OSError as e:
            raise _disk_error(self.path, e) from None

    def _drop_torn_tail(self):
        """Cut a torn last line off with one truncate; complete lines are never rewritten."""
        if not self.path.exists():
            return
        size = self.path.stat().st_size
        if size == 0:
            return
        try:
            fd = open_no_follow(self.path, os.O_RDWR)
        except OSError as e:
            raise _disk_error(self.path, e) from None
        with os.fdopen(fd, "rb+") as f:
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
            fd = open_no_follow(self.path, os.O_RDWR | os.O_CREAT)
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


def file_sha256(path: str | Path) -> str:
    """SHA-256 of a file's bytes (hex): ties a result (a fit file) to the content of its data."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def kit_netcdf_kind(path: Path) -> str:
    """``"fits"`` or ``"measurements"`` for a NetCDF (HDF5) file the kit wrote, ``""`` for any other file.

    The kit's files are told by the markers it writes into them: a fit file's ``format`` attribute
    ``energykit-fits``, a measurement dataset's ``energykit_version`` attribute.
    """
    try:
        with open(path, "rb") as f:
            if f.read(8) != b"\x89HDF\r\n\x1a\n":
                return ""
        with h5py.File(path, "r") as f:
            fmt, version = f.attrs.get("format", ""), f.attrs.get("energykit_version")
    except (OSError, ValueError):
        return ""
    fmt = fmt.decode(errors="replace") if isinstance(fmt, bytes) else str(fmt)
    if fmt == "energykit-fits":
        return "fits"
    return "measurements" if version is not None else ""


def _is_price_card(path: Path) -> bool:
    """A JSON object whose ``schema`` is the price card's (the marker ``energykit export`` writes)."""
    try:
        if path.stat().st_size > MAX_STATE_BYTES:
            return False
        data = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, TypeError, RecursionError, OSError):
        return False
    return isinstance(data, dict) and data.get("schema") == SCHEMA


def check_output(path: str | Path, inputs=(), kind: str = "", option: str = "the output") -> Path:
    """Refuse, in one line, an output that is one of the command's inputs or an existing file not of ``kind``.

    Parameters
    ----------
    path : str or Path
        The file a command is about to write (replace).
    inputs : iterable of str or Path
        Files and folders the same command reads; the output may be none of them, nor lie inside an
        input folder's crash-safe state (``windows.jsonl``, ``*.json``, ``.lock``).
    kind : str
        ``"netcdf"``: an existing ``path`` may be replaced only when it is a NetCDF (HDF5) file, as
        the kit writes; ``"fits"``: only a fit file (``format`` attribute ``energykit-fits``);
        ``"measurements"``: only a NetCDF that is not a fit file; ``"json"``: only a price card (its ``schema`` marker); the markers are those the kit writes
        (:func:`kit_netcdf_kind`), never a word found in the text;
        any other existing file is not the kit's to overwrite.
    option : str
        How the user names the output (``--save``, ``-o``), for the message.
    """
    path = Path(path)
    if not path.name or path.name in (".", ".."):
        raise EnergykitError(f"{option} {str(path)!r} is not a file name; give a path such as out/merged.nc")
    if path.is_symlink():
        raise EnergykitError(f"{option} {path} is a symbolic link; give a new file path (energykit never writes "
                             "through a link)")
    if path.is_dir():
        raise EnergykitError(f"{option} {path} is a folder; give a file path inside it, e.g. {path / 'merged.nc'}")
    target = path.resolve()
    for src in inputs:
        src = Path(src).resolve()
        if target == src:
            raise EnergykitError(f"{option} {path} is also an input of this command; it would replace it — "
                                 "write to another file")
        if src.is_dir() and target.is_relative_to(src) and (target.suffix in (".jsonl", ".json", "")
                                                           or target.name.startswith(".")):
            raise EnergykitError(f"{option} {path} would replace the state of the input folder {src}; "
                                 "write to a file outside it, e.g. merged.nc")
    if path.exists():
        if not path.is_file():
            raise EnergykitError(f"{option} {path} exists and is not a regular file; give a new file path")
        if kind == "json" and not _is_price_card(path):  # the kit's JSON output: a price card, by its schema
            raise EnergykitError(f"{option} {path} exists and is not a price card written by energykit; it would be "
                                 "overwritten — give a new file path")
        if kind in ("netcdf", "fits", "measurements"):
            have = kit_netcdf_kind(path)
            if not have:
                raise EnergykitError(f"{option} {path} exists and is not a NetCDF file written by energykit; "
                                     "it would be overwritten — give a new file path")
            if kind != "netcdf" and have != kind:  # a fit never replaces measurements, nor merged measurements a fit
                raise EnergykitError(f"{option} {path} exists and holds {have}, not {kind}; it would be replaced — "
                                     "give a new file path")
    return path
