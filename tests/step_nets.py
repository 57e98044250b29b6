"""Tiny classifiers for one-step reference tests: a convolution, batch norm (so an attack run in train mode
changes the running statistics) and a linear head; 'confident' saturates the softmax, 'all_wrong' always
predicts the last class (which no test label uses)."""

from __future__ import annotations

import copy

import torch
from torch import nn

CLASSES = 4
SIDE = 6


class StepNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 3, 3, padding=1)
        self.norm = nn.BatchNorm2d(3)
        self.head = nn.Linear(3 * SIDE * SIDE, CLASSES)
        self.modes: list[bool] = []  # model.training at every forward pass

    def forward(self, x):
        self.modes.append(self.training)
        return self.head(torch.relu(self.norm(self.conv(x))).flatten(1))


def step_net(kind: str, seed: int = 0) -> StepNet:
    torch.manual_seed(seed)
    model = StepNet()
    with torch.no_grad():
        if kind == "confident":
            model.head.weight.mul_(300.0)
        elif kind == "all_wrong":
            model.head.bias[-1] = 100.0
    return model


KINDS = ("plain", "confident", "all_wrong")


def twin(model: StepNet) -> StepNet:
    """An independent copy (same weights and batch-norm statistics, its own mode log)."""
    copied = copy.deepcopy(model)
    copied.modes = []
    return copied


def batch(size: int, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """Inputs in [0,1] (some pixels at 0 and 1, so clamping matters) and labels that avoid the last class."""
    generator = torch.Generator().manual_seed(seed)
    x = (torch.rand(size, 1, SIDE, SIDE, generator=generator) * 1.4 - 0.2).clamp(0, 1)
    y = torch.randint(0, CLASSES - 1, (size,), generator=generator)
    return x, y


def requires_grad_(model: nn.Module, flag: bool) -> None:
    for parameter in model.parameters():
        parameter.requires_grad_(flag)


def state(model: nn.Module) -> dict[str, torch.Tensor]:
    """Parameters and buffers (batch-norm running statistics included)."""
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def assert_same_gradients(grads: list[torch.Tensor], expected: list[torch.Tensor]) -> None:
    """Equal to float32 round-off relative to the largest gradient entry (the convolution's bias, followed by
    batch norm, has a gradient that is zero but for round-off, whose size depends on the summation order)."""
    scale = max(1.0, max(g.abs().max().item() for g in expected))
    for grad, reference in zip(grads, expected, strict=True):
        torch.testing.assert_close(grad, reference, rtol=1e-4, atol=2e-6 * scale)
