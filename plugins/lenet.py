"""LeNet as in the official MNIST code of Jeong & Shin: conv 5x5 20 -> pool -> conv 5x5 50 -> pool ->
fc 500 -> fc classes, ReLU activations (431k parameters for MNIST)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from rsbench import hookimpl
from rsbench.specs import Architecture


class LeNet(nn.Module):
    def __init__(self, num_classes: int = 10, in_channels: int = 1, image_size: int = 28):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, 20, 5, 1)
        self.conv2 = nn.Conv2d(20, 50, 5, 1)
        side = ((image_size - 4) // 2 - 4) // 2
        self.fc1 = nn.Linear(side * side * 50, 500)
        self.fc2 = nn.Linear(500, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.max_pool2d(F.relu(self.conv1(x)), 2, 2)
        x = F.max_pool2d(F.relu(self.conv2(x)), 2, 2)
        return self.fc2(F.relu(self.fc1(x.flatten(1))))


def build(num_classes, input_shape, variant=None) -> LeNet:
    channels, height, width = input_shape
    if height != width or height < 16:
        raise ValueError(f"LeNet needs square inputs of at least 16 pixels, not {height}x{width}")
    return LeNet(num_classes, channels, height)


@hookimpl
def register_architectures(register):
    register(Architecture("lenet", "LeNet (conv 20-50, fc 500) for MNIST-sized inputs", build))
