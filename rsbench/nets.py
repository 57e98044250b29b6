"""Classifiers as ``nn.Sequential(normalize_layer, model)``: the layout of the official checkpoints."""

from __future__ import annotations

import torch
from torch import nn

from rsbench.errors import RsbenchError
from rsbench.plugins import get_architecture
from rsbench.specs import Dataset, Normalization

NORMALIZATION_KINDS = ("mean_std", "mean", "none")


class NormalizeLayer(nn.Module):
    """First layer of every classifier: (x - mean) / std, x - mean, or identity, per ``normalization``.

    The constants are non-persistent buffers, so state dicts match the official repositories' (whose
    normalization layers hold no parameters); the kind is recorded in the checkpoint's metadata.
    """

    def __init__(self, normalization: Normalization):
        super().__init__()
        if normalization.kind not in NORMALIZATION_KINDS:
            raise RsbenchError(
                f"unknown normalization kind {normalization.kind!r}", f"choose one of {', '.join(NORMALIZATION_KINDS)}"
            )
        self.kind = normalization.kind
        mean = torch.tensor(normalization.mean or (0.0,)).view(1, -1, 1, 1)
        std = torch.tensor(normalization.std or (1.0,)).view(1, -1, 1, 1)
        self.register_buffer("mean", mean, persistent=False)
        self.register_buffer("std", std, persistent=False)

    mean: torch.Tensor
    std: torch.Tensor

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.kind == "mean_std":
            return (x - self.mean) / self.std
        if self.kind == "mean":
            return x - self.mean
        return x

    def extra_repr(self) -> str:
        return self.kind


def normalization_for(dataset: Dataset, kind: str | None = None) -> Normalization:
    """The dataset's normalization, or another ``kind`` with the dataset's constants."""
    base = dataset.normalization
    if kind is None or kind == base.kind:
        return base
    if kind != "none" and not base.mean:
        raise RsbenchError(f"dataset {dataset.name!r} has no mean/std constants for normalization {kind!r}")
    return Normalization(kind, base.mean if kind != "none" else (), base.std if kind == "mean_std" else ())


def build_classifier(arch: str, dataset: Dataset, normalization: Normalization | None = None) -> nn.Sequential:
    """``nn.Sequential(NormalizeLayer, model)`` for ``dataset``; checks that the architecture fits it."""
    spec = get_architecture(arch)
    variant = arch[len(spec.name) :] if spec.prefix else None
    try:
        model = spec.build(dataset.num_classes, dataset.input_shape, variant)
    except RsbenchError:
        raise
    except Exception as error:
        raise RsbenchError(
            f"architecture {arch!r} does not fit dataset {dataset.name!r}: {error}",
            "pick another --arch (see `rsbench plugins`)",
        ) from None
    classifier = nn.Sequential(NormalizeLayer(normalization or dataset.normalization), model)
    probe = torch.zeros(2, *dataset.input_shape)
    was_training = classifier.training
    try:
        with torch.no_grad():
            classifier.eval()
            logits = classifier(probe)
    except Exception as error:
        shape = "x".join(map(str, dataset.input_shape))
        raise RsbenchError(
            f"architecture {arch!r} does not fit dataset {dataset.name!r} (inputs {shape})",
            f"pick an architecture made for {shape} inputs: {str(error).splitlines()[0][:120]}",
        ) from None
    classifier.train(was_training)
    # channels-last convolutions run about 1.5x faster on CPU (LeNet, measured) and suit GPUs too.
    classifier.to(memory_format=torch.channels_last)
    if tuple(logits.shape) != (2, dataset.num_classes):
        raise RsbenchError(
            f"architecture {arch!r} gives outputs of shape {tuple(logits.shape[1:])} on {dataset.name!r}, "
            f"expected {dataset.num_classes} logits"
        )
    return classifier
