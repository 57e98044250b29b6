"""Gaussian data augmentation (Cohen et al. 2019): cross-entropy on x + δ, δ ~ N(0, σ²I)."""

from __future__ import annotations

import torch.nn.functional as F

from rsbench import hookimpl
from rsbench.methods import Preset, TrainingMethod, noisy_copies


class Gaussian(TrainingMethod):
    name = "gaussian"
    description = "Gaussian augmentation (Cohen et al. 2019): cross-entropy on x + N(0, σ²I)"
    presets = tuple(
        Preset(f"mnist-gaussian-{sigma:.2f}", f"Table 2: Gaussian, MNIST σ={sigma}", "mnist", sigma, {}, "lenet")
        for sigma in (0.25, 0.5, 1.0)
    ) + tuple(
        Preset(
            f"cifar10-gaussian-{sigma:.2f}",
            f"Table 7: Gaussian, CIFAR-10 σ={sigma}",
            "cifar10",
            sigma,
            {},
            "cifar_resnet110",
        )
        for sigma in (0.25, 0.5, 1.0)
    )

    def loss(self, model, x, y):
        return F.cross_entropy(model(noisy_copies(x, self.sigma)), y)


@hookimpl
def register_training_methods(register):
    register(Gaussian)
