"""The ground floor of every file rsbench writes: one atomic write, and strict JSON.

Every output (checkpoints, run records, TSV logs, leaderboards, plots, site pages) goes through
:func:`atomic_write`: readers see the old file or the whole new one, never a partial file, and a failed
write leaves neither a temporary file nor a 0-byte output behind.
"""

from __future__ import annotations

import errno
import json
import math
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

from rsbench.errors import RsbenchError


def atomic_write(
    path: str | os.PathLike, data: bytes | Callable[[BinaryIO], object], *, make_folder: bool = False
) -> Path:
    """Write ``data`` (bytes, or a function writing to a binary handle) to a temporary file beside ``path``,
    flush it to disk, then rename it over ``path``. An unwritable ``path`` (missing or read-only folder, a
    folder itself, an empty name, a full disk) is one :class:`RsbenchError`, and no temporary file is left."""
    if not str(path):
        raise RsbenchError("an output file name is empty", "give a file path")
    path = Path(path)
    tmp = None
    try:
        if path.is_dir():
            raise IsADirectoryError(errno.EISDIR, "is a folder, not a file name")
        if make_folder:
            path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        with os.fdopen(fd, "wb") as handle:
            if isinstance(data, bytes):
                handle.write(data)
            else:
                data(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
        tmp = None
    except OSError as error:
        raise RsbenchError(f"cannot write {path}: {error.strerror or error}", "choose a writable file path") from None
    finally:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
    return path


def atomic_write_text(path: str | os.PathLike, text: str, *, make_folder: bool = False) -> Path:
    """:func:`atomic_write` of ``text`` as UTF-8."""
    return atomic_write(path, text.encode("utf-8"), make_folder=make_folder)


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
