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
import sys
from collections.abc import Sequence
from typing import Any, TypeVar

import torch
import torch.distributed as dist

from rsbench.errors import RsbenchError

T = TypeVar("T")
TIMEOUT = datetime.timedelta(minutes=30)


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
