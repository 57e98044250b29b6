"""``rsbench launch``: torchrun's elastic agent run in this process, with its ranks on a short leash.

- The ranks stop with the launcher: SIGINT and SIGTERM reach them through the agent, and each rank stops
  by itself when the launcher dies (:func:`rsbench.distributed.start_rank`), a SIGKILL of the launcher's
  process group by a scheduler included.
- Failures are one line: ranks hand their error lines to the launcher (a private folder,
  ``$RSBENCH_LAUNCH_DIR``), which shows the first once, or says which rank was killed by which signal; a
  rendezvous that fails, or does not complete within ``timeout`` seconds (a port another program holds, a
  machine that never joins), is one line too, never a hang.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from rsbench.distributed import LAUNCH_DIR, LAUNCHER_PID
from rsbench.errors import RsbenchError

RANK_COMMANDS = ("train", "certify", "predict")
RENDEZVOUS_HINT = (
    "start every machine with the same --rdzv-endpoint and --rdzv-id, check that no other program listens on "
    "that port, or raise --timeout"
)


class LaunchInterrupted(Exception):
    """The launcher got SIGINT or SIGTERM (``signal_number``); the agent has stopped the ranks."""

    def __init__(self, signal_number: int):
        super().__init__(signal.Signals(signal_number).name)
        self.signal_number = signal_number


def launch(
    args: list[str], nproc_per_node: int, nnodes: str, node_rank: int, endpoint: str | None, run_id: str, timeout: float
) -> None:
    """Run ``rsbench ARGS`` on ``nproc_per_node`` ranks here (of ``nnodes`` machines); returns when all
    succeeded. Raises :class:`RsbenchError` (one line) when a rank or the rendezvous fails, and
    :class:`LaunchInterrupted` on SIGINT or SIGTERM."""
    if not args or args[0] not in RANK_COMMANDS:
        raise RsbenchError(
            "launch runs train, certify or predict", "e.g. rsbench launch --nproc-per-node 2 certify CHECKPOINT"
        )
    if nproc_per_node < 1:
        raise RsbenchError(f"--nproc-per-node must be at least 1, not {nproc_per_node}")
    if not timeout > 0:
        raise RsbenchError(f"--timeout must be a positive number of seconds, not {timeout}")
    if endpoint:
        seconds = max(1, round(timeout))
        options = ["--rdzv-backend=c10d", f"--rdzv-endpoint={endpoint}", f"--rdzv-id={run_id}"]
        options += [f"--rdzv-conf=join_timeout={seconds},read_timeout={min(seconds, 60)}"]
    elif nnodes == "1":
        options = ["--standalone"]  # a free port of this machine: two launches never collide
    else:
        raise RsbenchError(
            f"--nnodes {nnodes} needs --rdzv-endpoint", "e.g. --rdzv-endpoint node0:29400 on every machine"
        )
    options += [f"--nproc-per-node={nproc_per_node}", f"--nnodes={nnodes}", f"--node-rank={node_rank}"]
    options += ["--max-restarts=0"]
    where = f"the rendezvous at {endpoint}" if endpoint else "the rendezvous"
    _run_agent(options, args, where, timeout)


def _run_agent(options: list[str], args: list[str], where: str, timeout: float) -> None:
    import logging

    from torch.distributed import DistError
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.elastic.rendezvous.api import RendezvousError
    from torch.distributed.run import parse_args, run

    for name in list(logging.root.manager.loggerDict):  # torch sets levels per module: silence each
        if name.startswith("torch.distributed"):
            logging.getLogger(name).setLevel(logging.CRITICAL)
    folder = Path(tempfile.mkdtemp(prefix="rsbench-launch-"))
    started = threading.Event()  # set when the agent is done with the rendezvous, one way or another
    saved = {name: os.environ.get(name) for name in (LAUNCH_DIR, LAUNCHER_PID)}
    os.environ[LAUNCH_DIR], os.environ[LAUNCHER_PID] = str(folder), str(os.getpid())  # the ranks inherit both
    deadline = threading.Thread(
        target=_rendezvous_deadline, args=(folder, started, timeout, where), name="rsbench-rendezvous", daemon=True
    )
    deadline.start()
    try:
        run(parse_args([*options, "-m", "rsbench", "--", *args]))
    except ChildFailedError as error:
        raise _failure(error, folder, args[0]) from None
    except SignalException as error:
        raise LaunchInterrupted(error.sigval) from None
    except (RendezvousError, DistError, ValueError) as error:
        raise RsbenchError(f"{where} failed: {_first_line(error)}", RENDEZVOUS_HINT) from None
    finally:
        started.set()
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        shutil.rmtree(folder, ignore_errors=True)


def _rendezvous_deadline(folder: Path, started: threading.Event, timeout: float, where: str) -> None:
    """End the launcher with one line if no rank has started ``timeout`` seconds after launch: torch's
    rendezvous can block inside C++ (a TCP store that connected to a program that never answers), out of
    reach of its own timeouts. No rank has started then, so nothing is left behind."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if started.is_set() or any(folder.glob("ready-*")):
            return
        time.sleep(0.2)
    if started.is_set() or any(folder.glob("ready-*")):
        return
    print(f"rsbench: error: {where} did not complete within {timeout:g} s (hint: {RENDEZVOUS_HINT})", file=sys.stderr)
    sys.stderr.flush()
    shutil.rmtree(folder, ignore_errors=True)
    os._exit(2)


def _first_line(error: BaseException) -> str:
    """The innermost cause's first line: torch wraps the store's error in the rendezvous's."""
    while error.__cause__ is not None:
        error = error.__cause__
    lines = str(error).strip().splitlines()
    return lines[0][:200] if lines else type(error).__name__


RANK_LABEL = re.compile(r" \(rank \d+\)")


def _failure(error: Any, folder: Path, command: str) -> RsbenchError:
    """The one line for failed ranks: the first error a rank reported (without its rank when every rank
    reported the same), else the first rank killed by a signal, else a lost contact, else an exit code."""
    reports = []
    for path in folder.iterdir():  # KIND-RANK files, written atomically (skip a write under way)
        kind, _, rank = path.name.partition("-")
        if kind in ("error", "lost") and rank.isdigit():
            try:
                reports.append((path.stat().st_mtime_ns, int(rank), kind, path.read_text().strip()))
            except OSError:
                continue
    by_kind: dict[str, list[str]] = {}
    for _, _, kind, line in sorted(reports):
        by_kind.setdefault(kind, []).append(line)
    errors = by_kind.get("error", [])
    if errors:
        same = {RANK_LABEL.sub("", line, count=1) for line in errors}
        return ReportedError(same.pop() if len(same) == 1 else errors[0])
    failures = sorted(error.failures.items(), key=lambda item: item[1].timestamp)
    for rank, failure in failures:
        if failure.exitcode < 0:
            return RsbenchError(
                f"rank {rank} of `rsbench {command}` was killed by {failure.signal_name()}",
                "the other ranks were stopped; completed work is saved, rerun the command to resume",
            )
    for rank, failure in failures:
        if failure.exitcode - 128 in (signal.SIGTERM, signal.SIGINT):  # stopped by a signal (stop_rank)
            return RsbenchError(
                f"rank {rank} of `rsbench {command}` was stopped by {signal.Signals(failure.exitcode - 128).name}",
                "the other ranks were stopped; completed work is saved, rerun the command to resume",
            )
    if by_kind.get("lost"):
        return ReportedError(by_kind["lost"][0])
    rank, failure = failures[0]
    return RsbenchError(f"rank {rank} of `rsbench {command}` exited with code {failure.exitcode} (its output is above)")


class ReportedError(RsbenchError):
    """A rank's own error line, shown by the launcher as the rank wrote it."""

    def __init__(self, line: str):
        super().__init__(line)
        self.line = line
