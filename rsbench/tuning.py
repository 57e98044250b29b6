"""Forward passes on a shared CPU: how many torch threads, and how many noisy copies per pass, chosen by
timing the passes a certifier runs anyway.

Why measure rather than fix them: on this project's 2-core CPU a LeNet pass of 128 copies with torch's
default two threads is the fastest way to sample while the machine is quiet, but when another process
keeps one core busy, every parallel region of the pass waits for the thread that shares its core, and two
threads sample at a quarter of one thread's rate (``benchmarks/certify_speed.py --contention``). Neither
the CPU count nor the load average says which case holds (a nice-19 job raises the load average yet takes
almost nothing from a nice-0 one), so :class:`PassTuner` times its passes and keeps the fastest
(threads, copies) choice, re-trying the others with a small share of its time so that it follows the
machine when the load comes or goes. No draw is wasted: every timed pass is a pass the certifier needed.

The choice never changes the noise drawn (it is drawn per chunk before any pass), only how the chunk is
fed to the model; the model's float rounding can differ between pass sizes and thread counts (by about
1e-5 of a logit on LeNet), which moves a prediction only on a near-exact tie. Bit-for-bit repeatable
passes: give an explicit ``forward_batch`` (and torch's thread count, e.g. ``OMP_NUM_THREADS``), which
turns the tuner off.
"""

from __future__ import annotations

import math
import os
import statistics
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

CPU_FORWARD_BATCHES = (128, 64, 256)
"""Noisy copies per CPU forward pass the tuner tries, first first (a small model's pass stays in cache)."""


def cgroup_cpu_quota(root: Path = Path("/sys/fs/cgroup")) -> float | None:
    """CPUs a cgroup v2 quota allows this process (``cpu.max``: quota and period), None when unlimited or
    unknown (a container limited to 2 CPUs on a 64-core host still sees 64 in its affinity mask)."""
    try:
        quota, period = (root / "cpu.max").read_text().split()[:2]
        return None if quota == "max" else int(quota) / int(period)
    except (OSError, ValueError):
        return None


def available_cpus() -> int:
    """CPUs this process may run on: its affinity mask (``os.sched_getaffinity``), capped by a cgroup quota."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not on Linux
        cpus = os.cpu_count() or 1
    quota = cgroup_cpu_quota()
    if quota is not None:
        cpus = min(cpus, max(1, math.ceil(quota)))
    return max(1, cpus)


def thread_choices(limit: int) -> tuple[int, ...]:
    """1, 2, 4, … below ``limit``, and ``limit`` itself: the thread counts worth timing."""
    choices = {limit}
    count = 1
    while count < limit:
        choices.add(count)
        count *= 2
    return tuple(sorted(choices))


@dataclass(eq=False)
class Choice:
    """One way to run passes: ``threads`` torch threads, ``rows`` noisy copies per pass."""

    threads: int
    rows: int
    seconds_per_row: deque[float] = field(default_factory=lambda: deque(maxlen=PassTuner.MEMORY))
    last_used: int = -1  # the pass counter when it last ran

    @property
    def estimate(self) -> float:
        """Median seconds per row of its last few passes (one pass cut short by the scheduler does not count)."""
        return statistics.median(self.seconds_per_row) if self.seconds_per_row else 0.0


class PassTuner:
    """Picks (threads, rows per pass) for the next forward pass from the timings of earlier ones.

    First every choice runs one pass, in turn (pass sizes in the order given, each at every thread count),
    except that a thread count whose first pass ran at under half the best rate tries no other pass size
    then (a fresh process, as each ``rsbench certify`` is, pays for that start). Then the choice with the
    smallest median seconds per row runs, except that whenever the passes spent on other choices have taken
    less than ``EXPLORE_SHARE`` of all pass time, another choice runs once (one timed fewer than ``MEMORY``
    times first, else the one timed longest ago): the tuner notices within seconds when another process
    starts or stops competing for the cores, and trying the others costs at most about ``EXPLORE_SHARE``
    of the time.
    """

    MEMORY = 3
    EXPLORE_SHARE = 0.05

    def __init__(self, threads: Sequence[int], rows: Sequence[int]):
        if not threads or not rows:
            raise ValueError("the tuner needs at least one thread count and one pass size")
        self.choices = [Choice(t, r) for r in rows for t in threads]
        self.passes = 0
        self.total_seconds = 0.0
        self.explore_seconds = 0.0

    @property
    def best(self) -> Choice:
        """The choice with the smallest median seconds per row so far."""
        return min(self.choices, key=lambda c: c.estimate if c.seconds_per_row else math.inf)

    def choose(self) -> Choice:
        """The choice the next pass should use."""
        best = self.best
        slow = {c.threads for c in self.choices if c.seconds_per_row and c.estimate > 2 * best.estimate}
        untried = [c for c in self.choices if c.last_used < 0 and c.threads not in slow]
        if untried:
            return untried[0]
        if self.explore_seconds < self.EXPLORE_SHARE * self.total_seconds:
            others = [c for c in self.choices if c is not best]
            if others:
                return min(others, key=lambda c: (len(c.seconds_per_row) >= self.MEMORY, c.last_used))
        return best

    def observe(self, choice: Choice, rows: int, seconds: float) -> None:
        """Record that a pass of ``rows`` noisy copies under ``choice`` took ``seconds``."""
        exploring = choice is not self.best
        self.passes += 1
        choice.last_used = self.passes
        self.total_seconds += seconds
        if exploring:
            self.explore_seconds += seconds
        if rows * 2 >= choice.rows:  # a chunk's short last pass says little about the choice
            choice.seconds_per_row.append(seconds / rows)

    def describe(self) -> str:
        """The current choice and every choice's median throughput, for logs and benchmarks."""
        best = self.best
        rates = ", ".join(
            f"{c.threads}t×{c.rows}: {1 / c.estimate:,.0f}/s" if c.seconds_per_row and c.estimate > 0 else
            f"{c.threads}t×{c.rows}: –"
            for c in self.choices
        )  # fmt: skip
        return f"{best.threads} threads × {best.rows} rows ({rates})"


class threads_set:
    """Context manager: torch's intra-op thread count as the tuner sets it, restored on exit."""

    def __init__(self) -> None:
        self.previous = torch.get_num_threads()
        self.current = self.previous

    def __enter__(self) -> threads_set:
        return self

    def use(self, threads: int) -> None:
        if threads != self.current:
            torch.set_num_threads(threads)
            self.current = threads

    def __exit__(self, *exc: object) -> None:
        if self.current != self.previous:
            torch.set_num_threads(self.previous)
