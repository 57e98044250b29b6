"""Processes working on one job, as ``torchrun`` launches them (``torch.distributed``: gloo on CPUs, NCCL on
GPUs). Without torchrun's environment the world is one process and nothing here communicates.

Training uses DistributedDataParallel with rank 0 alone writing; certification splits the examples still
to do across ranks, each committing its own rows into the one run.
"""

from __future__ import annotations

import atexit
import dataclasses
import datetime
import gc
import os
import shutil
import signal
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import torch
import torch.distributed as dist

from rsbench.errors import RsbenchError

T = TypeVar("T")
TIMEOUT = datetime.timedelta(minutes=30)
LAUNCH_DIR = "RSBENCH_LAUNCH_DIR"  # set by `rsbench launch`: where its ranks report (see report_to_launcher)
LAUNCHER_PID = "RSBENCH_LAUNCHER_PID"  # set by `rsbench launch`: the process whose death stops the ranks
PARENT_POLL_SECONDS = 0.5


@dataclasses.dataclass(frozen=True)
class World:
    """This process's place among ``size`` processes; rank 0 writes checkpoints, logs and the store."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.size > 1

    def barrier(self) -> None:
        if self.distributed:
            dist.barrier()

    def broadcast(self, value: T) -> T:
        """Rank 0's ``value`` on every rank."""
        if not self.distributed:
            return value
        holder = [value]
        dist.broadcast_object_list(holder, src=0)
        return holder[0]

    def gather(self, value: T) -> list[T]:
        """Every rank's ``value``, in rank order (on every rank)."""
        if not self.distributed:
            return [value]
        values: list[Any] = [None] * self.size
        dist.all_gather_object(values, value)
        return values

    def shard(self, items: Sequence[T]) -> list[T]:
        """This rank's share of ``items``: every ``size``-th, starting at ``rank``."""
        return list(items[self.rank :: self.size])

    def from_main(self, work: Callable[[], T]) -> T:
        """``work()`` run on rank 0 alone, its result given to every rank; an :class:`RsbenchError` it raises
        is raised on every rank, so no rank waits for a rank 0 that has given up."""
        if not self.distributed:
            return work()
        outcome: tuple[str, Any, Any] | None = None
        if self.main:
            try:
                outcome = ("done", work(), None)
            except RsbenchError as error:
                outcome = ("failed", error.message, error.hint)
        outcome = self.broadcast(outcome)
        assert outcome is not None
        if outcome[0] == "failed":
            raise RsbenchError(outcome[1], outcome[2])
        return outcome[1]

    def main_first(self, work: Callable[[], T]) -> T:
        """``work()`` on rank 0, then on the other ranks once it succeeded (rank 0 creates what they then
        find); rank 0's :class:`RsbenchError` is raised on every rank."""
        done: list[T] = []
        self.from_main(lambda: done.append(work()))
        return done[0] if done else work()

    def agree(self, value: Any, what: str) -> None:
        """Fail on every rank, naming the first that differs, unless all ranks hold the same ``value``."""
        values = self.gather(value)
        differing = [rank for rank, other in enumerate(values) if other != values[0]]
        if differing:
            raise RsbenchError(
                f"ranks disagree on {what}: rank {differing[0]} differs from rank 0",
                "launch every rank with the same command and rsbench version",
            )


def current_world(device: str | None = None) -> World:
    """The world torchrun set up (``WORLD_SIZE``, ``RANK``, ``LOCAL_RANK``), initialising the process group
    once: NCCL when this rank uses a GPU, else gloo. One process when not launched by torchrun."""
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size <= 1:
        return World()
    world = World(int(os.environ["RANK"]), size, int(os.environ.get("LOCAL_RANK", "0")))
    if not dist.is_initialized():
        use_gpu = torch.cuda.is_available() and (device is None or device.startswith("cuda"))
        if use_gpu:
            torch.cuda.set_device(world.local_rank)
        dist.init_process_group("nccl" if use_gpu else "gloo", timeout=TIMEOUT)
        atexit.register(leave_process_group)
    return world


def leave_process_group() -> None:
    """Destroy the process group (after collecting garbage, which frees DDP wrappers that hold it) while the
    interpreter is still whole. Left to interpreter teardown, a gloo worker thread that still holds a
    finished collective's tensor can need the GIL after Python has stopped granting it, and the process
    aborts (``terminate called without an active exception``, exit code -6; pytorch/pytorch#179291)."""
    if dist.is_initialized():
        gc.collect()
        dist.destroy_process_group()


def rank_device(world: World, requested: str | None) -> str | None:
    """The device a rank uses: its own GPU (``cuda:LOCAL_RANK``) under torchrun when CUDA is wanted."""
    if world.distributed and torch.cuda.is_available() and (requested is None or requested == "cuda"):
        return f"cuda:{world.local_rank}"
    return requested


def end_rank(code: int | str | None) -> None:
    """End a torchrun rank whose command finished with exit ``code``: destroy its process group, flush its
    output and leave with ``os._exit``, skipping interpreter finalization altogether (in a loop of 2-rank
    jobs, destroying the group at exit still left 1 abort in 120 processes). Everything rsbench writes is
    committed or closed by then. Returns at once in a process that is not a rank."""
    if not dist.is_initialized():
        return
    leave_process_group()
    if isinstance(code, str):  # sys.exit("message"): Python would print it and exit 1
        print(code, file=sys.stderr)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code if isinstance(code, int) else 0 if code is None else 1)


# ------------------------------------------------------------------------------------- process hygiene


def is_rank() -> bool:
    """Whether this process is a worker that torchrun (or ``rsbench launch``) started."""
    return "TORCHELASTIC_RUN_ID" in os.environ and "LOCAL_RANK" in os.environ


def start_rank() -> None:
    """Make this torchrun worker stop with its launcher. SIGTERM and SIGINT (the agent's way of stopping its
    ranks) end it at once, quietly under ``rsbench launch`` (which reports), after removing the temporary
    files of writes under way; the store's transactions roll back by themselves. A watchdog thread polls the
    parent process id and ends the rank the same way when its launcher dies, however it died (a
    scheduler's SIGKILL of the launcher's process group included: torchrun starts each rank in a session of
    its own, out of that group's reach). Polling ``getppid`` (the parent's death re-parents the rank) works
    on every POSIX system, for ``rsbench launch`` and a plain ``torchrun`` alike, and cannot fire early as
    Linux's ``PR_SET_PDEATHSIG`` does when the thread that started the rank ends. Also tells ``rsbench
    launch`` that the rendezvous is done (a ``ready`` report)."""
    if not is_rank():
        return
    launcher = int(os.environ.get(LAUNCHER_PID, os.getppid()))
    if threading.current_thread() is threading.main_thread():
        for stop_signal in (signal.SIGTERM, signal.SIGINT):
            signal.signal(stop_signal, lambda signum, frame: stop_rank(signum))
    threading.Thread(target=_watch_launcher, args=(launcher,), name="rsbench-launcher-watch", daemon=True).start()
    report_to_launcher("ready", "")


def stop_rank(signum: int) -> None:
    """End this rank now with exit code 128 + ``signum``: temporary files removed, a line on stderr unless
    ``rsbench launch`` reports for it. Raising in the main thread instead would unwind more, but an exception
    raised from a signal handler can land in a finalizer, where Python prints and swallows it."""
    from rsbench.atomic import remove_pending_files

    remove_pending_files()
    if not report_to_launcher("interrupted", signal.Signals(signum).name):
        rank = os.environ.get("RANK", "0")
        print(
            f"rsbench: interrupted (rank {rank}, {signal.Signals(signum).name}); completed work is saved",
            file=sys.stderr,
        )
    sys.stderr.flush()
    sys.stdout.flush()
    os._exit(128 + signum)


def _watch_launcher(launcher: int) -> None:
    while os.getppid() == launcher:
        time.sleep(PARENT_POLL_SECONDS)
    if os.environ.get(LAUNCH_DIR):  # the launcher's report folder: no one reads it now
        shutil.rmtree(os.environ[LAUNCH_DIR], ignore_errors=True)
    stop_rank(signal.SIGTERM)


def report_to_launcher(kind: str, line: str) -> bool:
    """Hand ``line`` (an ``error``, ``lost`` contact or ``ready``) to the ``rsbench launch`` that started this
    rank, which reports its ranks' failures as one line; False when no launcher listens (the caller prints)."""
    from rsbench.atomic import atomic_write_text

    folder = os.environ.get(LAUNCH_DIR)
    if not folder or not is_rank() or not Path(folder).is_dir():
        return False
    try:  # whole or not at all: the launcher may read it while this rank ends
        atomic_write_text(Path(folder) / f"{kind}-{os.environ.get('RANK', '0')}", line)
    except RsbenchError:
        return False
    return True


def is_lost_peer(error: BaseException) -> bool:
    """Whether ``error`` is a collective failing because another rank stopped or the network between them
    failed (gloo raises a RuntimeError naming its transport; NCCL and the stores a DistError)."""
    if not dist.is_available() or not isinstance(error, RuntimeError):
        return False
    text = str(error)
    return isinstance(error, dist.DistError) or any(
        mark in text for mark in ("gloo/transport", "Connection reset by peer", "Connection closed by peer")
    )
