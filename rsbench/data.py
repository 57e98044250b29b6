"""Data location, in-memory datasets and fast batch iteration.

Images are always float tensors in [0,1] pixel space; normalization is the model's first layer.
Small datasets (MNIST, CIFAR-10) live in memory as one uint8 tensor and are batched by indexing, with
augmentation done on whole batches, so an epoch has no per-sample Python work.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Protocol, cast

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Subset
from torch.utils.data import Dataset as TorchDataset

BatchAugment = Callable[[torch.Tensor, torch.Generator], torch.Tensor]


class SizedDataset(Protocol):
    """A map-style dataset: a length and ``(image in [0,1] [C,H,W], label)`` by index."""

    def __len__(self) -> int: ...

    def __getitem__(self, index: int) -> Any: ...


def data_root(data_dir: str | os.PathLike | None = None) -> Path:
    """``--data-dir``, else ``$RSBENCH_DATA``, else ``./data``."""
    return Path(data_dir or os.environ.get("RSBENCH_DATA") or "data").expanduser()


class InMemoryDataset(TorchDataset):
    """``images`` uint8 [N,C,H,W], ``labels`` int64 [N]; ``augment`` acts on a float batch in [0,1]."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, augment: BatchAugment | None = None):
        if images.dtype != torch.uint8 or images.dim() != 4 or len(images) != len(labels):
            raise ValueError("images must be uint8 [N,C,H,W] with one label each")
        self.images = images
        self.labels = labels.long()
        self.augment = augment

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        x, y = self.batch(torch.tensor([index]))
        return x[0], int(y[0])

    def batch(self, indices: torch.Tensor, generator: torch.Generator | None = None):
        x = self.images[indices].float().div_(255)
        if self.augment is not None:
            x = self.augment(x, generator or torch.default_generator)
        return x, self.labels[indices]

    def head(self, count: int) -> InMemoryDataset:
        return InMemoryDataset(self.images[:count], self.labels[:count], self.augment)


def head(dataset: SizedDataset, count: int | None) -> SizedDataset:
    """The first ``count`` examples (all when ``count`` is None)."""
    if count is None or count >= len(dataset):
        return dataset
    if isinstance(dataset, InMemoryDataset):
        return dataset.head(count)
    return Subset(cast(TorchDataset, dataset), range(count))


def iterate_batches(
    dataset: SizedDataset,
    batch_size: int,
    shuffle: bool,
    generator: torch.Generator,
    workers: int = 0,
    shard: tuple[int, int] = (0, 1),
    resume_at: tuple[int, torch.Tensor] | None = None,
    with_indices: bool = False,
) -> Iterator[tuple[torch.Tensor, ...]]:
    """Batches ``(x, y)``, or ``(x, y, indices in the dataset)`` with ``with_indices``; shuffling and
    augmentation draw from ``generator`` (resumable runs).

    With ``shard = (rank, world_size)`` every rank draws the same order and takes its contiguous part of
    each batch of ``batch_size`` (the global batch), so the ranks together see exactly the batches one
    process would; a last batch smaller than the world is dropped (every rank must take each step).
    ``resume_at = (batches done, generator state then)`` continues an interrupted pass exactly.
    """
    rank, world_size = shard
    n = len(dataset)
    order = torch.randperm(n, generator=generator) if shuffle else torch.arange(n)
    if world_size > 1:
        batches = [order[start : start + batch_size] for start in range(0, n, batch_size)]
        order = torch.cat([torch.tensor_split(b, world_size)[rank] for b in batches if len(b) >= world_size])
        batch_size = -(-batch_size // world_size)
    first = 0
    if resume_at is not None:
        first = resume_at[0] * batch_size
        generator.set_state(resume_at[1])
    if isinstance(dataset, InMemoryDataset):
        for start in range(first, len(order), batch_size):
            indices = order[start : start + batch_size]
            x, y = dataset.batch(indices, generator)
            yield (x, y, indices) if with_indices else (x, y)
        return
    sampler = order[first:].tolist()
    loader = DataLoader(cast(TorchDataset, dataset), batch_size=batch_size, sampler=sampler, num_workers=workers)
    for number, (x, y) in enumerate(loader):
        start = first + number * batch_size
        yield (x, y, order[start : start + batch_size]) if with_indices else (x, y)


def random_crop_flip(padding: int) -> BatchAugment:
    """Random translation by up to ``padding`` pixels (zero padding) and horizontal flip, per image."""

    def augment(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        b, _, h, w = x.shape
        padded = F.pad(x, (padding, padding, padding, padding))
        dy = torch.randint(0, 2 * padding + 1, (b,), generator=generator)
        dx = torch.randint(0, 2 * padding + 1, (b,), generator=generator)
        rows = (dy[:, None] + torch.arange(h))[:, None, :, None]
        cols = (dx[:, None] + torch.arange(w))[:, None, None, :]
        batch = torch.arange(b)[:, None, None, None]
        channels = torch.arange(x.shape[1])[None, :, None, None]
        cropped = padded[batch, channels, rows, cols]
        flip = torch.rand(b, generator=generator) < 0.5
        return torch.where(flip[:, None, None, None], cropped.flip(-1), cropped)

    return augment
