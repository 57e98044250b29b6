"""SmoothAdv (Salman et al., NeurIPS 2019): adversarial training of the soft smoothed classifier, and
"SmoothAdv + consistency" (Jeong & Shin 2020) when ``--lam`` > 0.

For each input, m noise draws δ_i ~ N(0, σ²I) are fixed; the attack finds x̂ with ‖x̂ − x‖₂ ≤ ε that
maximizes −log((1/m) Σ_i softmax(f(x̂ + δ_i))_y) (model in eval mode), and the model is trained on
(x̂ + δ_i, y) with the same draws: mean cross-entropy, plus the consistency terms of
``rsbench_plugins.consistency`` when λ > 0.

Units: ``--eps`` is an ℓ2 radius in [0,1] pixels. The official code states ε in units of 1/256 of the
pixel range (its ``255`` is ε = 255/256 ≈ 0.996, ``512`` is ε = 2.0); divide its value by 256.
ε warm-up as in the official code: ε_epoch = min(ε, (epoch+1)·ε/warmup) for 0-based epochs.
As there, each loader batch is split into m chunks, each one SGD step on m noisy copies.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from rsbench import hookimpl
from rsbench.errors import RsbenchError
from rsbench.methods import Preset, TrainingMethod
from rsbench.params import hyperparameter
from rsbench_plugins.consistency import LOSS_FORMS, consistency_loss, split_into_chunks


def smoothed_nll(model: nn.Module, x: torch.Tensor, y: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """Per-example −log of the soft smoothed probability of y, with fixed copy-major ``noise`` [m·B, ...]."""
    m = noise.shape[0] // x.shape[0]
    logits = model(x.repeat(m, *([1] * (x.dim() - 1))) + noise)
    mean_probs = F.softmax(logits, dim=1).view(m, x.shape[0], -1).mean(0)
    return F.nll_loss(mean_probs.clamp_min(1e-20).log(), y, reduction="none")


def _unit(gradient: torch.Tensor) -> torch.Tensor:
    norms = gradient.flatten(1).norm(dim=1).view(-1, *([1] * (gradient.dim() - 1)))
    return gradient / norms.clamp_min(1e-12)


def pgd_attack(model, x, y, noise, eps: float, steps: int, trace: list | None = None) -> torch.Tensor:
    """ℓ2 PGD on the soft smoothed classifier: T steps of size 2ε/T along the per-example normalized
    gradient, each followed by projection onto the ε-ball around x and clamping to [0,1]."""
    step_size = 2 * eps / steps
    adversarial = x.detach().clone()
    for _ in range(steps):
        adversarial.requires_grad_(True)
        loss = smoothed_nll(model, adversarial, y, noise)
        if trace is not None:
            trace.append(loss.detach())
        (gradient,) = torch.autograd.grad(loss.sum(), adversarial)
        with torch.no_grad():
            moved = adversarial + step_size * _unit(gradient)
            delta = (moved - x).flatten(1).renorm(p=2, dim=0, maxnorm=eps).view_as(x)
            adversarial = (x + delta).clamp(0, 1)
    if trace is not None:
        with torch.no_grad():
            trace.append(smoothed_nll(model, adversarial, y, noise))
    return adversarial.detach()


def ddn_attack(model, x, y, noise, eps: float, steps: int, gamma: float = 0.05, init_norm: float = 1.0) -> torch.Tensor:
    """Decoupled direction and norm (Rony et al. 2019) on the soft smoothed classifier, as adapted by
    Salman et al.: normalized-gradient SGD steps (cosine lr 1 → 0.01), the norm shrunk by (1−γ) while
    adversarial and grown by (1+γ) otherwise; the final perturbation is projected onto the ε-ball."""
    batch = x.shape[0]
    shape = (-1, *([1] * (x.dim() - 1)))
    delta = torch.zeros_like(x, requires_grad=True)
    norm = torch.full((batch,), init_norm, device=x.device)
    worst_norm = torch.maximum(x, 1 - x).flatten(1).norm(dim=1)
    for step in range(steps):
        lr = 0.01 + (1 - 0.01) * (1 + math.cos(math.pi * step / steps)) / 2
        m = noise.shape[0] // batch
        logits = model((x + delta).repeat(m, *([1] * (x.dim() - 1))) + noise)
        mean_probs = F.softmax(logits, dim=1).view(m, batch, -1).mean(0)
        is_adversarial = mean_probs.argmax(1) != y
        loss = F.nll_loss(mean_probs.clamp_min(1e-20).log(), y, reduction="sum")
        (gradient,) = torch.autograd.grad(loss, delta)
        with torch.no_grad():
            grad_norms = gradient.flatten(1).norm(dim=1)
            direction = gradient / grad_norms.clamp_min(1e-12).view(shape)
            zero = grad_norms == 0
            if zero.any():
                direction[zero] = torch.randn_like(direction[zero])
            delta += lr * direction
            norm = torch.minimum(norm * (1 - (2 * is_adversarial.float() - 1) * gamma), worst_norm)
            delta *= (norm / delta.flatten(1).norm(dim=1).clamp_min(1e-12)).view(shape)
            delta.copy_((x + delta).clamp(0, 1) - x)
    with torch.no_grad():
        final = delta.flatten(1).renorm(p=2, dim=0, maxnorm=eps).view_as(x)
        return (x + final).clamp(0, 1)


def warmed_up_eps(eps: float, warmup: int, epoch: int) -> float:
    """ε at 0-based ``epoch``: linear from ε/warmup to ε over ``warmup`` epochs, then ε."""
    return eps if warmup == 0 else min(eps, (epoch + 1) * eps / warmup)


@dataclass(frozen=True)
class SmoothAdvParams:
    attack: str = hyperparameter("pgd", "attack on the soft smoothed classifier", choices=("pgd", "ddn"))
    eps: float = hyperparameter(1.0, "ℓ2 attack radius ε in [0,1] pixels (official 255 -> 0.996)", min=0.0)
    steps: int = hyperparameter(10, "attack steps T", min=1)
    m: int = hyperparameter(4, "noise draws per input, shared by attack and loss", min=1)
    warmup: int = hyperparameter(10, "epochs of linear ε warm-up", min=0)
    lam: float = hyperparameter(0.0, "consistency weight λ (0: plain SmoothAdv)", min=0.0)
    eta: float = hyperparameter(0.5, "entropy weight η of the consistency term (when λ > 0)", min=0.0)
    loss: str = hyperparameter("kl", "form of the consistency term (when λ > 0)", choices=LOSS_FORMS)


def _presets():
    mnist = {"attack": "pgd", "eps": 1.0, "steps": 10, "m": 4, "warmup": 10}
    presets = []
    for s in (0.25, 0.5, 1.0):
        presets.append(Preset(f"mnist-smoothadv-{s:.2f}", f"Table 2: SmoothAdv (PGD, ε=1.0, m=4), MNIST σ={s}",
                              "mnist", s, mnist, "lenet"))
        presets.append(Preset(f"mnist-smoothadv-consistency-{s:.2f}", f"Table 2: SmoothAdv + consistency (λ=1), "
                              f"MNIST σ={s}", "mnist", s, {**mnist, "lam": 1.0, "eta": 0.5}, "lenet"))
    table1 = {0.25: (255 / 256, 4), 0.5: (2.0, 2), 1.0: (2.0, 2)}
    for s, (eps, m) in table1.items():
        presets.append(Preset(f"cifar10-smoothadv-{s:.2f}", f"Table 1: SmoothAdv (PGD 10 steps, ε={eps:.3f}, m={m}), "
                              f"CIFAR-10 σ={s}", "cifar10", s,
                              {"attack": "pgd", "eps": eps, "steps": 10, "m": m, "warmup": 10}, "cifar_resnet110"))
    return tuple(presets)


class SmoothAdv(TrainingMethod):
    name = "smoothadv"
    description = "SmoothAdv (Salman et al. 2019): PGD/DDN on the soft smoothed classifier; +consistency if λ>0"
    Params = SmoothAdvParams
    presets = _presets()

    def __init__(self, params, sigma):
        super().__init__(params, sigma)
        if params.lam > 0 and params.m < 2:
            raise RsbenchError("smoothadv with consistency (lam > 0) needs m >= 2 noise draws")
        self.eps = params.eps

    @property
    def noisy_passes_per_example(self) -> int:
        return self.params.m * (self.params.steps + 1)

    def start_epoch(self, epoch, schedule):
        self.eps = warmed_up_eps(self.params.eps, self.params.warmup, epoch)

    def split_batch(self, x, y):
        return split_into_chunks(x, y, self.params.m)

    def loss(self, model, x, y):
        m = self.params.m
        noise = self.sigma * torch.randn((m * len(x), *x.shape[1:]), device=x.device)
        if self.eps > 0:
            was_training = model.training
            model.eval()
            attack = pgd_attack if self.params.attack == "pgd" else ddn_attack
            x = attack(model, x, y, noise, self.eps, self.params.steps)
            model.train(was_training)
        logits = model(x.repeat(m, *([1] * (x.dim() - 1))) + noise).view(m, len(y), -1)
        return consistency_loss(logits, y, self.params.lam, self.params.eta, self.params.loss)


@hookimpl
def register_training_methods(register):
    register(SmoothAdv)
