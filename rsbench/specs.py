"""What a plugin registers: datasets, architectures and certifiers (training methods: ``methods.py``)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any

from torch import nn
from torch.utils.data import Dataset as TorchDataset

from rsbench.params import NoParams


@dataclasses.dataclass(frozen=True)
class Normalization:
    """How pixels in [0,1] are normalized by the model's first layer.

    ``kind`` is ``"mean_std"`` ((x - mean) / std), ``"mean"`` (x - mean, Salman et al.'s input-centering
    layer) or ``"none"``. Noise is always added before this layer, in [0,1] pixel space.
    """

    kind: str = "none"
    mean: tuple[float, ...] = ()
    std: tuple[float, ...] = ()


@dataclasses.dataclass(frozen=True)
class Schedule:
    """An SGD schedule: initial learning rate, epochs, epochs at which lr is multiplied by ``gamma``."""

    lr: float
    epochs: int
    milestones: tuple[int, ...]
    batch_size: int = 256
    gamma: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 1e-4


@dataclasses.dataclass(frozen=True)
class Dataset:
    """A dataset plugin.

    ``load(root, split, train)`` returns a torch dataset of ``(image in [0,1] as [C,H,W] float, label)``
    for ``split`` ("train" or "test"), with training augmentation when ``train`` is true; it raises
    :class:`rsbench.errors.RsbenchError` when the files are missing. ``download(root)`` fetches them
    (torchvision) where a dataset can be downloaded.
    """

    name: str
    description: str
    num_classes: int
    input_shape: tuple[int, int, int]
    normalization: Normalization
    schedule: Schedule
    load: Callable[[Path, str, bool], TorchDataset]
    download: Callable[[Path], None] | None = None
    layout: str = ""
    default_arch: str | None = None


@dataclasses.dataclass(frozen=True)
class Architecture:
    """An architecture plugin: ``build(num_classes, input_shape, variant)`` returns an ``nn.Module``
    mapping normalized ``[B,C,H,W]`` inputs to logits.

    A family sets ``prefix`` (``"timm/"``): every name starting with it is built with ``variant`` = the
    rest of the name.
    """

    name: str
    description: str
    build: Callable[[int, tuple[int, int, int], str | None], nn.Module]
    prefix: bool = False


@dataclasses.dataclass(frozen=True)
class Certifier:
    """A certifier plugin: ``create(base_classifier, num_classes, sigma, **params)`` returns an object with
    Cohen et al.'s ``certify(x, n0, n, alpha, batch_size)`` and ``predict(x, n, alpha, batch_size)``."""

    name: str
    description: str
    create: Callable[..., Any]
    Params: type = NoParams
