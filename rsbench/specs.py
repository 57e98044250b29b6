"""The contracts of plugins: datasets, architectures and certifiers (training methods: ``methods.py``), and
what the certification engine exchanges with a certifier."""

from __future__ import annotations

import abc
import dataclasses
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from torch import Generator, Tensor, nn
from torch.utils.data import Dataset as TorchDataset

from rsbench.params import NoParams
from rsbench.protocol import RadiusKind


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
    """An SGD schedule: initial learning rate, epochs, 0-based epochs from which lr is multiplied by ``gamma``,
    momentum (plain unless ``nesterov``) and weight decay."""

    lr: float
    epochs: int
    milestones: tuple[int, ...]
    batch_size: int = 256
    gamma: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 1e-4
    nesterov: bool = False


@dataclasses.dataclass(frozen=True)
class Dataset:
    """A dataset plugin.

    ``load(root, split, train)`` returns a torch dataset of ``(image in [0,1] as [C,H,W] float, label)``
    for ``split`` ("train" or "test"), with training augmentation when ``train`` is true; it raises
    :class:`rsbench.errors.RsbenchError` when the files are missing. ``download(root)`` fetches them
    (torchvision) where a dataset can be downloaded. ``split_sizes`` (where the splits are fixed) bounds
    the indices a run record may name.
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
    split_sizes: dict[str, int] | None = None  # examples per split ("train", "test"), where fixed


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
class CertificationRequest:
    """What the engine asks of a certifier for each input.

    ``n0`` selection draws; ``n`` estimation draws (an adaptive certifier's most per input); ``alpha`` the
    failure probability of each certificate; ``batch_size`` noisy copies per forward pass; ``radii`` the
    ℓ2 radii ([0,1] pixel units) the caller wants decided, ascending (empty: no grid, exact radii wanted).
    """

    n0: int
    n: int
    alpha: float
    batch_size: int
    radii: tuple[float, ...] = ()


@dataclasses.dataclass(frozen=True)
class Certificate:
    """One input's certificate: ``prediction`` (-1 = abstain) and ℓ2 ``radius`` (0.0 when abstaining), each
    holding with probability at least 1-α over the noise; ``radius_kind`` says what the radius means;
    ``draws`` counts every noise draw spent on the input (selection included); ``n_a`` is the selected
    class's count among the estimation draws and ``p_a_lower`` its lower confidence bound, where defined."""

    prediction: int
    radius: float
    draws: int
    radius_kind: RadiusKind = "exact"
    n_a: int | None = None
    p_a_lower: float | None = None


class SmoothedClassifierBase(abc.ABC):
    """What the certification engine calls on the object a :class:`Certifier` creates: subclass it and
    implement :meth:`certify_batch` and :meth:`predict`.

    ``generators`` holds one noise stream per input, so a certificate never depends on which other inputs
    shared its forward passes (resumed and sharded runs give identical rows).
    """

    @abc.abstractmethod
    def certify_batch(
        self, xs: Tensor, request: CertificationRequest, generators: Sequence[Generator | None]
    ) -> list[Certificate]:
        """One certificate per input of ``xs`` [K,C,H,W] in [0,1] pixel space."""

    @abc.abstractmethod
    def predict(self, x: Tensor, n: int, alpha: float, batch_size: int, generator: Generator | None = None) -> int:
        """The smoothed prediction at one input [C,H,W], or -1 (abstain); wrong with probability ≤ α."""

    def predict_batch(
        self, xs: Tensor, request: CertificationRequest, generators: Sequence[Generator | None]
    ) -> list[int]:
        """:meth:`predict` of each input of ``xs`` with ``request.n`` draws at level ``request.alpha``; a
        certifier may override it to share forward passes between the inputs."""
        return [
            self.predict(x, request.n, request.alpha, request.batch_size, generator)
            for x, generator in zip(xs, generators, strict=True)
        ]

    def check_request(self, request: CertificationRequest) -> None:
        """Refuse (raise :class:`rsbench.errors.RsbenchError`) a request this certifier cannot serve; the
        engine calls it before it writes the run. Accepts every request unless overridden."""
        return None


@dataclasses.dataclass(frozen=True)
class Certifier:
    """A certifier plugin: ``create(base_classifier, num_classes, sigma, params)`` returns a
    :class:`SmoothedClassifierBase`; ``params`` is an instance of ``Params`` (its hyperparameters).

    ``base_classifier`` maps [B,C,H,W] in [0,1] to logits (normalization is its first layer); σ is in
    [0,1] pixel units. Subclassing :class:`rsbench.smoothing.SmoothedClassifier` gives Cohen's sampling
    and Cohen's ``certify``/``predict`` interface for free.
    """

    name: str
    description: str
    create: Callable[[nn.Module, int, float, Any], SmoothedClassifierBase]
    Params: type = NoParams
