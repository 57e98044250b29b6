"""The base class of training methods.

A method owns its loss and, where it needs one, its step: :meth:`TrainingMethod.split_batch` may cut a
loader batch into several SGD steps (consistency regularization does), and :meth:`start_epoch` sees the
schedule (SmoothAdv's ε warm-up, MACER's deferred start). The engine (``training.py``) owns everything
else: data, optimizer, schedule, checkpoints, resume, logging and progress.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, ClassVar

import torch
from torch import nn

from rsbench.params import NoParams
from rsbench.specs import Schedule


@dataclasses.dataclass(frozen=True)
class Preset:
    """A named configuration of a method, e.g. a row of the paper's tables."""

    name: str
    description: str
    dataset: str
    sigma: float
    params: dict[str, Any]
    arch: str | None = None


def repeat_copies(x: torch.Tensor, copies: int) -> torch.Tensor:
    """``copies`` exact copies of a batch, copy-major: row ``i*B + b`` is ``x[b]`` (no noise)."""
    return x.repeat(copies, *([1] * (x.dim() - 1))) if copies > 1 else x


def noisy_copies(x: torch.Tensor, sigma: float, copies: int = 1) -> torch.Tensor:
    """``copies`` noisy versions of a batch, copy-major: row ``i*B + b`` is ``x[b] + δ_i``, δ ~ N(0, σ²I).

    σ is in [0,1] pixel units: noise is added before the model's normalization layer.
    """
    repeated = repeat_copies(x, copies)
    return repeated + sigma * torch.randn_like(repeated)


def equal_chunks(x: torch.Tensor, y: torch.Tensor, chunks: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """The official code's ``_chunk_minibatch``: ``chunks`` consecutive slices of ``len(x) // chunks``
    examples each; the remainder (fewer than ``chunks`` examples) is dropped, and so is a batch smaller
    than ``chunks``."""
    size = len(x) // chunks
    if size == 0:
        return
    for i in range(chunks):
        yield x[i * size : (i + 1) * size], y[i * size : (i + 1) * size]


@contextmanager
def attacking(model: nn.Module) -> Iterator[nn.Module]:
    """Eval mode and frozen parameters during an attack, restored afterwards (as the official codes of
    SmoothAdv, SmoothMix and CAT-RS: ``requires_grad_(model, False); model.eval()``). Yields the model to
    attack: a DistributedDataParallel wrapper's own module (no gradient to synchronize)."""
    was_training = model.training
    frozen = [p for p in model.parameters() if p.requires_grad]
    model.eval()
    for parameter in frozen:
        parameter.requires_grad_(False)
    try:
        yield model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model
    finally:
        for parameter in frozen:
            parameter.requires_grad_(True)
        model.train(was_training)


class TrainingMethod:
    """Subclass, set ``name``, ``description``, ``Params`` (a dataclass of hyperparameters) and
    ``presets``, and implement :meth:`loss`.

    A method that keeps per-example data (CAT-RS's reference soft labels) sets ``needs_example_index``: its
    :meth:`split_batch` and :meth:`loss` then receive ``y`` as a [B, 2] int64 tensor of (label, index in the
    training set), and :meth:`prepare` builds that data once before training.
    """

    name: ClassVar[str]
    description: ClassVar[str]
    Params: ClassVar[type] = NoParams
    presets: ClassVar[tuple[Preset, ...]] = ()
    needs_example_index: ClassVar[bool] = False

    def __init__(self, params: Any, sigma: float):
        self.params = params
        self.sigma = sigma

    @property
    def noisy_passes_per_example(self) -> int:
        """Forward passes of noisy inputs per training example (for throughput figures)."""
        return 1

    def prepare(self, dataset: str, plain_train_set: Callable[[], Any], device: torch.device) -> dict[str, Any]:
        """Called once before training (on rank 0 first, then on the others) with the dataset's name and a
        loader of the training set without augmentation (the run's ``--train-limit`` applied); returns what
        the run's provenance should record of the method's inputs (e.g. a reference checkpoint's sha256)."""
        return {}

    def start_epoch(self, epoch: int, schedule: Schedule) -> None:
        """Called before each epoch (0-based) with the run's schedule."""

    def split_batch(self, x: torch.Tensor, y: torch.Tensor) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """The SGD steps made from one loader batch; by default, one step on the whole batch."""
        yield x, y

    def loss(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """The scalar loss of one step on clean inputs ``x`` in [0,1] and labels ``y``."""
        raise NotImplementedError
