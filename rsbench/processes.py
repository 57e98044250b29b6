"""Which processes certify a run, and whether they still run: each process that opens a run records itself
(host, process id, start time) in the run's provenance (``workers``), so that ``rsbench runs`` tells a run
being certified from an interrupted one without a column of its own. Liveness can be checked only on the
host a process ran on. The record is the store's own: a run record (``rsbench export``) leaves it out."""

from __future__ import annotations

import os
import platform
from pathlib import Path
from typing import Any


def this_process() -> dict[str, Any]:
    """This process as a run's provenance records it."""
    return {"host": platform.node(), "pid": os.getpid(), "started": start_time(os.getpid())}


def start_time(pid: int) -> int | None:
    """When process ``pid`` started, in clock ticks since boot (Linux's ``/proc/PID/stat``), None where
    unknown. With the pid it names one process, never a later one that was given the same pid."""
    fields = _stat(pid)
    return int(fields[19]) if fields else None


def _stat(pid: int) -> list[str] | None:
    """The fields of ``/proc/PID/stat`` after the command name (state first), None where unreadable."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def is_alive(worker: dict[str, Any]) -> bool | None:
    """Whether the process ``worker`` (:func:`this_process` of some process) still runs; None when that is
    unknown here (it ran on another host, or on Windows, whose process API rsbench does not use)."""
    pid = worker.get("pid")
    if worker.get("host") != platform.node() or not isinstance(pid, int) or os.name != "posix":
        return None
    try:
        os.kill(pid, 0)  # signal 0: nothing is sent, only whether the process exists
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # it exists, under another user
    fields = _stat(pid)
    if fields is None:  # no /proc (macOS): the pid exists
        return True
    return fields[0] != "Z" and worker.get("started") in (None, int(fields[19]))


def activity(status: str, provenance: dict[str, Any] | None) -> str:
    """What a run's status means now: ``complete``; ``running`` while a process that certifies it still runs
    here; ``running on HOST?`` when the processes that opened it ran on another host, which cannot be
    checked from here; else ``incomplete``: interrupted (or imported in part), resumed by rerunning its
    command."""
    if status == "complete":
        return "complete"
    workers = (provenance or {}).get("workers") or []
    alive = [is_alive(worker) for worker in workers]
    if True in alive:
        return "running"
    elsewhere = sorted({str(w.get("host")) for w, a in zip(workers, alive, strict=True) if a is None})
    return f"running on {', '.join(elsewhere)}?" if elsewhere else "incomplete"
