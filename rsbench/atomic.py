"""The one way rsbench writes an output file: whole or not at all.

Every writer (records, TSV exports, leaderboards, plots, checkpoints) goes through :func:`atomic_write`: the
bytes go to a temporary file in the target's folder, are flushed to disk
(``fsync``) and renamed over the target (``os.replace``), so a reader sees the old file or the whole new
one, never a partial or 0-byte file. Any failure (the target is a folder, its folder is missing or
read-only, a dangling symbolic link, a full disk) is one :class:`RsbenchError` line naming the path, and
the temporary file is removed. :func:`check_output_path` runs the same checks up front, so a command can
refuse a bad ``-o`` before it does any work.
"""

from __future__ import annotations

import contextlib
import errno
import gzip
import json
import math
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

from rsbench.errors import RsbenchError

HINT = "choose a file name in a writable folder"
_PENDING: set[str] = set()  # temporary files being written now (see remove_pending_files)


def _cannot_write(path: str | os.PathLike, reason: str) -> RsbenchError:
    return RsbenchError(f"cannot write {str(path) or repr('')}: {reason}", HINT)


def check_output_path(path: str | os.PathLike, make_folder: bool = False) -> Path:
    """The file that writing ``path`` replaces: ``path`` itself, or the file an existing symbolic link points
    to (the link is kept). Refuses ``''``, a folder, a dangling link and a missing folder (unless
    ``make_folder``: then the writer creates it), each as one :class:`RsbenchError` line. Writes nothing."""
    if str(path) in ("", ".") or Path(path).name in ("", ".", ".."):
        raise _cannot_write(path, "no file name given")
    target = Path(path)
    if target.is_symlink():
        resolved = Path(os.path.realpath(target))
        if not resolved.exists():
            raise _cannot_write(path, f"a dangling symbolic link (to {os.readlink(target)})")
        target = resolved
    if target.is_dir():
        raise _cannot_write(path, "is a folder, not a file name")
    folder = target.parent
    if make_folder:  # the nearest existing ancestor must be a folder
        folder = next(parent for parent in (folder, *folder.parents) if parent.exists())
    if not folder.is_dir():
        raise _cannot_write(path, f"folder {folder} does not exist" if not folder.exists() else f"{folder} is a file")
    return target


def atomic_write(
    path: str | os.PathLike, data: bytes | Callable[[BinaryIO], object], *, mode: int = 0o644, make_folder: bool = False
) -> Path:
    """Write ``data`` (bytes, or a function that writes to a binary handle: ``torch.save``, matplotlib's
    ``savefig``) to a temporary file beside ``path``, flush it to disk and rename it over ``path`` with
    permission bits ``mode`` (creating its folder with ``make_folder``); returns the file written. Readers
    see the old file or the whole new one; a failure is one :class:`RsbenchError` line and leaves no
    temporary file, no partial and no 0-byte output."""
    target = check_output_path(path, make_folder)
    tmp: str | None = None
    try:
        if make_folder:
            target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
        _PENDING.add(tmp)
        with os.fdopen(fd, "wb") as handle:
            if isinstance(data, bytes):
                handle.write(data)
            else:
                data(handle)
            handle.flush()
            os.fsync(handle.fileno())
            os.fchmod(handle.fileno(), mode)
        os.replace(tmp, target)
        tmp = None
    except OSError as error:
        reason = "the disk is full" if error.errno == errno.ENOSPC else error.strerror or str(error)
        raise _cannot_write(path, reason or type(error).__name__) from None
    finally:
        if tmp is not None:
            _PENDING.discard(tmp)
            Path(tmp).unlink(missing_ok=True)
    return target


def remove_pending_files() -> None:
    """Remove the temporary files of writes under way: for a process about to end at once (a rank told to
    stop), which skips the cleanup of :func:`atomic_write`."""
    for tmp in list(_PENDING):
        with contextlib.suppress(OSError):
            os.unlink(tmp)


def atomic_write_text(path: str | os.PathLike, text: str, *, make_folder: bool = False) -> Path:
    """:func:`atomic_write` of ``text`` as UTF-8."""
    return atomic_write(path, text.encode("utf-8"), make_folder=make_folder)


def write_json_strict(path: str | os.PathLike, document: Any, indent: int | None = None) -> Path:
    """``document`` as strict JSON (no NaN or infinity: a non-finite number is an error, never written),
    gzip-compressed (reproducibly: no time stamp) when ``path`` ends in ``.gz``, written atomically."""
    try:
        text = json.dumps(document, allow_nan=False, indent=indent, separators=None if indent else (",", ":"))
    except ValueError as error:
        raise _cannot_write(path, f"the document is not strict JSON ({error})") from None
    data = text.encode()
    if str(path).endswith(".gz"):
        data = gzip.compress(data, mtime=0)
    return atomic_write(path, data)


def strict_json(value: Any) -> Any:
    """``value`` with every non-finite float (NaN, ±inf) replaced by None, so it serializes as strict JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: strict_json(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [strict_json(v) for v in value]
    return value


def json_text(value: Any, indent: int | None = None) -> str:
    """``value`` as strict JSON text (NaN and infinities become null)."""
    separators = None if indent else (",", ":")
    return json.dumps(strict_json(value), indent=indent, allow_nan=False, separators=separators)
