"""Stability training (Li et al., NeurIPS 2019), as reproduced by Jeong & Shin 2020: cross-entropy on the
clean input plus λ times the cross-entropy between softmax(f(x)) and f(x + δ), δ ~ N(0, σ²I)."""

from __future__ import annotations

from dataclasses import dataclass

import torch.nn.functional as F

from rsbench import hookimpl
from rsbench.methods import Preset, TrainingMethod, noisy_copies
from rsbench.params import hyperparameter


def stability_loss(clean_logits, noisy_logits, y, lam: float):
    clean = F.cross_entropy(clean_logits, y)
    stability = -(F.softmax(clean_logits, dim=1) * F.log_softmax(noisy_logits, dim=1)).sum(1).mean()
    return clean + lam * stability


@dataclass(frozen=True)
class StabilityParams:
    lam: float = hyperparameter(2.0, "weight λ of the stability term", min=0.0)


class Stability(TrainingMethod):
    name = "stability"
    description = "Stability training (Li et al. 2019): CE(f(x), y) + λ·CE(softmax f(x), f(x+δ))"
    Params = StabilityParams
    presets = tuple(
        Preset(
            f"mnist-stability-{s:.2f}",
            f"Table 2: stability training (λ=2), MNIST σ={s}",
            "mnist",
            s,
            {"lam": 2.0},
            "lenet",
        )
        for s in (0.25, 0.5, 1.0)
    ) + tuple(
        Preset(
            f"cifar10-stability-{s:.2f}-lam{lam:g}",
            f"Table 7: stability training (λ={lam:g}), CIFAR-10 σ={s}",
            "cifar10",
            s,
            {"lam": lam},
            "cifar_resnet110",
        )
        for s in (0.25, 0.5, 1.0)
        for lam in (1.0, 2.0)
    )

    def loss(self, model, x, y):
        # two passes, so batch-norm statistics never mix clean and noisy inputs
        return stability_loss(model(x), model(noisy_copies(x, self.sigma)), y, self.params.lam)


@hookimpl
def register_training_methods(register):
    register(Stability)
